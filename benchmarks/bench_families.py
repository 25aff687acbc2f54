"""Every family on gguflite's runtime vs llama.cpp (llama-cpp-python), on the same files.

    python benchmarks/bench_families.py [--families qwen2,gemma3] [--types q8_0,q4_k_m]

For each family a random checkpoint of one realistic small shape (hidden 768, FFN 2048,
12 layers, 12 heads / 4 KV heads, head 64, vocabulary 32000: about 110M parameters, rows
multiples of 256 so Q4_K_M needs no fallback) is built with transformers
(tests/family_checkpoints.py), converted by gguflite to each type, and run by both engines,
each in its own worker process, alternating (``bench_runtime.bench_file``): pp128 prefill and
tg64 decode tok/s, medians of ``--reps``. Random weights decode at the same speed as trained
ones; the files are llama.cpp-loadable (tests/test_families_llamacpp.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

SHAPE = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
             num_attention_heads=12, num_key_value_heads=4, head_dim=64, vocab_size=32000,
             max_position_embeddings=4096, initializer_range=0.02)
FAMILY_SHAPE = {"gemma3": dict(query_pre_attn_scalar=64, sliding_window=512),
                "mistral": dict(sliding_window=None)}


def make_file(cache: Path, family: str, type_: str) -> Path:
    from family_checkpoints import family_checkpoint

    from gguflite.converters.convert import convert

    out = cache / f"{family}-{type_}.gguf"
    if out.exists():
        return out
    ck = cache / f"{family}-ckpt"
    if not (ck / "config.json").exists() or not list(ck.glob("*.safetensors")):
        family_checkpoint(ck, family, **SHAPE, **FAMILY_SHAPE.get(family, {}))
    # general.name "bench": llama.cpp special-cases Phi-3 vocabularies by a name containing
    # "phi3", which the small trained test tokenizer does not satisfy
    convert(ck, out, type=type_, name="bench")
    return out


def main() -> None:
    from bench_runtime import bench_file
    from family_checkpoints import FAMILIES
    from report import cpu_line, write_results

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(sorted(FAMILIES)))
    ap.add_argument("--types", default="q8_0,q4_k_m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "gguflite-bench-families")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/families.md")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    for family in args.families.split(","):
        for type_ in args.types.split(","):
            path = make_file(args.cache, family, type_)
            print(f"== {family} {type_}", file=sys.stderr)
            r = bench_file(f"{family} {type_}", path, threads=args.threads, reps=args.reps,
                           n_prompt=args.n_prompt, n_gen=args.n_gen, with_load=False)
            rows.append(r)
            print(json.dumps({k: r[k] for k in ("label", "pp", "tg")}), file=sys.stderr)
    lines = [
        "# Every family: gguflite vs llama.cpp", "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `python benchmarks/bench_families.py --families {args.families} "
        f"--types {args.types} --reps {args.reps}`",
        f"- machine: {cpu_line(args.threads)}, load average at start {load}",
        "- shape: hidden 768, FFN 2048, 12 layers, 12/4 heads of 64, vocabulary 32000 "
        "(random weights built with transformers, converted by gguflite)",
        "- each engine in its own worker process, alternating; medians; ratio = gguflite / "
        "llama.cpp (> 1: gguflite faster)", "",
        f"| family | type | pp{args.n_prompt} gguflite | pp llama.cpp | ratio | "
        f"tg{args.n_gen} gguflite | tg llama.cpp | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fam, typ = r["label"].split()
        pp, tg = r["pp"], r["tg"]
        lines.append(f"| {fam} | {typ} | {pp['gguflite']:.1f} | {pp['llama_cpp']:.1f} | "
                     f"{pp['gguflite'] / pp['llama_cpp']:.2f} | {tg['gguflite']:.1f} | "
                     f"{tg['llama_cpp']:.1f} | {tg['gguflite'] / tg['llama_cpp']:.2f} |")
    text = "\n".join(lines) + "\n"
    write_results(args.out, text, rows)
    print(text)


if __name__ == "__main__":
    main()
