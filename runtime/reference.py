"""The test oracle: a plain NumPy forward pass of a Llama GGUF over dequantized weights.

No cache, no fusion, no threads: the whole sequence at once, written as the math reads, in
float64 (or float32). Weights are dequantized with ``gguflite.quants`` (the codecs' NumPy
reference path), so the fast runtime's logits can be compared to it on any tensor type.

    >>> with gguflite.open(path) as f:
    ...     logits = reference_logits(f, [1, 2, 3])      # (3, vocab) float64
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gguflite.reader import GGUFFile

from .hparams import hparams_from_metadata


def _w(f: GGUFFile, name: str, dtype: type) -> np.ndarray:
    return f.dequantize(name).astype(dtype)


def rope_reference(x: np.ndarray, positions: np.ndarray, theta: float, freq_scale: float,
                   freq_factors: np.ndarray | None) -> np.ndarray:
    """llama.cpp "normal" RoPE: rotate adjacent pairs of each head.

    x: (n, heads, head_dim); positions: (n,) -> (n, heads, head_dim).
    """
    hd = x.shape[-1]
    inv_freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # (hd/2,)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors.astype(np.float64)
    angle = (positions.astype(np.float64) * freq_scale)[:, None] * inv_freq  # (n, hd/2)
    cos = np.cos(angle)[:, None, :].astype(x.dtype)  # (n, 1, hd/2)
    sin = np.sin(angle)[:, None, :].astype(x.dtype)
    x0, x1 = x[..., 0::2], x[..., 1::2]  # (n, heads, hd/2) each
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def reference_logits(f: GGUFFile, ids: Sequence[int], *, dtype: type = np.float64) -> np.ndarray:
    """Logits of every position of ``ids`` (n,) -> (n, vocab), computed from scratch."""
    hp = hparams_from_metadata(f.metadata)
    ids = np.asarray(ids, dtype=np.int64)  # (n,)
    n = ids.shape[0]
    ff = _w(f, "rope_freqs.weight", np.float64) if "rope_freqs.weight" in f.tensors else None
    emb = _w(f, "token_embd.weight", dtype)  # (vocab, dim)
    x = emb[ids]  # (n, dim)
    pos = np.arange(n)

    def rmsnorm(v: np.ndarray, w: np.ndarray) -> np.ndarray:  # (n, dim) -> (n, dim)
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + hp.norm_eps) * w

    causal = np.triu(np.full((n, n), -np.inf, dtype=dtype), k=1)  # (n, n) 0 on/below diag
    for layer in range(hp.n_layer):
        b = f"blk.{layer}."
        h = rmsnorm(x, _w(f, b + "attn_norm.weight", dtype))  # (n, dim)
        q = (h @ _w(f, b + "attn_q.weight", dtype).T).reshape(n, hp.n_head, hp.head_dim)
        k = (h @ _w(f, b + "attn_k.weight", dtype).T).reshape(n, hp.n_kv_head, hp.head_dim)
        v = (h @ _w(f, b + "attn_v.weight", dtype).T).reshape(n, hp.n_kv_head, hp.head_dim)
        q = rope_reference(q, pos, hp.rope_theta, hp.rope_freq_scale, ff)
        k = rope_reference(k, pos, hp.rope_theta, hp.rope_freq_scale, ff)
        k = np.repeat(k, hp.n_rep, axis=1)  # (n, n_head, hd): query head h reads kv head h // n_rep
        v = np.repeat(v, hp.n_rep, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) * dtype(hp.kq_scale) + causal  # (n_head, n, n)
        scores = scores - scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p = p / p.sum(axis=-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", p, v).reshape(n, hp.q_dim)  # (n, q_dim)
        x = x + attn @ _w(f, b + "attn_output.weight", dtype).T  # (n, dim)
        h = rmsnorm(x, _w(f, b + "ffn_norm.weight", dtype))
        gate = h @ _w(f, b + "ffn_gate.weight", dtype).T  # (n, hidden)
        up = h @ _w(f, b + "ffn_up.weight", dtype).T  # (n, hidden)
        x = x + (gate / (1 + np.exp(-gate)) * up) @ _w(f, b + "ffn_down.weight", dtype).T
    x = rmsnorm(x, _w(f, "output_norm.weight", dtype))  # (n, dim)
    out_name = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
    return x @ _w(f, out_name, dtype).T  # (n, vocab)
