"""Speed of the k-quant and IQ4 codecs against llama.cpp (libggml) and the gguf package.

    python benchmarks/bench_kquants.py [--rows 4096 --cols 4096 --repeat 3 --clock cpu]
        [--types Q2_K IQ4_XS ...] [--out benchmarks/results/kquants.md]

Quantize: gguflite's Numba encoders (Q2_K..Q6_K, IQ4_NL, IQ4_XS; all threads, one thread) against
``ggml_quantize_chunk`` on one thread (what llama-quantize runs per chunk), without and with an
importance vector. Dequantize: gguflite's Numba decoders against the gguf package (NumPy) and
ggml's ``to_float`` (one thread). Each timing is the best of ``--repeat`` runs, the tools
alternating so load from other processes hits them alike; ratios are what to read, absolute
numbers depend on the machine and its load. Outputs are checked to be identical first.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import gguf.quants
import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ggml_ref import ggml_dequantize, ggml_quantize  # noqa: E402

from gguflite.constants import GGMLType  # noqa: E402
from gguflite.quants import dequantize, get_codec, quantize  # noqa: E402

ENCODE = [GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
          GGMLType.IQ4_NL, GGMLType.IQ4_XS]
DECODE = [GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
          GGMLType.IQ4_NL, GGMLType.IQ4_XS]
# where each type keeps its fp16 scales (byte offsets in a block)
SCALE_AT = {GGMLType.Q2_K: (80, 82), GGMLType.Q3_K: (108,), GGMLType.Q4_K: (0, 2),
            GGMLType.Q5_K: (0, 2), GGMLType.Q6_K: (208,), GGMLType.IQ4_NL: (0,),
            GGMLType.IQ4_XS: (0,)}


def best_times(fns: dict[str, Callable[[], object]], repeat: int,
               cpu: frozenset[str] = frozenset()) -> dict[str, float]:
    """Best time of each function over ``repeat`` rounds, the functions interleaved.

    Labels in ``cpu`` are timed by process CPU time, the others by the wall clock.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for label, fn in fns.items():
            clock = time.process_time if label in cpu else time.perf_counter
            t0 = clock()
            fn()
            best[label] = min(best[label], clock() - t0)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096, help="rows of the test matrix")
    ap.add_argument("--cols", type=int, default=4096, help="columns (a multiple of 256)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best time is kept")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="clock of the one-thread columns (see the module docstring)")
    ap.add_argument("--types", nargs="*", help="type names to run (default: all)")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    args = ap.parse_args()
    cpu = frozenset({"ggml", "one"}) if args.clock == "cpu" else frozenset()
    wanted = {t.upper() for t in args.types} if args.types else None
    encode = [t for t in ENCODE if wanted is None or t.name in wanted]
    decode = [t for t in DECODE if wanted is None or t.name in wanted]

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.cols)).astype(np.float32)  # (rows, cols)
    x *= rng.lognormal(0, 1, (args.rows, 1)).astype(np.float32)
    imp = rng.gamma(0.5, 1.0, args.cols).astype(np.float32)
    mb = x.nbytes / 1e6  # float32 megabytes in (encode) or out (decode)
    threads = numba.get_num_threads()

    lines = [
        "# k-quant codec speed",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `python benchmarks/bench_kquants.py --rows {args.rows} --cols {args.cols} "
        f"--repeat {args.repeat} --clock {args.clock}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, numba threads {threads}, "
        f"load average before {os.getloadavg()[0]:.1f}",
        f"- data: {args.rows} x {args.cols} float32 ({mb:.0f} MB), normal rows with "
        "log-normal scales; throughput in MB/s of float32; best of the rounds",
        "",
        "## Quantize (ratio = gguflite / ggml single thread; target >= 1.0)",
        "",
        "| type | importance | ggml 1 thread | gguflite 1 thread | ratio | "
        f"gguflite {threads} threads | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in encode:
        for importance in (None, imp):
            want = ggml_quantize(t, x, importance)
            got = quantize(x, t, importance=importance)  # also compiles the kernel
            if not np.array_equal(got, want):
                raise SystemExit(f"{t.name}: gguflite and ggml disagree; run the tests")
            fns = {
                "ggml": lambda t=t, i=importance: ggml_quantize(t, x, i),
                "one": with_threads(1, lambda t=t, i=importance: quantize(x, t, importance=i)),
                "all": lambda t=t, i=importance: quantize(x, t, importance=i),
            }
            b = best_times(fns, args.repeat, cpu)
            lines.append(
                f"| {t.name} | {'yes' if importance is not None else 'no'} | "
                f"{mb / b['ggml']:.0f} | {mb / b['one']:.0f} | {b['ggml'] / b['one']:.2f}x | "
                f"{mb / b['all']:.0f} | {b['ggml'] / b['all']:.2f}x |")

    lines += [
        "",
        "## Dequantize (ratio = gguflite / gguf package; target >= 3)",
        "",
        f"| type | gguf package | ggml to_float 1 thread | gguflite 1 thread | ratio | "
        f"gguflite {threads} threads | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in decode:
        codec = get_codec(t)
        n_blocks = x.size // codec.block_size
        packed = rng.integers(0, 256, (n_blocks, codec.type_size), dtype=np.uint8)  # levels
        for off in SCALE_AT[t]:
            d = (rng.random(n_blocks) * 1e-2).astype("<f2").view(np.uint8).reshape(-1, 2)
            packed[:, off:off + 2] = d
        raw = packed.reshape(args.rows, -1)  # (rows, row bytes)
        qtype = gguf.GGMLQuantizationType(int(t))
        got = dequantize(raw, t, x.shape)
        if not np.array_equal(got, gguf.quants.dequantize(raw, qtype)):
            raise SystemExit(f"{t.name}: gguflite and gguf disagree; run the tests")
        fns = {
            "gguf": lambda r=raw, q=qtype: gguf.quants.dequantize(r, q),
            "ggml": lambda r=raw, t=t: ggml_dequantize(t, r, x.size),
            "one": with_threads(1, lambda r=raw, t=t: dequantize(r, t, x.shape)),
            "all": lambda r=raw, t=t: dequantize(r, t, x.shape),
        }
        b = best_times(fns, args.repeat, cpu)
        lines.append(
            f"| {t.name} | {mb / b['gguf']:.0f} | {mb / b['ggml']:.0f} | {mb / b['one']:.0f} | "
            f"{b['gguf'] / b['one']:.1f}x | {mb / b['all']:.0f} | {b['gguf'] / b['all']:.1f}x |")

    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
