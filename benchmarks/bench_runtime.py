"""gguflite's runtime vs llama.cpp (llama-cpp-python), side by side on the same files.

    python benchmarks/bench_runtime.py [--threads 2] [--reps 3] [--only Q8_0]

Files: SmolLM2-135M-Instruct Q4_1 as shipped, and llama.cpp re-quantizations of it to Q8_0
(ftype 7) and Q4_K_M (ftype 15), made once with ``llama_cpp.llama_model_quantize`` into
``--cache`` (requantized from Q4_1: fine for speed, not for quality).

For each file, the two engines alternate (gguflite, llama.cpp, gguflite, ...) ``--reps`` times
so that load on a shared machine hits both alike; medians and their ratio are reported:

- pp128: 128 random tokens prefilled from an empty cache.
- tg64: 64 tokens decoded one at a time from an empty cache (llama-bench's tg test).
  llama.cpp is driven through ``Llama.eval`` (one call per token, as its Python users do).
- first / warm load: a fresh process loads the file and runs one prefill (16 tokens) and one
  decode step, with an empty Numba cache directory (first) and then with it filled (warm).
- a per-op breakdown of gguflite's decode step (wall time per op kind over tg64).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FTYPES = {"Q8_0": 7, "Q4_K_M": 15}


def make_files(cache: Path) -> dict[str, Path]:
    import llama_cpp

    from gguflite.default_model import default_model_path

    src = default_model_path()
    files = {"Q4_1 (as shipped)": src}
    cache.mkdir(parents=True, exist_ok=True)
    llama_cpp.llama_backend_init()
    for label, ftype in FTYPES.items():
        dst = cache / f"smollm2-135m-{label.lower()}.gguf"
        if not dst.exists():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.allow_requantize = True
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                                ctypes.byref(params))
            if rc != 0:
                raise SystemExit(f"llama_model_quantize({label}) failed: rc={rc}")
        files[label] = dst
    return files


def time_llama_cpp(llm, n_prompt: int, n_gen: int, seed: int) -> tuple[float, float]:
    """(pp seconds, tg seconds) with llama-cpp-python's Llama.eval."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, llm.n_vocab(), size=max(n_prompt, n_gen)).tolist()
    llm.reset()
    llm._ctx.kv_cache_clear()
    t0 = time.perf_counter()
    llm.eval(ids[:n_prompt])
    pp = time.perf_counter() - t0
    llm.reset()
    llm._ctx.kv_cache_clear()
    t0 = time.perf_counter()
    for t in ids[:n_gen]:
        llm.eval([t])
    tg = time.perf_counter() - t0
    return pp, tg


