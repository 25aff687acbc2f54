"""The quant ladder: decode of llama.cpp's own Q5_K_M, Q3_K_M and IQ4_XS files of SmolLM2,
gguflite vs llama.cpp (llama-cpp-python), same run.

    python benchmarks/bench_ladder.py [--threads 2] [--reps 3] [--types Q5_K_M,IQ4_XS]

The files are made once into ``--cache`` by ``llama_cpp.llama_model_quantize`` from the shipped
SmolLM2-135M-Instruct Q4_1 (``bench_runtime.make_files``; requantized: fine for speed, not for
quality). SmolLM2's 576-wide rows are not multiples of 256, so llama.cpp falls back there
(Q5_K -> Q5_1, Q3_K and IQ4_XS -> IQ4_NL, Q6_K -> Q8_0) and keeps the super-block types for
the 1536-wide ffn_down: every file mixes both kinds of kernel. Each file runs through
``bench_runtime.bench_file`` (each engine in its own worker process, alternating, medians of
``--reps``); the table goes to benchmarks/results/ladder.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]

from report import cpu_line, write_results  # noqa: E402

LADDER = {"Q5_K_M": 17, "Q3_K_M": 12, "IQ4_XS": 30}  # llama.h enum llama_ftype


def cpu_ms_per_token(engine: str, path: Path, n: int, reps: int) -> float:
    """Best CPU milliseconds (time.process_time) per decoded token, 1 thread, in a fresh
    process: CPU time, unlike wall time, is not taken by other jobs on a shared machine."""
    code = CPU_SNIPPET.format(engine=engine, path=str(path), n=n, reps=reps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip().splitlines()[-1])


CPU_SNIPPET = """
import time
ids = [(7 * i + 5) % 1000 + 5 for i in range({n})]
if "{engine}" == "gguflite":
    from gguflite.runtime import load
    m = load("{path}", threads=1, n_ctx=512)
    def run():
        for pos, t in enumerate(ids):
            m.backend.forward([t], pos)
else:
    import llama_cpp
    llm = llama_cpp.Llama("{path}", n_threads=1, n_threads_batch=1, n_ctx=512, verbose=False)
    def run():
        llm.reset()
        llm._ctx.kv_cache_clear()
        for t in ids:
            llm.eval([t])
run()
best = float("inf")
for _ in range({reps}):
    t0 = time.process_time()
    run()
    best = min(best, time.process_time() - t0)
print(1e3 * best / {n})
"""


def main() -> None:
    from bench_runtime import bench_file, make_files

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", default=",".join(LADDER))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gguflite-bench")
    ap.add_argument("--cpu-reps", type=int, default=3,
                    help="repetitions of the 1-thread CPU-time decode (0: skip)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ladder.md")
    args = ap.parse_args()
    types = args.types.split(",")
    unknown = set(types) - set(LADDER)
    if unknown:
        raise SystemExit(f"--types: unknown {sorted(unknown)}; choose from {list(LADDER)}")
    # the wait policy an idle machine gets (threads.py turns it passive when the load at start
    # exceeds the cores; llama.cpp's threads spin regardless): both engines on the same footing
    os.environ.setdefault("GGUFLITE_OMP_WAIT", "default")
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    files = make_files(args.cache, {t: LADDER[t] for t in types})
    rows = []
    for label in types:
        print(f"== {label}", file=sys.stderr)
        r = bench_file(label, files[label], threads=args.threads, reps=args.reps,
                       n_prompt=args.n_prompt, n_gen=args.n_gen, with_load=False)
        if args.cpu_reps:
            r["cpu_ms_per_token"] = {e: cpu_ms_per_token(e, files[label], args.n_gen,
                                                         args.cpu_reps)
                                     for e in ("gguflite", "llama.cpp")}
        rows.append(r)
        print(json.dumps({k: r.get(k) for k in ("label", "types", "pp", "tg",
                                                 "cpu_ms_per_token")}), file=sys.stderr)
    load_end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    lines = [
        "# The quant ladder on SmolLM2-135M: gguflite vs llama.cpp", "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `{cmd}`",
        f"- machine: {cpu_line(args.threads)}; load average (1/5/15 min) at start "
        f"{load_start}, at end {load_end}",
        "- files: llama.cpp's `llama_model_quantize` of the shipped Q4_1 (allow_requantize); "
        "576-wide rows fall back (Q5_K -> Q5_1, Q3_K / IQ4_XS -> IQ4_NL, Q6_K -> Q8_0)",
        f"- gguflite workers: GGUFLITE_OMP_WAIT={os.environ['GGUFLITE_OMP_WAIT']} (default: "
        "libgomp's spin-then-sleep, what an idle machine gets; llama.cpp's threads spin too)",
        f"- each engine in its own worker process, alternating, {args.reps} repetitions: the best "
        "(noise on a shared machine only ever takes speed away) and the median; ratio = "
        f"gguflite / llama.cpp (> 1: gguflite faster); tg: {args.n_gen} "
        "tokens one at a time from an empty cache (gguflite: the fused decode step; llama.cpp: "
        f"`Llama.eval` per token); pp: {args.n_prompt} tokens from an empty cache", "",
        f"| file | tensor types | tg{args.n_gen} gguflite best | llama.cpp best | ratio | "
        f"tg gguflite median | llama.cpp median | ratio | pp{args.n_prompt} gguflite best | "
        "llama.cpp best | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tg, pp = r["tg"], r["pp"]
        best = [max(d[k]) for d in (tg, pp) for k in ("all_gguflite", "all_llama_cpp")]
        lines.append(f"| {r['label']} | {', '.join(r['types'])} | {best[0]:.1f} | "
                     f"{best[1]:.1f} | **{best[0] / best[1]:.2f}** | {tg['gguflite']:.1f} | "
                     f"{tg['llama_cpp']:.1f} | {tg['gguflite'] / tg['llama_cpp']:.2f} | "
                     f"{best[2]:.1f} | {best[3]:.1f} | {best[2] / best[3]:.2f} |")
    if args.cpu_reps:
        lines += ["", f"tokens/s. Decode on 1 thread in CPU time (time.process_time, best of "
                  f"{args.cpu_reps} x {args.n_gen} tokens, fresh process per engine): what each "
                  "engine costs, whatever else runs on the machine:", "",
                  "| file | gguflite ms/token | llama.cpp ms/token | speed ratio |",
                  "|---|---:|---:|---:|"]
        for r in rows:
            c = r["cpu_ms_per_token"]
            lines.append(f"| {r['label']} | {c['gguflite']:.2f} | {c['llama.cpp']:.2f} | "
                         f"**{c['llama.cpp'] / c['gguflite']:.2f}** |")
    lines += ["", "gguflite decode step, ms per token by op (tg, timers on):", ""]
    ops = sorted({k for r in rows for k in r["decode_ms_per_op"]})
    lines += ["| file | total | " + " | ".join(ops) + " |", "|---|---:|" + "---:|" * len(ops)]
    for r in rows:
        d = r["decode_ms_per_op"]
        lines.append(f"| {r['label']} | {r['decode_ms_total']:.2f} | "
                     + " | ".join(f"{d.get(k, 0.0):.2f}" for k in ops) + " |")
    text = "\n".join(lines) + "\n"
    write_results(args.out, text, rows)
    print(text)


if __name__ == "__main__":
    main()
