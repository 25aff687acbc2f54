"""Start-up, the generation path users run, and peak memory: gguflite vs llama.cpp
(llama-cpp-python), each engine in its own process, ratios from the same run.

    python benchmarks/bench_startup.py [--reps 5] [--threads 1] [--out FILE.md]

- cold: ``gguflite run`` on the default model (chat template, 16 tokens, seed 0) from an empty
  Numba cache directory (NUMBA_CACHE_DIR = a new temporary directory), process start to exit,
  with the outermost Numba compilations it did (function, seconds);
- warm: the same command with that cache filled (median of --reps), against a
  llama-cpp-python script doing the same chat job (load, template, 16 tokens, streamed);
  both processes' peak RSS (``wait4``), at the same context (4096, gguflite's default);
- the user's path: ``Model.generate`` with sampling (temperature 0.7, top-p 0.9; once with
  the default top-k 40 / min-p 0.05, once with both off) against the raw decode loop (one
  ``backend.forward`` per token, no sampling) and against llama-cpp-python's
  ``create_completion`` with the same sampling, on the default model requantized to Q8_0
  (bench_runtime.make_files). Both stream; the rate is (pieces - 1) / (time of the last piece
  - time of the first), so the prefill is left out and each counted piece is one forward pass,
  one sampling and one detokenization, in both engines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import cpu_line, write_results  # noqa: E402

PROMPT = "Write a haiku about the sea."
N_RUN = 16

# `gguflite run`, recording the outermost Numba compilations into $STARTUP_COMPILES (JSON).
GGUFLITE_RUN = """
import json, os, sys, time
from numba.core import event
rec = event.install_recorder("numba:compile")
buf = rec.__enter__().buffer
from gguflite.cli.main import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
finally:
    rec.__exit__(None, None, None)
    depth, rows = 0, []
    for t, ev in buf:
        depth += 1 if ev.is_start else -1
        if ev.is_start and depth == 1:
            start, name = t, ev.data["dispatcher"].py_func.__qualname__
        elif not ev.is_start and depth == 0:
            rows.append((name, t - start))
    with open(os.environ["STARTUP_COMPILES"], "w") as f:
        json.dump(rows, f)
"""

LLAMA_CPP_RUN = """
import sys
import llama_cpp
from gguflite.default_model import default_model_path
llm = llama_cpp.Llama(str(default_model_path()), n_ctx=4096, n_threads=int(sys.argv[2]),
                      n_threads_batch=int(sys.argv[2]), verbose=False)
for chunk in llm.create_chat_completion([{"role": "user", "content": sys.argv[1]}],
                                        max_tokens=int(sys.argv[3]), temperature=0.8, top_k=40,
                                        top_p=0.95, min_p=0.05, seed=0, stream=True):
    sys.stdout.write(chunk["choices"][0]["delta"].get("content", "") or "")
    sys.stdout.flush()
print()
"""


def run_child(cmd: list[str], env: dict[str, str]) -> dict:
    """Wall seconds and peak RSS (MB, from wait4) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({p.returncode}): {err.decode()[-2000:]}")
    return {"seconds": wall, "rss_mb": usage.ru_maxrss / 1024, "stdout": out.decode(),
            "stderr": err.decode(), "cpu": usage.ru_utime + usage.ru_stime}  # + its children


def startup(reps: int, threads: int) -> dict:
    base = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run_args = ["run", "-p", PROMPT, "-n", str(N_RUN), "--seed", "0", "-t", str(threads)]
    ours = [sys.executable, "-c", GGUFLITE_RUN, *run_args]
    ref = [sys.executable, "-c", LLAMA_CPP_RUN, PROMPT, str(threads), str(N_RUN)]
    # Bytecode, as an installed package has it (pip compiles it; a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise recompile ~70 modules in every run, ~0.1 s).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "gguflite"),
                    str(ROOT / "runtime"), str(ROOT / "converters")], check=True,
                   capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(base, NUMBA_CACHE_DIR=str(Path(tmp) / "numba"),
                   STARTUP_COMPILES=str(Path(tmp) / "compiles.json"))
        cold = run_child(ours, env)
        compiles = json.loads((Path(tmp) / "compiles.json").read_text())
        warm, llama = [], []
        for _ in range(reps):  # alternate, so that load on a shared machine hits both alike
            warm.append(run_child(ours, env))
            llama.append(run_child(ref, base))
        warm_compiles = json.loads((Path(tmp) / "compiles.json").read_text())
    med = statistics.median
    return {
        "cold_seconds": cold["seconds"], "cold_rss_mb": cold["rss_mb"], "cold_cpu": cold["cpu"],
        "warm_cpu": med(r["cpu"] for r in warm), "llama_cpu": med(r["cpu"] for r in llama),
        "cold_compiles": sorted(compiles, key=lambda r: -r[1]),
        "warm_seconds": med(r["seconds"] for r in warm),
        "warm_rss_mb": med(r["rss_mb"] for r in warm),
        "warm_compiles": warm_compiles,
        "llama_seconds": med(r["seconds"] for r in llama),
        "llama_rss_mb": med(r["rss_mb"] for r in llama),
        "all_warm": [r["seconds"] for r in warm], "all_llama": [r["seconds"] for r in llama],
        "cold_stderr": cold["stderr"][-600:],
    }


