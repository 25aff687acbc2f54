"""Every llama.cpp mix on the real SmolLM2-135M-Instruct: gguflite vs ``llama_model_quantize``.

    python benchmarks/check_mixes.py [--mixes q2_k q4_k_m ...] [--out benchmarks/results/mixes.md]

Requantizes the shipped file (Q4_1 + Q8_0, 30 layers) with ``gguflite quantize --type MIX``
and with llama.cpp's ``llama_model_quantize`` (same ftype, ``allow_requantize``), without and
with an importance matrix (a random positive row per matrix, the same for both tools), and
compares every tensor's type and bytes. Too slow for the test suite (tests/test_mixes.py runs
the same comparison on small models); run it by hand after touching the mixes or a codec.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import llama_cpp_quantize  # noqa: E402

import gguflite  # noqa: E402
from gguflite.converters.mixes import MIXES  # noqa: E402
from gguflite.converters.requantize import requantize  # noqa: E402
from gguflite.default_model import default_model_path  # noqa: E402


def compare(ours: Path, ref: Path) -> tuple[int, list[str]]:
    """(tensor count, problems) for two files."""
    problems = []
    with gguflite.open(ours) as a, gguflite.open(ref) as b:
        if set(a.tensors) != set(b.tensors):
            return len(a.tensors), ["different tensor names"]
        for n, ti in a.tensors.items():
            if ti.type != b.tensors[n].type:
                problems.append(f"{n}: {ti.type.name} vs {b.tensors[n].type.name}")
            elif bytes(a.raw(n)) != bytes(b.raw(n)):
                problems.append(f"{n}: bytes differ ({ti.type.name})")
        return len(a.tensors), problems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mixes", nargs="*", default=list(MIXES), help="mixes to check")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args()
    src = default_model_path()
    with gguflite.open(src) as f:
        imat = {n: np.random.default_rng(i).gamma(0.5, 1.0, ti.shape[-1]).astype(np.float32)
                for i, (n, ti) in enumerate(f.tensors.items())
                if n.startswith("blk.") and len(ti.shape) == 2}
    lines = ["# llama.cpp mixes on SmolLM2-135M-Instruct: gguflite vs llama_model_quantize", "",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
             f"- command: `python benchmarks/check_mixes.py`; source {src.name} (30 layers)",
             "", "| mix | imatrix | tensors | types | bytes | types used |",
             "|---|---|---|---|---|---|"]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        np.savez(d / "imat.npz", **imat)
        for mix in args.mixes:
            for use in (False, True):
                t0 = time.perf_counter()
                llama_cpp_quantize(src, d / "ref.gguf", int(MIXES[mix].ftype),
                                   imatrix=imat if use else None)
                requantize(src, d / "ours.gguf", type=mix,
                           imatrix=d / "imat.npz" if use else None)
                n, problems = compare(d / "ours.gguf", d / "ref.gguf")
                with gguflite.open(d / "ours.gguf") as f:
                    used = sorted({ti.type.name for ti in f.tensors.values()})
                ok_types = not any(" vs " in p for p in problems)
                ok = not problems
                failed |= not ok
                lines.append(f"| {mix} | {'yes' if use else 'no'} | {n} | "
                             f"{'same' if ok_types else 'DIFFER'} | {'same' if ok else 'DIFFER'}"
                             f" | {' '.join(used)} |")
                print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", *problems[:5],
                      sep="\n  " if problems else " ", flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
