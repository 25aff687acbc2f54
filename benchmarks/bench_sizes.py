"""The 135M and the 1.1B file side by side: decode through ``generate()``, weight bytes per
second against the machine's read bandwidth, and peak memory, gguflite vs llama-cpp-python.

    python benchmarks/bench_sizes.py [--reps 3] [--threads 2] [--n-gen 48] [--out FILE.md]

Files: SmolLM2-135M requantized to Q8_0 by llama.cpp (bench_runtime.make_files) and the
TinyLlama-1.1B-shaped Q8_0 / Q4_K_M files (bench_prefill.tinyllama_files: random weights,
TinyLlama's shapes). Per file:

- decode, each engine in its own worker process, alternating: the raw decode loop (one
  forward pass per token, no sampling) and ``generate`` (gguflite ``Model.generate``,
  llama-cpp-python ``create_completion``; temperature 0.7, top-p 0.9, top-k 40, min-p 0.05,
  not streamed) timed for N tokens and for 1 token of the same prompt and seed: the rate is
  (N - 1) / (T_N - T_1), so the prefill drops out without relying on streamed text (the
  random-weight 1.1B files generate byte tokens that decode to no complete character);
- weight bytes per second: the bytes a decode step reads (every tensor but the token
  embedding, of which it reads one row) times the raw loop's tokens per second, against the
  read bandwidth measured on this machine (a parallel sum over 2 GiB with the same threads,
  in its own process, best of 5);
- peak RSS (``wait4``) of a process that loads the file at context 4096 (or the file's
  context length when shorter) and streams 32 tokens of a chat reply, per engine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from report import cpu_line, write_results  # noqa: E402

N_CTX = 4096
RSS_TOKENS = 32

GGUFLITE_CHAT = """
import sys
from gguflite.runtime import load
m = load(sys.argv[1], n_ctx=int(sys.argv[2]), threads=int(sys.argv[3]))
for piece in m.chat([{"role": "user", "content": "Write a haiku about the sea."}],
                    max_tokens=int(sys.argv[4]), seed=0, stream=True):
    sys.stdout.write(piece)
"""

LLAMA_CPP_CHAT = """
import sys
import llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=int(sys.argv[2]), n_threads=int(sys.argv[3]),
                      n_threads_batch=int(sys.argv[3]), verbose=False)
for c in llm.create_chat_completion([{"role": "user", "content": "Write a haiku about the sea."}],
                                    max_tokens=int(sys.argv[4]), seed=0, stream=True):
    sys.stdout.write(c["choices"][0]["delta"].get("content", "") or "")
"""

BANDWIDTH = """
import sys, time
import numpy as np
import numba
from numba import njit, prange

@njit(parallel=True)
def total(a):
    s = 0
    for i in prange(a.size):
        s += a[i]
    return s

numba.set_num_threads(int(sys.argv[1]))
a = np.ones(1 << 28, np.uint64)  # 2 GiB
total(a)
best = min((lambda t: (total(a), time.perf_counter() - t)[1])(time.perf_counter())
           for _ in range(5))
print(a.nbytes / best / 1e9)
"""


def step_bytes(path: Path) -> int:
    """Bytes of weights one decode step reads: every tensor but token_embd (one row of it)."""
    import gguflite

    with gguflite.open(path) as f:
        tied = "output.weight" not in f.tensors  # the head reads all of token_embd
        return sum(t.nbytes // t.shape[0] if t.name == "token_embd.weight" and not tied
                   else t.nbytes for t in f.tensors.values())


def context(path: Path) -> int:
    """N_CTX, or the file's context length when shorter."""
    import gguflite

    with gguflite.open(path) as f:
        arch = f.metadata["general.architecture"]
        return min(N_CTX, int(f.metadata[f"{arch}.context_length"]))


def peak_rss(path: Path, threads: int) -> dict[str, float]:
    from bench_startup import run_child

    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [str(path), str(context(path)), str(threads), str(RSS_TOKENS)]
    return {engine: run_child([sys.executable, "-c", script, *args], env)["rss_mb"]
            for engine, script in (("gguflite", GGUFLITE_CHAT), ("llama.cpp", LLAMA_CPP_CHAT))}


def read_bandwidth(threads: int) -> float:
    import subprocess

    out = subprocess.run([sys.executable, "-c", BANDWIDTH, str(threads)], capture_output=True,
                         text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


PROMPT = "Once upon a time, in a small village by the sea,"
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05}


def worker_main(engine: str, path: Path, threads: int) -> None:
    """Serve ``raw N SEED`` / ``gen N SEED`` lines: {"n": tokens, "seconds": ...} each."""
    import time

    if engine == "gguflite":
        from gguflite.runtime import load
        from gguflite.runtime.bench import time_decode

        model = load(path, threads=threads, n_ctx=512)

        def raw(n: int, seed: int) -> dict:
            return {"n": n, "seconds": time_decode(model, n, seed=seed)}

        def gen_once(n: int, seed: int) -> tuple[int, float]:
            model.reset()
            t = time.perf_counter()
            out = model.generate(PROMPT, max_tokens=n, seed=seed, stream=False, **SAMPLING)
            return out.stats.n_generated, time.perf_counter() - t
    else:
        import llama_cpp
        from bench_runtime import time_llama_cpp

        llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                              n_batch=512, verbose=False)

        def raw(n: int, seed: int) -> dict:
            return {"n": n, "seconds": time_llama_cpp(llm, 0, n, seed)[1]}

        def gen_once(n: int, seed: int) -> tuple[int, float]:
            llm.reset()
            llm._ctx.kv_cache_clear()
            t = time.perf_counter()
            out = llm.create_completion(PROMPT, max_tokens=n, seed=seed, repeat_penalty=1.0,
                                        **SAMPLING)
            return out["usage"]["completion_tokens"], time.perf_counter() - t

    def gen(n: int, seed: int) -> dict:
        n1, t1 = gen_once(1, seed)
        nn, tn = gen_once(n, seed)
        return {"n": nn - n1, "seconds": tn - t1}

    print(json.dumps({}), flush=True)
    for line in sys.stdin:
        cmd, n, seed = line.split()
        print(json.dumps((raw if cmd == "raw" else gen)(int(n), int(seed))), flush=True)