LOAD_SNIPPET = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np
import gguflite.runtime as rt
m = rt.load(sys.argv[1], threads=int(sys.argv[2]), n_ctx=256)
t1 = time.perf_counter()
m.backend.forward(np.arange(16), 0)
m.backend.forward(np.arange(1), 16)
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "first_tokens": t2 - t1, "total": t2 - t0}))
"""


def load_times(path: Path, threads: int) -> dict[str, dict[str, float]]:
    """Fresh-process start-up with an empty, then a filled, Numba cache directory."""
    out = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        for label in ("first", "warm"):
            r = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path), str(threads)],
                               env=env, capture_output=True, text=True, check=True)
            out[label] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def bench_file(label: str, path: Path, *, threads: int, reps: int, n_prompt: int,
               n_gen: int, with_load: bool = True) -> dict:
    import llama_cpp
    from gguflite.runtime import load
    from gguflite.runtime.bench import time_decode, time_prefill

    model = load(path, threads=threads, n_ctx=512)
    llm = llama_cpp.Llama(str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512,
                          n_batch=512, verbose=False)
    # warm-up both (first-call costs, page faults)
    time_prefill(model, n_prompt)
    time_decode(model, 8)
    time_llama_cpp(llm, n_prompt, 8, 0)
    ours_pp, ours_tg, ref_pp, ref_tg = [], [], [], []
    for r in range(reps):
        ours_pp.append(n_prompt / time_prefill(model, n_prompt, seed=r))
        ours_tg.append(n_gen / time_decode(model, n_gen, seed=r))
        pp, tg = time_llama_cpp(llm, n_prompt, n_gen, r)
        ref_pp.append(n_prompt / pp)
        ref_tg.append(n_gen / tg)
    timers = model.backend.enable_timers()
    time_decode(model, n_gen)
    model.backend.enable_timers(False)
    total = sum(timers.values())
    types = sorted({ti.type.name for ti in model.file.tensors.values()})
    model.close()
    del llm
    med = statistics.median
    return {
        "label": label, "path": str(path), "types": types,
        "size_mb": path.stat().st_size / 1e6,
        "pp": {"gguflite": med(ours_pp), "llama_cpp": med(ref_pp),
               "all_gguflite": ours_pp, "all_llama_cpp": ref_pp},
        "tg": {"gguflite": med(ours_tg), "llama_cpp": med(ref_tg),
               "all_gguflite": ours_tg, "all_llama_cpp": ref_tg},
        "decode_ms_per_op": {k: 1e3 * v / n_gen for k, v in
                             sorted(timers.items(), key=lambda kv: -kv[1])},
        "decode_ms_total": 1e3 * total / n_gen,
        "load": load_times(path, threads) if with_load else None,
    }


def render(results: list[dict], args: argparse.Namespace, cmd: str) -> str:
    lines = [
        "# Runtime benchmark: gguflite vs llama.cpp",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `{cmd}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"threads={args.threads}, load average at start {args.loadavg}",
        "- engines alternate per repetition; figures are medians of "
        f"{args.reps} repetitions; ratio = gguflite / llama.cpp (> 1: gguflite faster)",
        "",
        f"| file | types | pp{args.n_prompt} gguflite | pp llama.cpp | ratio | "
        f"tg{args.n_gen} gguflite | tg llama.cpp | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        pp, tg = r["pp"], r["tg"]
        lines.append(
            f"| {r['label']} | {', '.join(r['types'])} | {pp['gguflite']:.1f} | "
            f"{pp['llama_cpp']:.1f} | {pp['gguflite'] / pp['llama_cpp']:.2f} | "
            f"{tg['gguflite']:.1f} | {tg['llama_cpp']:.1f} | "
            f"{tg['gguflite'] / tg['llama_cpp']:.2f} |")
    lines += ["", "tokens/s. Start-up of a fresh process (load + a 16-token prefill + one "
              "decode step), seconds:", "",
              "| file | first (empty Numba cache) | warm (cache filled) | of which load |",
              "|---|---:|---:|---:|"]
    for r in results:
        ld = r["load"]
        if ld is None:
            lines.append(f"| {r['label']} | not measured (--skip-load) | | |")
            continue
        lines.append(f"| {r['label']} | {ld['first']['total']:.2f} | "
                     f"{ld['warm']['total']:.2f} | {ld['warm']['load']:.2f} |")
    lines += ["", "gguflite decode step, ms per token by op (tg, timers on):", ""]
    ops = sorted({k for r in results for k in r["decode_ms_per_op"]})
    lines += ["| file | total | " + " | ".join(ops) + " |",
              "|---|---:|" + "---:|" * len(ops)]
    for r in results:
        d = r["decode_ms_per_op"]
        lines.append(f"| {r['label']} | {r['decode_ms_total']:.2f} | "
                     + " | ".join(f"{d.get(k, 0.0):.2f}" for k in ops) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gguflite-bench")
    ap.add_argument("--skip-load", action="store_true", help="Skip the start-up timings.")
    ap.add_argument("--only", default=None, help="Run only files whose label contains this.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/runtime.md")
    args = ap.parse_args()
    args.loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    files = make_files(args.cache)
    results = []
    for label, path in files.items():
        if args.only and args.only not in label:
            continue
        print(f"== {label}", file=sys.stderr)
        results.append(bench_file(label, path, threads=args.threads, reps=args.reps,
                                  n_prompt=args.n_prompt, n_gen=args.n_gen,
                                  with_load=not args.skip_load))
        print(json.dumps(results[-1], indent=1), file=sys.stderr)
    text = render(results, args, cmd)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
