"""The Llama decode step (one token) as a single Numba call: every layer, every mat-vec.

Python costs a few microseconds per call into Numba; a 30-layer model makes ~10 calls per layer,
which is a large share of a 5 ms token. Here the whole block loop of ``llama.py`` runs inside one
compiled function that calls the kernels' drivers (``kernels.dispatch``: the same fused
dequantize-and-dot row kernels ``Linear.matvec`` uses, so the numbers are identical) and the ops
of ``ops.py``. Weights are passed as one typed list of flat read-only uint8 arrays, in the order

    ws[7 l + 0 .. 6] = attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down of block l
    ws[7 n_layer]    = output (token_embd when tied)

with their type ids (``kinds``) and row sizes in bytes (``row_bytes``), both (7 n_layer + 1,).

Numba caches ``decode_step`` with the kernels it calls compiled in, keyed on this file's text
only. ``SOURCES_FINGERPRINT`` below hashes the modules it inlines (``kernels/dispatch.py``, which
carries its own fingerprint of the row kernels, and ``ops.py``), so any edit there must change
this file too (tests/test_runtime_model.py checks it is current) and no stale compiled step is
ever loaded. tests/test_runtime_model.py also compares this path with the per-op path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numba.typed import List

from . import ops
from .kernels import dispatch

N_PER_BLOCK = 7

# sha256 of the text of the inlined modules; recompute with sources_fingerprint().
SOURCES_FINGERPRINT = "5520a1ab300bbf6a"
INLINED_FILES = ("kernels/dispatch.py", "ops.py")


def sources_fingerprint() -> str:
    """sha256 (16 hex digits) of INLINED_FILES, for SOURCES_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for rel in INLINED_FILES:
        h.update((Path(__file__).parent / rel).read_bytes())
    return h.hexdigest()[:16]


@njit(cache=True)
def _matvec(kind: int, w: np.ndarray, row_bytes: int, x: np.ndarray, y: np.ndarray,
            scratch: np.ndarray, kset: Any) -> None:
    """y (rows,) = W x (n,) for one weight."""
    dispatch.matvec_one(kind, w, y, row_bytes, x, scratch, kset)


@njit(cache=True)
def _matvec2(ws, kinds, row_bytes, i, x, y0, y1, scratch, empty_w, empty_y, kset) -> None:
    """y0 = W_i x, y1 = W_{i+1} x: one parallel region when the two share a type."""
    if kinds[i] == kinds[i + 1] and row_bytes[i] == row_bytes[i + 1]:
        dispatch.matvec_group(kinds[i], (ws[i], ws[i + 1], empty_w, empty_w),
                              (y0, y1, empty_y, empty_y), row_bytes[i], x, scratch, kset)
    else:
        _matvec(kinds[i], ws[i], row_bytes[i], x, y0, scratch, kset)
        _matvec(kinds[i + 1], ws[i + 1], row_bytes[i + 1], x, y1, scratch, kset)


@njit(cache=True)
def _matvec3(ws, kinds, row_bytes, i, x, y0, y1, y2, scratch, empty_w,
             empty_y, kset) -> None:
    """y0, y1, y2 = W_i x, W_{i+1} x, W_{i+2} x (q, k, v)."""
    if (kinds[i] == kinds[i + 1] == kinds[i + 2]
            and row_bytes[i] == row_bytes[i + 1] == row_bytes[i + 2]):
        dispatch.matvec_group(kinds[i], (ws[i], ws[i + 1], ws[i + 2], empty_w),
                              (y0, y1, y2, empty_y), row_bytes[i], x, scratch, kset)
    else:
        _matvec2(ws, kinds, row_bytes, i, x, y0, y1, scratch, empty_w, empty_y, kset)
        _matvec(kinds[i + 2], ws[i + 2], row_bytes[i + 2], x, y2, scratch, kset)