# -- the user's path: workers --------------------------------------------------------------------
GEN_PROMPT = "Once upon a time, in a small village by the sea,"
CONFIGS = {
    "t0.7 p0.9 (k40 min-p0.05)": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05},
    "t0.7 p0.9 (k off, min-p off)": {"temperature": 0.7, "top_p": 0.9, "top_k": 0, "min_p": 0.0},
}


def worker_main(engine: str, path: Path, threads: int) -> None:
    """Serve ``raw N SEED`` / ``gen N SEED CONFIG`` lines from stdin, one JSON line each."""
    if engine == "gguflite":
        from gguflite.runtime import load
        from gguflite.runtime.bench import time_decode

        model = load(path, threads=threads, n_ctx=512)

        def raw(n: int, seed: int) -> dict:
            return {"n": n, "seconds": time_decode(model, n, seed=seed)}

        def gen(n: int, seed: int, cfg: dict) -> dict:
            model.reset()
            return _pieces_per_second(model.generate(GEN_PROMPT, max_tokens=n, seed=seed,
                                                     stream=True, **cfg))
    else:
        import llama_cpp
        from bench_runtime import time_llama_cpp

        llm = llama_cpp.Llama(str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                              n_batch=512, verbose=False)

        def raw(n: int, seed: int) -> dict:
            return {"n": n, "seconds": time_llama_cpp(llm, 0, n, seed)[1]}

        def gen(n: int, seed: int, cfg: dict) -> dict:
            llm.reset()
            llm._ctx.kv_cache_clear()
            return _pieces_per_second(
                chunk["choices"][0]["text"]
                for chunk in llm.create_completion(GEN_PROMPT, max_tokens=n, seed=seed,
                                                   repeat_penalty=1.0, stream=True, **cfg))

    print(json.dumps({}), flush=True)
    for line in sys.stdin:
        cmd, n, seed, *rest = line.split(maxsplit=3)
        if cmd == "raw":
            out = raw(int(n), int(seed))
        else:
            out = gen(int(n), int(seed), CONFIGS[rest[0].strip()])
        print(json.dumps(out), flush=True)


def _pieces_per_second(pieces) -> dict:
    """Pieces streamed after the first one, and the seconds from the first to the last: the
    generation rate without the prefill (one piece per token, in both engines)."""
    times = [time.perf_counter() for piece in pieces if piece]
    return {"n": len(times) - 1, "seconds": times[-1] - times[0]}


def user_path(path: Path, reps: int, threads: int, n: int) -> dict:
    from bench_runtime import Worker  # each engine in its own process, serving --worker here

    ours, ref = (Worker(e, path, threads, script=__file__) for e in ("gguflite", "llama.cpp"))
    names = list(CONFIGS)
    for w in (ours, ref):  # warm-up
        w.run("raw", 8, 0)
        for c in names:
            w.run("gen", 8, 0, c)
    rates: dict[str, list[float]] = {}

    def add(key: str, r: dict) -> None:
        rates.setdefault(key, []).append(r["n"] / r["seconds"])

    for rep in range(reps):
        for label, w in (("gguflite", ours), ("llama.cpp", ref)):
            add(f"{label} raw", w.run("raw", n, rep))
            for c in names:
                add(f"{label} generate {c}", w.run("gen", n, rep, c))
    ours.close()
    ref.close()
    return {k: statistics.median(v) for k, v in rates.items()} | {"all": rates}


