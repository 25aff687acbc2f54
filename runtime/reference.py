"""The test oracle: ``gguflite.models.graph.forward`` over dequantized weights in NumPy.

No cache reuse, no fusion, no threads: the whole sequence at once, in float64 (or float32), with
weights decoded by ``gguflite.quants`` (the codecs' NumPy reference path), so the fast backends'
logits can be compared to it on any tensor type and any family.

    >>> with gguflite.open(path) as f:
    ...     logits = reference_logits(f, [1, 2, 3])      # (3, vocab) float64
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gguflite.models import family_for_arch
from gguflite.models.base import ROPE_NONE, HParams
from gguflite.models.graph import forward
from gguflite.models.rope import rope_tables
from gguflite.models.weights import load_weights
from gguflite.reader import GGUFFile


def rope_reference(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> np.ndarray:
    """Rotate the first 2 * cos.shape[-1] dims of each head; x (n, heads, hd), cos/sin (n, r/2).

    Pairs (2i, 2i+1) ("normal", llama) or (i, i + r/2) (NEOX)."""
    half = cos.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]  # (n, 1, half)
    out = x.copy()
    if neox:
        x0, x1 = x[..., :half], x[..., half:2 * half]
        out[..., :half], out[..., half:2 * half] = x0 * c - x1 * s, x0 * s + x1 * c
    else:
        x0, x1 = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        out[..., 0:2 * half:2], out[..., 1:2 * half:2] = x0 * c - x1 * s, x0 * s + x1 * c
    return out


class NumpyOps:
    """``graph.Ops`` in plain NumPy, for one whole sequence starting at position 0."""

    def __init__(self, hp: HParams, emb: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                 dtype: Any):
        self.hp, self.emb, self.cos, self.sin, self.dtype = hp, emb, cos, sin, dtype

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.emb[ids]  # (n, dim)

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.hp.norm_eps) * w

    def linear(self, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return x @ w.T

    def glu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        if self.hp.act == "gelu_tanh":
            c = math.sqrt(2 / math.pi)
            return 0.5 * gate * (1 + np.tanh(c * (gate + 0.044715 * gate ** 3))) * up
        return gate / (1 + np.exp(-gate)) * up

    def attention(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                  pos0: int) -> np.ndarray:
        hp = self.hp
        n = q.shape[0]
        table = hp.layer_rope[layer]
        if table != ROPE_NONE:
            cos = self.cos[table, pos0:pos0 + n].astype(self.dtype)  # (n, n_rot/2)
            sin = self.sin[table, pos0:pos0 + n].astype(self.dtype)
            q, k = (rope_reference(t, cos, sin, hp.rope_neox) for t in (q, k))
        k = np.repeat(k, hp.n_rep, axis=1)  # (n, H, hd): query head h reads kv head h // n_rep
        v = np.repeat(v, hp.n_rep, axis=1)
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        visible = j <= i  # causal
        if hp.layer_window[layer]:
            visible &= i - j < hp.layer_window[layer]
        mask = np.where(visible, 0.0, -np.inf).astype(self.dtype)  # (n, n)
        scores = np.einsum("qhd,khd->hqk", q, k) * self.dtype(hp.kq_scale) + mask
        scores = scores - scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p = p / p.sum(axis=-1, keepdims=True)
        return np.einsum("hqk,khd->qhd", p, v).reshape(n, hp.q_dim)  # (n, q_dim)


def reference_logits(f: GGUFFile, ids: Sequence[int], *, dtype: type = np.float64) -> np.ndarray:
    """Logits of every position of ``ids`` (n,) -> (n, vocab), computed from scratch."""
    fam = family_for_arch(f.metadata.get("general.architecture"))
    hp = fam.from_metadata(f.metadata)
    ids = np.asarray(ids, dtype=np.int64)  # (n,)

    def dense(name: str, rows: tuple[int, int] | None = None, shape: Any = None) -> np.ndarray:
        w = f.dequantize(name).astype(dtype)
        return w if rows is None else w[rows[0]:rows[1]]

    w = load_weights(f, fam, hp, n_ctx=ids.shape[0], linear=dense, vector=dense, table=dense)
    cos, sin = rope_tables(hp, ids.shape[0], w.rope_factors)
    ops = NumpyOps(hp, w.tok_embd, cos, sin, dtype)
    return forward(ops, w, hp, ids, 0, all_logits=True)  # (n, vocab)
