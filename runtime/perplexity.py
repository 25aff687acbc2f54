"""Perplexity and KL divergence, with llama.cpp's definitions (tools/perplexity/perplexity.cpp).

The text is tokenized once (with BOS when the file asks for it) and cut into
``n_chunk = len(tokens) // ctx`` chunks of ``ctx`` tokens. Each chunk is run from an empty cache
with its first token replaced by BOS (when the file adds one), and only the second half is
scored, so every scored token has at least ctx/2 tokens of context::

    first = ctx // 2
    for j in first .. ctx - 2:  nll_j = logsumexp(logits[j]) - logits[j, tokens[j + 1]]
    PPL = exp(mean nll)         +/- PPL * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1))

With a reference model (``--kl-divergence`` in llama.cpp) the same positions also give, from
the reference's log-probabilities ``lp_base`` and this model's ``lp``::

    KLD_j      = sum_v exp(lp_base[v]) * (lp_base[v] - lp[v])       (mean +/- std error)
    same top   = fraction of positions where argmax(logits) == argmax(logits_base)

llama.cpp stores the reference log-probabilities rounded to 16 bits and drops terms with
``lp_base < -16``; here both models run in the same process and the sums are exact (float64).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gguflite.errors import ModelError

from .engine import Model


@dataclass
class PerplexityResult:
    ppl: float
    ppl_stderr: float
    nll_mean: float
    n_chunks: int
    ctx: int
    n_scored: int  # tokens scored (ctx - 1 - ctx // 2 per chunk)
    n_tokens: int  # tokens in the text
    seconds: float
    # With a reference model:
    ppl_base: float | None = None
    kld_mean: float | None = None
    kld_stderr: float | None = None
    kld_max: float | None = None
    same_top: float | None = None  # fraction in [0, 1]

    @property
    def tokens_per_second(self) -> float:
        return self.n_chunks * self.ctx / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"tokens_per_second": self.tokens_per_second}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(n, vocab) -> (n, vocab) float64 log-probabilities."""
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)  # (n, 1)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def chunk_tokens(model: Model, text_or_ids: str | Sequence[int],
                 ctx: int) -> tuple[list[np.ndarray], int]:
    """The ctx-token chunks llama.cpp scores (first token of each replaced by BOS if the file
    adds one), and the number of tokens in the text."""
    tok = model.tokenizer
    if isinstance(text_or_ids, str):
        tokens = np.asarray(tok.encode(text_or_ids, add_special=True), dtype=np.int64)
    else:
        tokens = np.asarray(text_or_ids, dtype=np.int64)
    if ctx < 4:
        raise ModelError(f"the perplexity context must be >= 4 tokens, got {ctx}")
    if ctx > model.n_ctx:
        raise ModelError(f"perplexity context {ctx} is larger than the model's n_ctx "
                         f"{model.n_ctx}; load the model with n_ctx >= {ctx}")
    if tokens.size < 2 * ctx:
        raise ModelError(f"the text has {tokens.size} tokens; perplexity with a context of "
                         f"{ctx} needs at least {2 * ctx} (llama.cpp's rule)")
    add_bos = tok.vocab.add_bos and tok.bos_id is not None
    chunks = []
    for i in range(tokens.size // ctx):
        chunk = tokens[i * ctx:(i + 1) * ctx].copy()  # (ctx,)
        if add_bos:
            chunk[0] = tok.bos_id
        chunks.append(chunk)
    return chunks, int(tokens.size)


def perplexity(model: Model, text_or_ids: str | Sequence[int], *, ctx: int = 512,
               n_chunks: int | None = None, base: Model | None = None,
               progress: Callable[[int, int, float], None] | None = None) -> PerplexityResult:
    """Perplexity of ``model`` on a text (or token ids), optionally KL vs ``base``.

    ``progress(done_chunks, total_chunks, running_ppl)`` is called after each chunk.
    """
    t0 = time.perf_counter()
    chunks, n_tokens = chunk_tokens(model, text_or_ids, ctx)
    if n_chunks is not None:
        chunks = chunks[:max(1, n_chunks)]
    if base is not None:
        if base.hparams.vocab_size != model.hparams.vocab_size:
            raise ModelError(f"the reference model has {base.hparams.vocab_size} tokens, this "
                             f"one {model.hparams.vocab_size}: KL needs the same vocabulary")
        if ctx > base.n_ctx:
            raise ModelError(f"perplexity context {ctx} is larger than the reference's n_ctx")
    first = ctx // 2
    nll_all, nll_base_all, kld_all, same = [], [], [], 0
    for i, chunk in enumerate(chunks):
        lp = log_softmax(model.logits(chunk)[first:ctx - 1])  # (ctx - 1 - first, vocab)
        target = chunk[first + 1:]  # (ctx - 1 - first,)
        nll = -lp[np.arange(target.size), target]
        nll_all.append(nll)
        if base is not None:
            lb = log_softmax(base.logits(chunk)[first:ctx - 1])
            nll_base_all.append(-lb[np.arange(target.size), target])
            kld_all.append((np.exp(lb) * (lb - lp)).sum(axis=-1))  # (ctx - 1 - first,)
            same += int((lp.argmax(axis=-1) == lb.argmax(axis=-1)).sum())
        if progress is not None:
            progress(i + 1, len(chunks), math.exp(float(np.concatenate(nll_all).mean())))
    nll_cat = np.concatenate(nll_all)
    count = nll_cat.size
    mean = float(nll_cat.mean())
    var = float((nll_cat ** 2).mean() - mean * mean)
    ppl = math.exp(mean)
    result = PerplexityResult(
        ppl=ppl, ppl_stderr=ppl * math.sqrt(max(var, 0.0) / (count - 1)) if count > 1 else 0.0,
        nll_mean=mean, n_chunks=len(chunks), ctx=ctx, n_scored=count,
        n_tokens=n_tokens,
        seconds=time.perf_counter() - t0,
    )
    if base is not None:
        kld = np.concatenate(kld_all)
        result.ppl_base = math.exp(float(np.concatenate(nll_base_all).mean()))
        result.kld_mean = float(kld.mean())
        result.kld_stderr = float(kld.std(ddof=1) / math.sqrt(count)) if count > 1 else 0.0
        result.kld_max = float(kld.max())
        result.same_top = same / count
        result.seconds = time.perf_counter() - t0
    return result