def decode_rates(path: Path, reps: int, threads: int, n: int) -> dict:
    from bench_runtime import Worker

    workers = {e: Worker(e, path, threads, script=__file__) for e in ("gguflite", "llama.cpp")}
    for w in workers.values():  # warm-up
        w.run("raw", 4, 0)
        w.run("gen", 4, 0)
    rates: dict[str, list[float]] = {}
    for rep in range(reps):
        for engine, w in workers.items():
            for cmd in ("raw", "gen"):
                r = w.run(cmd, n, rep)
                rates.setdefault(f"{engine} {cmd}", []).append(r["n"] / r["seconds"])
    for w in workers.values():
        w.close()
    return rates


def measure(files: dict[str, Path], reps: int, threads: int, n: int) -> dict:
    rows = {}
    for label, path in files.items():
        rates = decode_rates(path, reps, threads, n)
        rows[label] = {"decode": {k: statistics.median(v) for k, v in rates.items()},
                       "all": rates, "step_bytes": step_bytes(path),
                       "rss_mb": peak_rss(path, threads), "n_ctx": context(path)}
        print(label, json.dumps(rows[label]["decode"]), rows[label]["rss_mb"], flush=True)
    return {"files": rows, "bandwidth_gb_s": read_bandwidth(threads), "threads": threads,
            "cpu": cpu_line(), "load_end": os.getloadavg()[0]}


def report(m: dict, args: list[str]) -> str:
    bw = m["bandwidth_gb_s"]
    lines = [
        "# The 135M and the 1.1B file side by side",
        "",
        f"{m['cpu']} · {m['threads']} threads · load average at the end {m['load_end']:.1f} · "
        f"`python benchmarks/bench_sizes.py {' '.join(args)}`",
        "",
        f"Read bandwidth measured on this machine: **{bw:.1f} GB/s** (parallel sum over 2 GiB, "
        f"{m['threads']} threads, best of 5).",
        "",
        "## Decode (tokens/s, medians; generate = temperature 0.7, top-p 0.9, top-k 40, "
        "min-p 0.05, (N - 1) / (T_N - T_1))",
        "",
        "| file | weights read per token | gguflite raw | llama.cpp raw | raw ratio "
        "| gguflite generate | llama.cpp generate | generate ratio "
        "| gguflite weight GB/s (of the bandwidth) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in m["files"].items():
        d = r["decode"]
        g_raw, l_raw = d["gguflite raw"], d["llama.cpp raw"]
        g_gen, l_gen = d["gguflite gen"], d["llama.cpp gen"]
        gbs = r["step_bytes"] * g_raw / 1e9
        lines.append(
            f"| {label} | {r['step_bytes'] / 1e6:.0f} MB | {g_raw:.1f} | {l_raw:.1f} | "
            f"{g_raw / l_raw:.2f}x | {g_gen:.1f} | {l_gen:.1f} | {g_gen / l_gen:.2f}x | "
            f"{gbs:.1f} ({gbs / bw:.0%}) |")
    lines += ["", "Per-repetition ratios of generate (median, range):", ""]
    for label, r in m["files"].items():
        a = r["all"]
        ratios = sorted(x / y for x, y in zip(a["gguflite gen"], a["llama.cpp gen"],
                                              strict=True))
        lines.append(f"- {label}: {statistics.median(ratios):.2f}x "
                     f"({ratios[0]:.2f}-{ratios[-1]:.2f})")
    lines += ["", f"## Peak RSS: load, stream {RSS_TOKENS} tokens of a chat reply (one process "
              "per engine, the same context)", "",
              "| file | context | gguflite | llama-cpp-python | difference |",
              "|---|---|---|---|---|"]
    for label, r in m["files"].items():
        g, ref = r["rss_mb"]["gguflite"], r["rss_mb"]["llama.cpp"]
        lines.append(f"| {label} | {r['n_ctx']} | {g:.0f} MB | {ref:.0f} MB | {g - ref:+.0f} MB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-gen", type=int, default=48)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gguflite-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sizes.md")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "PATH"))
    a = ap.parse_args()
    if a.worker:
        worker_main(a.worker[0], Path(a.worker[1]), a.threads)
        return
    from bench_prefill import tinyllama_files
    from bench_runtime import make_files

    files = {"SmolLM2-135M Q8_0": make_files(a.cache)["Q8_0"]} | {
        k: v for k, v in tinyllama_files(a.cache).items()}
    m = measure(files, a.reps, a.threads, a.n_gen)
    write_results(a.out, report(m, sys.argv[1:]), m)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
