"""Accuracy of the decode path (int8 activations, one token at a time) against a base model's
float-activation logits.

For each FILE, the logits of a text are computed twice: by the decode step, token by token (the
mat-vec kernels with the runtime's int8 activation quantization), and by one batched prefill
(BLAS over exactly dequantized weights, float activations). Both are compared with the base
file's prefill logits: KL(base || file), its 99th percentile and the top-1 agreement. The
prefill row is the file's weight error alone; the decode row adds the activation quantization.

    python benchmarks/decode_accuracy.py smol_q8_0.gguf smol_km4.gguf [--base SOURCE.gguf]
        [--tokens 200] [--text README.md]

(the base defaults to the embedded SmolLM2 Q4_1 file). Used for the activation-layout table
in benchmarks/results/km_kernels.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from gguflite.runtime import load

from gguflite.default_model import default_model_path


def log_softmax(z: np.ndarray) -> np.ndarray:
    """(t, vocab) float64 -> log-probabilities."""
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def logits(path: Path, ids: np.ndarray, decode: bool) -> np.ndarray:
    """(t, vocab) float64 logits of ``ids``: batched prefill, or the decode step per token."""
    with load(path, n_ctx=ids.size + 8) as m:
        if not decode:
            return m.logits(ids).astype(np.float64)
        rows = [m.backend.forward(ids[i : i + 1], i).reshape(-1).astype(np.float64)
                for i in range(ids.size)]
        return np.stack(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--base", type=Path, default=None, help="reference file (default SmolLM2)")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--text", type=Path, default=Path(__file__).parents[1] / "README.md")
    args = ap.parse_args()
    base = args.base or Path(default_model_path())
    with load(base, n_ctx=16) as m:
        ids = np.asarray(m.tokenizer.encode(args.text.read_text()[:20000]), np.int64)
    ids = ids[: args.tokens]
    ref = log_softmax(logits(base, ids, decode=False))
    print(f"base {base.name}, {ids.size} tokens of {args.text.name}")
    print("| file | path | KL mean | KL p99 | top-1 agreement |")
    print("|---|---|---|---|---|")
    for path in args.files:
        for decode in (False, True):
            q = log_softmax(logits(path, ids, decode))
            kl = (np.exp(ref) * (ref - q)).sum(-1)
            top1 = (ref.argmax(-1) == q.argmax(-1)).mean()
            name = "decode (int8 activations)" if decode else "prefill (float activations)"
            print(f"| {path.name} | {name} | {kl.mean():.4f} | {np.quantile(kl, 0.99):.3f} | "
                  f"{top1:.3f} |", flush=True)


if __name__ == "__main__":
    main()
