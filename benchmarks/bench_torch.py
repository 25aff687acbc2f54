"""torch backend vs the Numba backend vs llama.cpp, side by side on the same files.

    python benchmarks/bench_torch.py [--device cpu|cuda] [--threads 2] [--reps 3]
                                     [--out benchmarks/results/torch.md]

Files: SmolLM2-135M-Instruct Q4_1 as shipped and llama.cpp's Q8_0 re-quantization of it
(``bench_runtime.make_files``). For each file and engine: load seconds, pp128 (128 tokens
prefilled from an empty cache) and tg64 (64 tokens decoded one at a time), medians over
``--reps`` rounds in which the engines alternate, so that load on a shared machine hits all
alike. Ratios are against llama.cpp measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_runtime import make_files  # noqa: E402  (same files as the runtime benchmark)

import gguflite  # noqa: E402
from gguflite.models import family_for_arch  # noqa: E402
from gguflite.runtime.numba_backend import NumbaBackend  # noqa: E402
from gguflite.runtime.torch_backend import TorchBackend  # noqa: E402

N_PP, N_TG = 128, 64


def _time_backend(backend, ids: np.ndarray) -> tuple[float, float]:
    backend.reset()
    t0 = time.perf_counter()
    logits = backend.forward(ids, 0)
    pp = len(ids) / (time.perf_counter() - t0)
    backend.reset()
    tok, t0 = int(ids[0]), time.perf_counter()
    for pos in range(N_TG):
        logits = backend.forward(np.array([tok]), pos)
        tok = int(np.argmax(logits))
    return pp, N_TG / (time.perf_counter() - t0)


def _time_llama_cpp(llm, ids: np.ndarray) -> tuple[float, float]:
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids.tolist())
    pp = len(ids) / (time.perf_counter() - t0)
    llm.reset()
    tok, t0 = int(ids[0]), time.perf_counter()
    for _ in range(N_TG):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return pp, N_TG / (time.perf_counter() - t0)


def bench_file(path: Path, *, device: str, threads: int, reps: int) -> dict[str, dict]:
    import llama_cpp
    import torch

    torch.set_num_threads(threads)
    f = gguflite.open(path)
    fam = family_for_arch(f.metadata["general.architecture"])
    hp = fam.from_metadata(f.metadata)
    n_ctx = 256
    loads: dict[str, float] = {}
    t0 = time.perf_counter()
    engines = {"numba": NumbaBackend(f, fam, hp, n_ctx=n_ctx)}
    loads["numba"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engines["torch"] = TorchBackend(f, fam, hp, n_ctx=n_ctx, device=device, threads=threads)
    loads["torch"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_threads=threads, n_batch=N_PP,
                          logits_all=False, verbose=False)
    loads["llama.cpp"] = time.perf_counter() - t0
    ids = np.random.default_rng(0).integers(0, hp.vocab_size, N_PP)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("numba", "torch", "llama.cpp")}
    engines["numba"].forward(ids[:8], 0)  # compile / warm up every engine once
    engines["torch"].forward(ids[:8], 0)
    llm.eval(ids[:8].tolist())
    for _ in range(reps):
        runs["numba"].append(_time_backend(engines["numba"], ids))
        runs["torch"].append(_time_backend(engines["torch"], ids))
        runs["llama.cpp"].append(_time_llama_cpp(llm, ids))
    return {
        name: {"load_s": loads[name],
               "pp": statistics.median(r[0] for r in rs),
               "tg": statistics.median(r[1] for r in rs)}
        for name, rs in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=HERE / "out")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "torch.md")
    args = ap.parse_args()
    files = make_files(args.cache)
    files = {k: v for k, v in files.items() if not k.startswith("Q4_K")}
    lines = [
        "# torch backend vs Numba vs llama.cpp",
        "",
        f"{datetime.date.today()}, {platform.machine()}, {args.threads} threads, torch device "
        f"`{args.device}`, median of {args.reps} alternating rounds; pp{N_PP} and tg{N_TG} in "
        "tokens/s; ratios are against llama.cpp in the same run.",
        f"Command: `python benchmarks/bench_torch.py --device {args.device} --threads "
        f"{args.threads} --reps {args.reps}`",
        "",
        "| file | engine | load s | pp128 tok/s | tg64 tok/s | pp ratio | tg ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, path in files.items():
        res = bench_file(path, device=args.device, threads=args.threads, reps=args.reps)
        ref = res["llama.cpp"]
        for name, r in res.items():
            lines.append(f"| {label} | {name} | {r['load_s']:.2f} | {r['pp']:.0f} | "
                         f"{r['tg']:.1f} | {r['pp'] / ref['pp']:.2f} | {r['tg'] / ref['tg']:.2f} |")
            print(lines[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
