"""What every benchmark's results say about the machine they ran on, and how they are written.

    from report import cpu_line, write_results
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def cpu_line(threads: int | None = None) -> str:
    """``AMD EPYC 9R14 96-Core Processor (AVX-512 VNNI), 2 cores, threads=2`` from
    /proc/cpuinfo (the machine's name where it cannot be read); ``threads`` is left out when
    None."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    lines = text.splitlines()
    flags = next((ln for ln in lines if ln.startswith("flags")), "")
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    line = f"{model} ({isa}), {os.cpu_count()} cores"
    return line if threads is None else f"{line}, threads={threads}"


def write_results(out: Path, text: str, data: Any = None) -> None:
    """Write the markdown ``text`` to ``out`` and, unless ``data`` is None, ``data`` as JSON
    next to it (``out`` with the suffix .json); each through a temporary file and a rename, so
    an interrupted run leaves the previous results whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [(out, text)]
    if data is not None:
        files.append((out.with_suffix(".json"), json.dumps(data, indent=1)))
    for dst, body in files:
        tmp = dst.with_name(dst.name + ".tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(dst)
