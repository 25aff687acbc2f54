"""Convert speed and memory: gguflite convert vs llama.cpp's convert_hf_to_gguf.py.

Both convert the same SmolLM2-135M-shaped bf16 checkpoint (rebuilt from the embedded GGUF by
tests/checkpoints.py: no real HF checkpoint is available offline) to f16 and q8_0. Each run is
a fresh process under ``/usr/bin/time -v`` (wall time, peak RSS); the two tools alternate, so
machine load hits both alike, and we report medians and ratios.

    python benchmarks/bench_convert.py [--repeats 3] [--out benchmarks/results/convert.md]

The llama.cpp source tree is ``$LLAMA_CPP_DIR``, else the one tests/llama_cpp_source.py fetches
(the installed llama-cpp-python version's sdist). Its converter runs with that tree's gguf-py.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one run of ``cmd``."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    return wall, rss_kb * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--types", default="f16,q8_0")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/convert.md")
    ap.add_argument("--keep", action="store_true", help="Keep the checkpoint and outputs.")
    args = ap.parse_args()
    from checkpoints import smollm2_checkpoint
    from llama_cpp_source import llama_cpp_tree

    llama_cpp_dir = llama_cpp_tree()

    work = Path(tempfile.mkdtemp(prefix="bench-convert-"))
    ckpt = smollm2_checkpoint(work / "SmolLM2-135M-bf16", dtype="BF16")
    size = sum(p.stat().st_size for p in ckpt.iterdir())
    env_ll = {**os.environ, "PYTHONPATH": str(llama_cpp_dir / "gguf-py")}
    rows = []
    for ttype in args.types.split(","):
        ours_cmd = [sys.executable, "-m", "gguflite.cli.main", "convert", str(ckpt), "-o",
                    str(work / f"ours.{ttype}.gguf"), "--type", ttype, "--no-progress"]
        ref_cmd = [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(ckpt),
                   "--outfile", str(work / f"ref.{ttype}.gguf"), "--outtype", ttype]
        timed(ours_cmd)  # warm-up: Numba's on-disk cache, page cache of the checkpoint
        ours, ref = [], []
        for _ in range(args.repeats):
            ref.append(timed(ref_cmd, env_ll))
            ours.append(timed(ours_cmd))
        same = _same_tensor_bytes(work / f"ours.{ttype}.gguf", work / f"ref.{ttype}.gguf")
        row = {
            "type": ttype,
            "ours_s": statistics.median(w for w, _ in ours),
            "ref_s": statistics.median(w for w, _ in ref),
            "ours_rss": statistics.median(r for _, r in ours),
            "ref_rss": statistics.median(r for _, r in ref),
            "ours_all": [round(w, 2) for w, _ in ours],
            "ref_all": [round(w, 2) for w, _ in ref],
            "same_bytes": same,
        }
        rows.append(row)
        print(row, flush=True)
    _report(args.out, rows, size, args.repeats, os.getloadavg())
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def _same_tensor_bytes(a_path: Path, b_path: Path) -> str:
    import gguflite

    with gguflite.open(a_path) as a, gguflite.open(b_path) as b:
        if set(a.tensors) != set(b.tensors):
            return "different tensor sets"
        diff = [n for n in a.tensors if a.tensors[n].type != b.tensors[n].type
                or bytes(a.raw(n)) != bytes(b.raw(n))]
        return "all identical" if not diff else f"{len(diff)} of {len(a.tensors)} differ"


def _report(out: Path, rows: list[dict], size: int, repeats: int,
            load: tuple[float, float, float]) -> None:
    mb = 1 << 20
    lines = [
        "# Convert: gguflite vs llama.cpp convert_hf_to_gguf.py",
        "",
        f"Checkpoint: SmolLM2-135M-shaped, bf16 safetensors ({size / mb:.0f} MiB), rebuilt from "
        "the embedded GGUF (tests/checkpoints.py `smollm2_checkpoint`). Each figure is the "
        f"median of {repeats} fresh processes under `/usr/bin/time -v`, the two tools "
        "alternating. Machine: "
        f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, Python "
        f"{platform.python_version()}; 1/5/15-minute load average at the end "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (other jobs), so absolute times are "
        "inflated: compare the ratios.",
        "",
        "| type | gguflite wall | llama.cpp wall | ratio (ours/ref) | gguflite peak RSS | "
        "llama.cpp peak RSS | ratio | tensor bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} | {r['ours_s']:.2f} s | {r['ref_s']:.2f} s | "
            f"{r['ours_s'] / r['ref_s']:.2f} | {r['ours_rss'] / mb:.0f} MiB | "
            f"{r['ref_rss'] / mb:.0f} MiB | {r['ours_rss'] / r['ref_rss']:.2f} | "
            f"{r['same_bytes']} |")
    lines += ["", "All runs (wall seconds):", ""]
    for r in rows:
        lines.append(f"- {r['type']}: gguflite {r['ours_all']}, llama.cpp {r['ref_all']}")
    lines += ["", "Reproduce: `python benchmarks/bench_convert.py --repeats 3`", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