@njit(cache=True)
def decode_step(x, ws, kinds, row_bytes, attn_norm, ffn_norm, out_norm, eps, cos, sin,
                k_cache, v_cache, pos, kq_scale, xb, q, k, v, att, gate, up, hb, delta,
                logits, scores, s_dim, s_q, s_hidden, empty_w, empty_y, kset) -> None:
    """Run the embedded token x through every block and the output head.

    Parameters
    ----------
    x : (dim,) f32
        The token's embedding; becomes the final residual stream.
    ws, kinds, row_bytes
        The weights (module docstring).
    attn_norm, ffn_norm : (n_layer, dim) f32; out_norm : (dim,) f32
    eps, kq_scale : float
    cos, sin : (n_ctx, head_dim // 2) f32
    k_cache, v_cache : (n_layer, n_kv_head, n_ctx, head_dim) f32
    pos : int
        The token's position.
    xb : (dim,); q : (1, n_head, hd); k, v : (1, n_kv_head, hd); att : (1, q_dim);
    gate, up, hb : (hidden,); delta : (dim,); logits : (vocab,); scores : (n_head, n_ctx)
        Buffers, all f32.
    s_dim, s_q, s_hidden : uint8
        Activation scratch for inputs of width dim, q_dim and hidden.
    kset : dispatch.Kinds
        The set of ``kinds``: only their kernels are compiled into the step.
    """
    n_layer = attn_norm.shape[0]
    q1 = q.reshape(q.size)  # (q_dim,) views of the attention buffers
    k1 = k.reshape(k.size)  # (kv_dim,)
    v1 = v.reshape(v.size)
    att1 = att.reshape(att.size)  # (q_dim,)
    for layer in range(n_layer):
        i = N_PER_BLOCK * layer
        ops._rmsnorm_row(x, attn_norm[layer], eps, xb)  # (dim,)
        _matvec3(ws, kinds, row_bytes, i, xb, q1, k1, v1, s_dim, empty_w, empty_y, kset)
        ops.attention(q, k, v, cos, sin, k_cache[layer], v_cache[layer], pos, kq_scale, att,
                      scores)  # (1, q_dim)
        _matvec(kinds[i + 3], ws[i + 3], row_bytes[i + 3], att1, delta, s_q, kset)
        for j in range(x.shape[0]):
            x[j] += delta[j]
        ops._rmsnorm_row(x, ffn_norm[layer], eps, xb)
        _matvec2(ws, kinds, row_bytes, i + 4, xb, gate, up, s_dim, empty_w, empty_y, kset)
        for j in range(gate.shape[0]):  # silu(gate) * up
            g = gate[j]
            hb[j] = g / (np.float32(1.0) + np.exp(-g)) * up[j]
        _matvec(kinds[i + 6], ws[i + 6], row_bytes[i + 6], hb, delta, s_hidden, kset)
        for j in range(x.shape[0]):
            x[j] += delta[j]
    ops._rmsnorm_row(x, out_norm, eps, xb)
    o = N_PER_BLOCK * n_layer
    _matvec(kinds[o], ws[o], row_bytes[o], xb, logits, s_dim, kset)


class DecodePlan:
    """The arguments of ``decode_step`` that do not change from token to token."""

    def __init__(self, blocks: list[Any], output: Any, attn_norm: np.ndarray,
                 ffn_norm: np.ndarray, out_norm: np.ndarray):
        lins = [lin for b in blocks
                for lin in (b.wq, b.wk, b.wv, b.wo, b.w_gate, b.w_up, b.w_down)] + [output]
        self.ws = List()
        for lin in lins:
            self.ws.append(lin._w)  # flat read-only uint8 view of the mapped weight
        self.kinds = np.array([lin.kind for lin in lins], np.int64)
        self.kset = dispatch.kinds_of(*self.kinds.tolist())  # the kernels to compile
        self.row_bytes = np.array([lin.row_bytes for lin in lins], np.int64)
        self.attn_norm = attn_norm  # (n_layer, dim)
        self.ffn_norm = ffn_norm  # (n_layer, dim)
        self.out_norm = out_norm  # (dim,)
        dim, q_dim = blocks[0].wq.in_features, blocks[0].wo.in_features
        hidden = blocks[0].w_down.in_features
        self.s_dim = np.zeros(dispatch.scratch_bytes(dim), np.uint8)
        self.s_q = np.zeros(dispatch.scratch_bytes(q_dim), np.uint8)
        self.s_hidden = np.zeros(dispatch.scratch_bytes(hidden), np.uint8)
        self.empty_w = np.zeros(0, np.uint8)
        self.empty_w.setflags(write=False)
        self.empty_y = np.zeros(0, np.float32)

    @staticmethod
    def supported(blocks: list[Any], output: Any) -> bool:
        """True when every weight is a kernels ``Linear`` (not the dense fallback)."""
        from .kernels import Linear

        lins = [lin for b in blocks
                for lin in (b.wq, b.wk, b.wv, b.wo, b.w_gate, b.w_up, b.w_down)] + [output]
        return all(isinstance(lin, Linear) for lin in lins)
