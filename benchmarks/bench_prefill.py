"""Prefill speed as issue 13 states it: gguflite vs llama.cpp (llama-cpp-python) on the same files.

    python benchmarks/bench_prefill.py [--threads 2] [--reps 3] [--skip-1b]

Files:

- SmolLM2-135M-Instruct: Q4_1 as shipped, and llama.cpp's own Q8_0 and Q4_K_M of it
  (bench_runtime.make_files), at pp128 and pp512;
- a TinyLlama-1.1B-shaped Llama (hidden 2048, FFN 5632, 22 layers, 32 heads / 4 KV heads,
  vocabulary 32000) with random weights built with transformers (tests/family_checkpoints.py)
  and converted by gguflite to Q8_0 and Q4_K_M, at pp256 (random weights prefill at the speed of
  trained ones).

Each engine runs in its own worker process (bench_runtime.Worker: gguflite's ``Model.eval`` of
the prompt, llama.cpp's ``Llama.eval``), the two alternating per repetition; medians of
``--reps``, ratio = gguflite / llama.cpp (> 1: gguflite faster).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

TINYLLAMA_SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                       num_attention_heads=32, num_key_value_heads=4, head_dim=64,
                       vocab_size=32000, max_position_embeddings=2048, initializer_range=0.02)


def tinyllama_files(cache: Path) -> dict[str, Path]:
    """The 1.1B-shaped files (built once into ``cache``)."""
    from family_checkpoints import family_checkpoint

    from gguflite.converters.convert import convert

    ck = cache / "tinyllama-shape-ckpt"
    files = {}
    for type_ in ("q8_0", "q4_k_m"):
        out = cache / f"tinyllama-shape-{type_}.gguf"
        if not out.exists():
            if not (ck / "config.json").exists() or not list(ck.glob("*.safetensors")):
                family_checkpoint(ck, "llama", **TINYLLAMA_SHAPE)
            convert(ck, out, type=type_, name="bench")
        files[f"1.1B-shape {type_.upper()}"] = out
    return files


def main() -> None:
    from bench_runtime import Worker, make_files
    from report import cpu_line, write_results

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gguflite-bench")
    ap.add_argument("--skip-1b", action="store_true", help="Only the SmolLM2 files.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prefill.md")
    args = ap.parse_args()
    cases = [(label, path, n) for label, path in make_files(args.cache).items()
             for n in (128, 512)]
    if not args.skip_1b:
        cases += [(label, path, 256) for label, path in tinyllama_files(args.cache).items()]
    load0 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for label, path, n in cases:
        ours = Worker("gguflite", path, args.threads)
        ref = Worker("llama_cpp", path, args.threads)
        for w in (ours, ref):  # warm-up: first-call costs, page faults
            w.run("pp", n, 0)
        tps: dict[str, list[float]] = {"gguflite": [], "llama_cpp": []}
        for r in range(args.reps):
            for name, w in (("gguflite", ours), ("llama_cpp", ref)):
                tps[name].append(n / w.run("pp", n, r + 1)["seconds"])
        ours.close()
        ref.close()
        a, b = statistics.median(tps["gguflite"]), statistics.median(tps["llama_cpp"])
        rows.append(f"| {label} | pp{n} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
        print(rows[-1], flush=True)
    load1 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    cmd = "python benchmarks/bench_prefill.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        "# Prefill: gguflite vs llama.cpp", "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"commit {commit}; load average {load0} at start, {load1} at the end",
        f"- command: `{cmd.strip()}`",
        f"- machine: {cpu_line(args.threads)}",
        "- each engine in its own worker process, alternating; medians of "
        f"{args.reps}; tokens/s; ratio = gguflite / llama.cpp (> 1: gguflite faster)", "",
        "| file | test | gguflite | llama.cpp | ratio |", "|---|---|---:|---:|---:|",
        *rows, ""])
    write_results(args.out, text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
