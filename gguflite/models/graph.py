"""The forward pass of every family, written once over a small set of operations.

One block (x is the residual stream, n new tokens at positions pos0 .. pos0 + n - 1; the
bracketed steps run only when the family declares them, see ``HParams``)::

    h = rmsnorm(x) * attn_norm                                      (n, dim)
    q, k, v = Wq h [+ bq], Wk h [+ bk], Wv h [+ bv]                 (n, H, hd), (n, Hkv, hd) x2
    [q, k = rmsnorm(q) * q_norm, rmsnorm(k) * k_norm]               per head (qk_norm)
    a = attention(layer, q, k, v)                                   (n, H * hd)
        rope on the first n_rot dims (the layer's table, or none), the keys and values stored in
        the cache, softmax(q k^T * kq_scale) v over the cached positions the layer sees (causal,
        and within its sliding window if it has one), GQA: query head h reads kv head h // n_rep
    a = Wo a;  [a = rmsnorm(a) * post_attention_norm];  x = x + a
    h = rmsnorm(x) * ffn_norm
    f = Wdown (act(Wgate h) * Wup h);  [f = rmsnorm(f) * post_ffw_norm];  x = x + f

then ``logits = Wout (rmsnorm(x) * output_norm)``; the input is ``embed(ids) * embed_scale``.

A backend supplies ``Ops``; the weights are whatever its ``linear`` accepts (``Weights`` holds
them, loaded by ``weights.load_weights`` from the family's tensor table). The float64 oracle
(runtime/reference.py), the Numba engine's per-op path (runtime/numba_backend.py) and the torch
backend (runtime/torch_backend.py) all run this function; the Numba fused decode step
(runtime/decode.py) is this graph specialised for one token, and a test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .base import HParams


@dataclass
class BlockWeights:
    """One block's weights in the backend's representation (None: the family has none)."""

    attn_norm: Any  # (dim,)
    wq: Any  # (q_dim, dim)
    wk: Any  # (kv_dim, dim)
    wv: Any  # (kv_dim, dim)
    wo: Any  # (dim, q_dim)
    ffn_norm: Any  # (dim,)
    w_gate: Any  # (hidden, dim)
    w_up: Any  # (hidden, dim)
    w_down: Any  # (dim, hidden)
    bq: Any = None  # (q_dim,)
    bk: Any = None  # (kv_dim,)
    bv: Any = None  # (kv_dim,)
    q_norm: Any = None  # (head_dim,)
    k_norm: Any = None  # (head_dim,)
    post_attn_norm: Any = None  # (dim,)
    post_ffn_norm: Any = None  # (dim,)


@dataclass
class Weights:
    tok_embd: Any  # (vocab, dim), as the backend's embed reads it
    blocks: list[BlockWeights]
    output_norm: Any  # (dim,)
    output: Any  # (vocab, dim); token_embd when tied
    rope_factors: Any = None  # (n_rot // 2,) frequency divisors, or None


class Ops(Protocol):
    """What ``forward`` needs from a backend. Arrays are numpy or torch; ``+`` and ``*`` work."""

    def embed(self, ids: Any) -> Any:
        """(n,) ids -> (n, dim) rows of token_embd."""

    def rmsnorm(self, x: Any, w: Any) -> Any:
        """x / sqrt(mean(x**2, last axis) + eps) * w, any leading shape."""

    def linear(self, w: Any, x: Any) -> Any:
        """(n, in) -> (n, out) = x W^T."""

    def attention(self, layer: int, q: Any, k: Any, v: Any, pos0: int) -> Any:
        """(n, H, hd), (n, Hkv, hd) x2 -> (n, H * hd); rope, cache, causal window (above)."""

    def glu(self, gate: Any, up: Any) -> Any:
        """act(gate) * up, act the family's (silu or gelu_tanh)."""


def forward(ops: Ops, w: Weights, hp: HParams, ids: Any, pos0: int, *,
            all_logits: bool) -> Any:
    """Logits (n, vocab) if all_logits else (1, vocab) of the last token; fills the cache."""
    n = ids.shape[0]
    x = ops.embed(ids)  # (n, dim)
    if hp.embed_scale != 1.0:
        x = x * hp.embed_scale
    for layer, b in enumerate(w.blocks):
        h = ops.rmsnorm(x, b.attn_norm)  # (n, dim)
        q, k, v = ops.linear(b.wq, h), ops.linear(b.wk, h), ops.linear(b.wv, h)
        if hp.attn_bias:
            q, k, v = q + b.bq, k + b.bk, v + b.bv
        q = q.reshape(n, hp.n_head, hp.head_dim)  # (n, H, hd)
        k = k.reshape(n, hp.n_kv_head, hp.head_dim)  # (n, Hkv, hd)
        v = v.reshape(n, hp.n_kv_head, hp.head_dim)
        if hp.qk_norm:
            q, k = ops.rmsnorm(q, b.q_norm), ops.rmsnorm(k, b.k_norm)
        a = ops.linear(b.wo, ops.attention(layer, q, k, v, pos0))  # (n, dim)
        if hp.post_norms:
            a = ops.rmsnorm(a, b.post_attn_norm)
        x = x + a
        h = ops.rmsnorm(x, b.ffn_norm)
        f = ops.linear(b.w_down, ops.glu(ops.linear(b.w_gate, h), ops.linear(b.w_up, h)))
        if hp.post_norms:
            f = ops.rmsnorm(f, b.post_ffn_norm)
        x = x + f
    if not all_logits:
        x = x[n - 1:]  # (1, dim)
    return ops.linear(w.output, ops.rmsnorm(x, w.output_norm))  # (n | 1, vocab)