def report(s: dict, u: dict, threads: int) -> str:
    load = os.getloadavg()
    lines = [
        "# Start-up, the user's generation path, peak memory",
        "",
        f"{datetime.date.today()} · {cpu_line()} · {threads} threads · load average at the end "
        f"{load[0]:.1f} (a shared machine: ratios come from the same run, engines alternating) "
        "· `python benchmarks/bench_startup.py`",
        "",
        f"## `gguflite run` on the default model ({PROMPT!r}, {N_RUN} tokens, context 4096)",
        "",
        "| | gguflite | llama-cpp-python | ratio (gguflite / llama.cpp) |",
        "|---|---|---|---|",
        f"| cold: empty Numba cache, process start to exit | {s['cold_seconds']:.1f} s | "
        f"{s['llama_seconds']:.2f} s | {s['cold_seconds'] / s['llama_seconds']:.1f}x |",
        f"| cold: CPU seconds (user + sys, its helper process included; llama.cpp: any run) | "
        f"{s['cold_cpu']:.1f} s | {s['llama_cpu']:.2f} s | {s['cold_cpu'] / s['llama_cpu']:.1f}x |",
        f"| warm: cache filled (median) | {s['warm_seconds']:.2f} s | {s['llama_seconds']:.2f} s "
        f"| {s['warm_seconds'] / s['llama_seconds']:.2f}x |",
        f"| warm: CPU seconds (median) | {s['warm_cpu']:.2f} s | {s['llama_cpu']:.2f} s "
        f"| {s['warm_cpu'] / s['llama_cpu']:.2f}x |",
        f"| warm: each run (s) | {' '.join(f'{x:.2f}' for x in s['all_warm'])} | "
        f"{' '.join(f'{x:.2f}' for x in s['all_llama'])} | |",
        f"| peak RSS, warm | {s['warm_rss_mb']:.0f} MB | {s['llama_rss_mb']:.0f} MB | "
        f"{s['warm_rss_mb'] / s['llama_rss_mb']:.2f}x ({s['warm_rss_mb'] - s['llama_rss_mb']:+.0f}"
        " MB) |",
        f"| peak RSS, cold | {s['cold_rss_mb']:.0f} MB | | |",
        "",
        f"Warm run compilations: {len(s['warm_compiles'])} "
        f"({', '.join(sorted({n for n, _ in s['warm_compiles']})) or 'none'}).",
        "",
        "Cold run: outermost Numba compilations of the main process, longest first (wall "
        "seconds; its helper process compiles its share beside it, "
        "runtime/precompile.py):",
        "",
        "| function | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in s["cold_compiles"][:25]]
    total = sum(sec for _, sec in s["cold_compiles"])
    lines += [f"| **all {len(s['cold_compiles'])}** | **{total:.1f}** |", ""]
    lines += [
        "## Decode through `generate()` vs the raw loop vs llama-cpp-python (Q8_0 file)",
        "",
        "tokens/s, medians; generate = forward + sampling + detokenizing per streamed token, "
        "prefill excluded.",
        "",
        "| path | gguflite | llama.cpp | gguflite / llama.cpp | gguflite / its raw loop |",
        "|---|---|---|---|---|",
        f"| raw decode loop | {u['gguflite raw']:.1f} | {u['llama.cpp raw']:.1f} | "
        f"{u['gguflite raw'] / u['llama.cpp raw']:.2f}x | 1.00x |",
    ]
    for c in CONFIGS:
        g, r = u[f"gguflite generate {c}"], u[f"llama.cpp generate {c}"]
        lines.append(f"| generate {c} | {g:.1f} | {r:.1f} | {g / r:.2f}x | "
                     f"{g / u['gguflite raw']:.2f}x |")
    a = u["all"]

    def per_rep(num: str, den: str) -> str:  # ratios of runs made back to back, robust to drift
        ratios = sorted(x / y for x, y in zip(a[num], a[den], strict=True))
        return f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"

    lines += ["", "The same, as the median (range) of per-repetition ratios:", "",
              "| path | gguflite / llama.cpp | gguflite / its raw loop |", "|---|---|---|",
              f"| raw decode loop | {per_rep('gguflite raw', 'llama.cpp raw')} | 1.00x |"]
    for c in CONFIGS:
        lines.append(f"| generate {c} | "
                     f"{per_rep(f'gguflite generate {c}', f'llama.cpp generate {c}')} | "
                     f"{per_rep(f'gguflite generate {c}', 'gguflite raw')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "PATH"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gguflite-bench")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--from-json", type=Path, help="rewrite --out from a saved JSON")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.md")
    a = ap.parse_args()
    if a.worker:
        worker_main(a.worker[0], Path(a.worker[1]), a.threads)
        return
    if a.from_json:
        saved = json.loads(a.from_json.read_text())
        write_results(a.out, report(saved["startup"], saved["user_path"], a.threads))
        return
    from bench_runtime import make_files

    q8 = make_files(a.cache)["Q8_0"]
    s = startup(a.reps, a.threads) if not a.skip_startup else None
    print(json.dumps(s, indent=1, default=str)[:3000], flush=True)
    u = user_path(q8, a.reps, a.threads, a.n_gen)
    print(json.dumps(u, indent=1), flush=True)
    if s is not None:
        write_results(a.out, report(s, u, a.threads), {"startup": s, "user_path": u})
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
