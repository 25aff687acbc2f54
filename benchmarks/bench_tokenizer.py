"""Tokenizer speed on the SmolLM2 file (49k byte-level BPE) and a trained SentencePiece model,
side by side with llama.cpp (llama-cpp-python, vocab_only) and Hugging Face tokenizers.

    python benchmarks/bench_tokenizer.py [--repeat 5] [--out benchmarks/results/tokenizer.md]

Measured: building the tokenizer from metadata that is already open (and, separately, opening
the file), encoding a ~160 kB mixed text (prose, code, CJK, emoji; the corpus repeated, so
words recur as in real text) with special tokens parsed, and decoding the ids back. The
SentencePiece encoder caches word encodings: "cold" clears that cache before each run, "warm"
encodes the same text again (BPE has no such cache; both rows time the same thing). Ids are
checked to be identical to llama.cpp's first. Each timing is
the best of ``--repeat`` runs with the tools alternating; read the ratios, not the absolute
numbers (2 shared cores).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import llama_cpp  # noqa: E402
from gguflite.converters.tokenizer_export import export_tokenizer  # noqa: E402
from gguflite.runtime.tokenizer import Tokenizer  # noqa: E402
from helpers_tokenizers import CORPUS, TEST_STRINGS, make_spm_dir  # noqa: E402

import gguflite  # noqa: E402
from gguflite.constants import GGUFValueType as T  # noqa: E402
from gguflite.default_model import default_model_path  # noqa: E402


def best(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    times = {k: float("inf") for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - t0)
    return times


def bench_file(label: str, path: Path, text: str, repeat: int, out: io.StringIO) -> None:
    ll = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    f = gguflite.open(path)
    md = f.metadata
    tok = Tokenizer.from_metadata(md)
    ours = tok.encode(text)
    ref = ll.tokenize(text.encode(), add_bos=True, special=True)
    if ours != ref:
        raise SystemExit(f"{label}: ids differ from llama.cpp; fix that before timing")
    raw = text.encode()
    t = best(
        {
            "gguflite open + build": lambda: Tokenizer.from_metadata(gguflite.open(path).metadata),
            "gguflite build (metadata open)": lambda: Tokenizer.from_metadata(md),
            "llama.cpp load (vocab_only)": lambda: llama_cpp.Llama(
                model_path=str(path), vocab_only=True, verbose=False
            ),
        },
        repeat,
    )
    def cold() -> None:
        tok.clear_cache()  # SentencePiece caches words; time a first encode of the text
        tok.encode(text)

    enc = best(
        {
            "gguflite (cold word cache)": cold,
            "gguflite (warm word cache)": lambda: tok.encode(text),
            "llama.cpp": lambda: ll.tokenize(raw, add_bos=True, special=True),
        },
        repeat,
    )
    dec = best(
        {"gguflite": lambda: tok.decode(ours), "llama.cpp": lambda: ll.detokenize(ours)},
        repeat,
    )
    out.write(f"\n## {label}: {tok.n_vocab} tokens, {len(raw)} bytes -> {len(ours)} ids\n\n")
    out.write("| step | seconds | ratio to llama.cpp |\n|---|---:|---:|\n")
    base = t["llama.cpp load (vocab_only)"]
    for name, sec in t.items():
        out.write(f"| {name} | {sec:.4f} | {sec / base:.2f} |\n")
    for step, d in (("encode", enc), ("decode", dec)):
        for name, sec in d.items():
            out.write(f"| {step} {name} | {sec:.4f} | {sec / d['llama.cpp']:.2f} |\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing; the best is kept")
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    args = ap.parse_args()
    text = (CORPUS + "\n" + "\n".join(TEST_STRINGS) + "<|im_start|>user\nhi<|im_end|>\n") * 40
    out = io.StringIO()
    out.write(f"# Tokenizer speed ({datetime.date.today()}, {platform.machine()}, "
              f"llama-cpp-python {llama_cpp.__version__})\n")  # fmt: skip
    smollm2 = default_model_path()
    bench_file("SmolLM2-135M (byte-level BPE, smollm)", smollm2, text, args.repeat, out)
    with tempfile.TemporaryDirectory() as tmp:
        d = make_spm_dir(Path(tmp) / "spm", vocab_size=2000)
        items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
        path = Path(tmp) / "spm.gguf"
        with gguflite.GGUFWriter(path) as w:
            w.add("general.architecture", "llama", T.STRING)
            w.add_items(items)
        bench_file("trained SentencePiece (BPE, byte fallback)", path, text, args.repeat, out)
    print(out.getvalue())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(out.getvalue(), encoding="utf-8")


if __name__ == "__main__":
    main()
