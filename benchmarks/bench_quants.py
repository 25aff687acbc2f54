"""Codec speed against the gguf package (NumPy) and libggml (C, one thread), side by side.

    python benchmarks/bench_quants.py [--values 4194304 --repeat 5]
        [--out benchmarks/results/quants.md]

For each codec in ``ROWS`` (one line per codec) this times, on the same float32 tensor of
shape (values / 4096, 4096):

- quantize: gguflite's Numba path (all threads, and one thread), ``gguf.quants.quantize`` where
  the gguf package has a quantizer, and ``ggml_quantize_chunk`` on one thread (ctypes);
- dequantize: gguflite (all threads, one thread), ``gguf.quants.dequantize`` and ggml's
  ``to_float`` (one thread).

Speeds are MB/s of float32 (4 bytes per value) and each is the best of ``--repeat`` rounds, the
tools alternating so that load from other processes hits them alike. Read the ratios; absolute
numbers depend on the machine and its load. Outputs are checked to be bit-identical first.

A last table times the block kernels alone (``quantize_blocks_fast`` / ``dequantize_blocks_fast``,
one thread, a (64, 4096) tensor that stays in cache, best of 200) against ggml's C functions:
the least noisy comparison on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import gguf
import gguf.quants
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ggml_ref import ggml_dequantize, ggml_quantize  # noqa: E402

from gguflite.quants import dequantize, get_codec, quantize  # noqa: E402


class Row(NamedTuple):
    name: str  # gguflite codec name
    gguf_quantize: bool  # the gguf package has a NumPy quantizer for it


# One line per codec. Decode-only codecs are timed for dequantize only.
ROWS = [
    Row("q8_0", True),
    Row("q4_0", True),
    Row("q4_1", True),
    Row("q5_0", True),
    Row("q5_1", True),
    Row("tq1_0", True),
    Row("tq2_0", True),
    Row("q4_k", False),
    Row("q6_k", False),
    Row("q2_k", False),
    Row("q3_k", False),
    Row("q5_k", False),
]


def best_times(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best wall time of each function over ``repeat`` rounds, the functions interleaved."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for label, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[label] = min(best[label], time.perf_counter() - t0)
    return best


def with_threads(n: int, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        saved = numba.get_num_threads()
        numba.set_num_threads(n)
        try:
            return fn()
        finally:
            numba.set_num_threads(saved)
    return run


def bench_row(row: Row, x: np.ndarray, repeat: int) -> dict[str, dict[str, float]]:
    """MB/s per tool for quantize and dequantize of one codec (checked bit-identical first)."""
    codec = get_codec(row.name)
    gtype = codec.ggml_type
    qtype = gguf.GGMLQuantizationType(int(gtype))
    mb = x.nbytes / 1e6
    packed = ggml_quantize(gtype, x)  # (rows, row_bytes)
    out: dict[str, dict[str, float]] = {"quantize": {}, "dequantize": {}}

    if codec.can_quantize:
        ours = quantize(x, row.name)
        if not np.array_equal(ours, packed):
            raise SystemExit(f"{row.name}: gguflite and ggml bytes differ; fix before timing")
        fns = {
            "gguflite": lambda: quantize(x, row.name),
            "gguflite 1 thread": with_threads(1, lambda: quantize(x, row.name)),
            "ggml 1 thread": lambda: ggml_quantize(gtype, x),
        }
        if row.gguf_quantize:
            if not np.array_equal(gguf.quants.quantize(x, qtype), packed):
                raise SystemExit(f"{row.name}: gguf package and ggml bytes differ")
            fns["gguf package"] = lambda: gguf.quants.quantize(x, qtype)
        out["quantize"] = {k: mb / t for k, t in best_times(fns, repeat).items()}

    want = ggml_dequantize(gtype, packed, x.size).reshape(x.shape)
    if not np.array_equal(dequantize(packed, row.name, x.shape).view(np.uint32),
                          want.view(np.uint32)):
        raise SystemExit(f"{row.name}: gguflite and ggml decode differently")
    fns = {
        "gguflite": lambda: dequantize(packed, row.name, x.shape),
        "gguflite 1 thread": with_threads(1, lambda: dequantize(packed, row.name, x.shape)),
        "gguf package": lambda: gguf.quants.dequantize(packed, qtype),
        "ggml 1 thread": lambda: ggml_dequantize(gtype, packed, x.size),
    }
    out["dequantize"] = {k: mb / t for k, t in best_times(fns, repeat).items()}
    return out


TOOLS = ["gguflite", "gguflite 1 thread", "gguf package", "ggml 1 thread"]


def table(results: dict[str, dict[str, dict[str, float]]], op: str) -> list[str]:
    ratios = [("gguflite", "gguf package"), ("gguflite 1 thread", "gguf package"),
              ("gguflite 1 thread", "ggml 1 thread")]
    head = [f"{a} / {b}".replace("gguflite 1 thread", "1 thread").replace(" package", "")
            .replace("ggml 1 thread", "ggml") for a, b in ratios]
    lines = [
        f"| codec | {' | '.join(TOOLS)} | {' | '.join(head)} |",
        "|---|" + "---:|" * (len(TOOLS) + len(ratios)),
    ]
    for name, res in results.items():
        r = res[op]
        if not r:
            continue
        cells = [f"{r[t]:.0f}" if t in r else "n/a" for t in TOOLS]
        cells += [f"{r[a] / r[b]:.1f}x" if a in r and b in r else "n/a" for a, b in ratios]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def kernel_table(names: list[str], repeat: int = 200) -> list[str]:
    """Block kernels alone, one thread, cache-resident, against ggml's C functions."""
    x = np.random.default_rng(1).standard_normal((64, 4096)).astype(np.float32)
    mb = x.nbytes / 1e6
    lines = ["| codec | quantize | ggml | ratio | dequantize | ggml | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    saved = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for name in names:
            codec = get_codec(name)
            gtype = codec.ggml_type
            blocks = x.reshape(-1, codec.block_size)
            packed = ggml_quantize(gtype, x).reshape(-1, codec.type_size)
            t = best_times({
                "dq": lambda: codec.dequantize_blocks_fast(packed),  # noqa: B023
                "dq ggml": lambda: ggml_dequantize(gtype, packed, x.size),  # noqa: B023
            }, repeat)
            row = ["n/a"] * 3
            if codec.can_quantize:
                t |= best_times({
                    "q": lambda: codec.quantize_blocks_fast(blocks, None),  # noqa: B023
                    "q ggml": lambda: ggml_quantize(gtype, x),  # noqa: B023
                }, repeat)
                row = [f"{mb / t['q']:.0f}", f"{mb / t['q ggml']:.0f}",
                       f"{t['q ggml'] / t['q']:.2f}x"]
            row += [f"{mb / t['dq']:.0f}", f"{mb / t['dq ggml']:.0f}",
                    f"{t['dq ggml'] / t['dq']:.2f}x"]
            lines.append(f"| {name} | {' | '.join(row)} |")
    finally:
        numba.set_num_threads(saved)
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--values", type=int, default=1 << 22, help="float32 values per tensor")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the best time is kept")
    ap.add_argument("--codecs", default="", help="comma-separated subset of codec names")
    ap.add_argument("--out", type=Path, default=None, help="write a Markdown report here")
    args = ap.parse_args(argv)

    cols = 4096
    rows = max(1, args.values // cols)
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    wanted = {c for c in args.codecs.split(",") if c}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for row in ROWS:
        if wanted and row.name not in wanted:
            continue
        bench_row(row, x[:16], 1)  # compile / warm up
        results[row.name] = bench_row(row, x, args.repeat)
        q, d = results[row.name]["quantize"], results[row.name]["dequantize"]
        print(f"{row.name}: quantize " + ", ".join(f"{k} {v:.0f}" for k, v in q.items())
              + " | dequantize " + ", ".join(f"{k} {v:.0f}" for k, v in d.items()), flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = "".join(f"{k}={os.environ[k]} " for k in ("NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS")
                  if k in os.environ)
    report = [
        f"# Codec speed ({datetime.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, numba {numba.__version__} {numba.threading_layer()} "
        f"layer with {numba.get_num_threads()} threads, gguf {version('gguf')}, "
        f"llama-cpp-python {version('llama-cpp-python')})",
        "",
        f"Command: `{env}python benchmarks/bench_quants.py --values {args.values} --repeat "
        f"{args.repeat}`; tensor ({rows}, {cols}) float32 of standard normal values; MB/s of "
        f"float32, best of {args.repeat}, tools interleaved. 1-minute load average at the end: "
        f"{load:.1f} (other processes share the machine: read ratios, not absolute numbers).",
        "",
        "## quantize",
        "",
        *table(results, "quantize"),
        "",
        "## dequantize",
        "",
        *table(results, "dequantize"),
        "",
        "## block kernels alone (1 thread, cache-resident (64, 4096) tensor, best of 200)",
        "",
        *kernel_table(list(results)),
        "",
    ]
    text = "\n".join(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
