"""The decode step (one token) as a single Numba call: every layer, every mat-vec.

Python costs a few microseconds per call into Numba; a 30-layer model makes ~10 calls per layer,
which is a large share of a 5 ms token. Here ``gguflite.models.graph.forward`` for one token runs
inside one compiled function that calls the kernels' drivers (``kernels.dispatch``: the same
fused dequantize-and-dot row kernels ``Linear.matvec`` uses, so the numbers are identical) and
the ops of ``ops.py``. It is specialised by the flags the family declares, not copied per family:

    flags = [rope_neox, act (0 silu, 1 gelu_tanh), attn_bias, qk_norm, post_norms]
    layer_rope[l]   the rope table of layer l (-1: none);  layer_window[l]  0: full attention

Weights are passed as addresses (``kernels.pointers``) in the order

    w[7 l + 0 .. 6] = attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down of block l
    w[7 n_layer]    = output (token_embd when tied)

with their byte sizes, type ids (``kinds``) and row sizes; per-layer vectors (norms, biases,
QK-norms) are one (n_layer, V) float32 array ``vecs`` with the column offset of each kind in
``voff`` (-1: absent), in the order of ``VECTORS``.

Numba caches ``decode_step`` with the kernels it calls compiled in, keyed on this file's text
only. ``SOURCES_FINGERPRINT`` below hashes the modules it inlines, so any edit there must change
this file too (tests/test_runtime_model.py checks it is current) and no stale compiled step is
ever loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from . import ops
from .kernels import dispatch
from .kernels.pointers import readonly_bytes

N_PER_BLOCK = 7
LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
VECTORS = ("attn_norm", "ffn_norm", "post_attn_norm", "post_ffn_norm", "bq", "bk", "bv",
           "q_norm", "k_norm")
ATTN_NORM, FFN_NORM, POST_ATTN, POST_FFN, BQ, BK, BV, QNORM, KNORM = range(len(VECTORS))
NEOX, ACT, BIAS, QK_NORM, POST_NORMS = range(5)

# sha256 of the text of the inlined modules; recompute with sources_fingerprint().
SOURCES_FINGERPRINT = "58970feffabfb0e0"
INLINED_FILES = ("kernels/dispatch.py", "kernels/pointers.py", "kv_cache.py", "ops.py")


def sources_fingerprint() -> str:
    """sha256 (16 hex digits) of INLINED_FILES, for SOURCES_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for rel in INLINED_FILES:
        h.update((Path(__file__).parent / rel).read_bytes())
    return h.hexdigest()[:16]


@njit(cache=True)
def _w(addrs, sizes, i):
    return readonly_bytes(addrs[i], sizes[i])


@njit(cache=True)
def _matvec(addrs, sizes, kinds, row_bytes, i, x, y, scratch, kset) -> None:
    """y (rows,) = W_i x (n,)."""
    dispatch.matvec_one(kinds[i], _w(addrs, sizes, i), y, row_bytes[i], x, scratch, kset)


@njit(cache=True)
def _matvec_n(addrs, sizes, kinds, row_bytes, i, count, x, y0, y1, y2, scratch, kset) -> None:
    """y_j = W_{i+j} x for j < count (2 or 3): one parallel region when they share a type."""
    same = kinds[i] == kinds[i + 1] and row_bytes[i] == row_bytes[i + 1]
    if count == 3:
        same = same and kinds[i] == kinds[i + 2] and row_bytes[i] == row_bytes[i + 2]
    empty_w = readonly_bytes(addrs[i], 0)
    empty_y = y0[:0]
    if same:
        w2 = _w(addrs, sizes, i + 2) if count == 3 else empty_w
        dispatch.matvec_group(kinds[i], (_w(addrs, sizes, i), _w(addrs, sizes, i + 1), w2,
                                         empty_w), (y0, y1, y2 if count == 3 else empty_y,
                                                    empty_y), row_bytes[i], x, scratch,
                              kset)
    else:
        _matvec(addrs, sizes, kinds, row_bytes, i, x, y0, scratch, kset)
        _matvec(addrs, sizes, kinds, row_bytes, i + 1, x, y1, scratch, kset)
        if count == 3:
            _matvec(addrs, sizes, kinds, row_bytes, i + 2, x, y2, scratch, kset)


@njit(cache=True, fastmath=True)
def _head_norm(x, vecs, layer, off, eps) -> None:
    """RMSNorm of each head of x (n_heads, hd) in place with weights vecs[layer, off:off+hd]."""
    hd = x.shape[1]
    w = vecs[layer, off:off + hd]
    for h in range(x.shape[0]):
        ops._rmsnorm_row(x[h], w, eps, x[h])


@njit(cache=True, fastmath=True)
def _add_bias(y, vecs, layer, off) -> None:
    for j in range(y.shape[0]):
        y[j] += vecs[layer, off + j]


@njit(cache=True, nogil=True)
def decode_step(x, addrs, sizes, kinds, row_bytes, vecs, voff, flags, layer_rope,
                layer_window, out_norm, eps, cos, sin, k_cache, v_cache, pos, kq_scale,
                buf_dim, q, k, v, att, gate, up, hb, logits, scores, s_dim, s_q,
                s_hidden, kset) -> None:
    """Run the embedded token x through every block and the output head.

    Parameters
    ----------
    x : (dim,) f32
        The token's embedding (already scaled); becomes the final residual stream.
    addrs, sizes, kinds, row_bytes : (7 n_layer + 1,) int64
        The weights (module docstring).
    vecs : (n_layer, V) f32; voff : (len(VECTORS),) int64; flags : (5,) int64
    layer_rope, layer_window : (n_layer,) int64
    out_norm : (dim,) f32
    eps, kq_scale : float
    cos, sin : (2, n_ctx, n_rot // 2) f32
    k_cache, v_cache : (n_layer, n_kv_head, capacity, head_dim) f32 or uint16 (f16 bits)
    pos : int
        The token's position.
    buf_dim : (2, dim); q : (1, n_head, hd); k, v : (1, n_kv_head, hd); att : (1, q_dim);
    gate, up, hb : (hidden,); logits : (vocab,); scores : (n_head, n_ctx)
        Buffers, all f32.
    s_dim, s_q, s_hidden : uint8
        Activation scratch for inputs of width dim, q_dim and hidden.
    kset : dispatch.Kinds
        The set of ``kinds``: only their kernels are compiled into the step.
    """
    n_layer = layer_rope.shape[0]
    dim = x.shape[0]
    xb = buf_dim[0]
    delta = buf_dim[1]
    q1 = q.reshape(q.size)  # (q_dim,) views of the attention buffers
    k1 = k.reshape(k.size)  # (kv_dim,)
    v1 = v.reshape(v.size)
    att1 = att.reshape(att.size)  # (q_dim,)
    for layer in range(n_layer):
        i = N_PER_BLOCK * layer
        ops._rmsnorm_row(x, vecs[layer, voff[ATTN_NORM]:voff[ATTN_NORM] + dim], eps, xb)
        _matvec_n(addrs, sizes, kinds, row_bytes, i, 3, xb, q1, k1, v1, s_dim, kset)
        if flags[BIAS]:
            _add_bias(q1, vecs, layer, voff[BQ])
            _add_bias(k1, vecs, layer, voff[BK])
            _add_bias(v1, vecs, layer, voff[BV])
        if flags[QK_NORM]:
            _head_norm(q[0], vecs, layer, voff[QNORM], eps)
            _head_norm(k[0], vecs, layer, voff[KNORM], eps)
        t = layer_rope[layer]
        ops.attention(q, k, v, cos[max(t, 0)], sin[max(t, 0)], t >= 0, flags[NEOX] != 0,
                      k_cache[layer], v_cache[layer], pos, kq_scale, layer_window[layer], att,
                      scores)  # (1, q_dim)
        _matvec(addrs, sizes, kinds, row_bytes, i + 3, att1, delta, s_q, kset)
        if flags[POST_NORMS]:
            ops._rmsnorm_row(delta, vecs[layer, voff[POST_ATTN]:voff[POST_ATTN] + dim], eps,
                             delta)
        for j in range(dim):
            x[j] += delta[j]
        ops._rmsnorm_row(x, vecs[layer, voff[FFN_NORM]:voff[FFN_NORM] + dim], eps, xb)
        _matvec_n(addrs, sizes, kinds, row_bytes, i + 4, 2, xb, gate, up, up, s_dim, kset)
        if flags[ACT] == 1:
            ops.gelu_tanh_glu(gate.reshape(1, gate.size), up.reshape(1, up.size),
                              hb.reshape(1, hb.size))
        else:
            ops.swiglu(gate.reshape(1, gate.size), up.reshape(1, up.size),
                       hb.reshape(1, hb.size))
        _matvec(addrs, sizes, kinds, row_bytes, i + 6, hb, delta, s_hidden, kset)
        if flags[POST_NORMS]:
            ops._rmsnorm_row(delta, vecs[layer, voff[POST_FFN]:voff[POST_FFN] + dim], eps,
                             delta)
        for j in range(dim):
            x[j] += delta[j]
    o = N_PER_BLOCK * n_layer
    ops._rmsnorm_row(x, out_norm, eps, xb)
    _matvec(addrs, sizes, kinds, row_bytes, o, xb, logits, s_dim, kset)


class DecodePlan:
    """The arguments of ``decode_step`` that do not change from token to token."""

    def __init__(self, be: Any):
        hp, w = be.hparams, be.w
        self.linears = [getattr(b, name) for b in w.blocks for name in LINEARS] + [w.output]
        flat = [lin._w for lin in self.linears]  # read-only uint8 views, kept alive here
        self.addrs = np.array([a.ctypes.data for a in flat], np.int64)
        self.sizes = np.array([a.size for a in flat], np.int64)
        self.kinds = np.array([lin.kind for lin in self.linears], np.int64)
        self.row_bytes = np.array([lin.row_bytes for lin in self.linears], np.int64)
        self.kset = self.linears[0]._kinds  # kernels.share_kinds gave every linear the set
        widths = {"attn_norm": hp.dim, "ffn_norm": hp.dim, "post_attn_norm": hp.dim,
                  "post_ffn_norm": hp.dim, "bq": hp.q_dim, "bk": hp.kv_dim, "bv": hp.kv_dim,
                  "q_norm": hp.head_dim, "k_norm": hp.head_dim}
        present = [n for n in VECTORS if getattr(w.blocks[0], n) is not None]
        self.voff = np.full(len(VECTORS), -1, np.int64)
        col = 0
        for n in present:
            self.voff[VECTORS.index(n)] = col
            col += widths[n]
        self.vecs = np.zeros((hp.n_layer, col), np.float32)  # (n_layer, V)
        for layer, b in enumerate(w.blocks):
            for n in present:
                o = self.voff[VECTORS.index(n)]
                self.vecs[layer, o:o + widths[n]] = getattr(b, n)
        self.out_norm = np.ascontiguousarray(w.output_norm, np.float32)  # (dim,)
        self.flags = np.array([hp.rope_neox, hp.act == "gelu_tanh", hp.attn_bias, hp.qk_norm,
                               hp.post_norms], np.int64)
        self.layer_rope = np.array(hp.layer_rope, np.int64)
        self.layer_window = np.array(hp.layer_window, np.int64)
        f32 = np.float32
        self.x = np.zeros(hp.dim, f32)
        self.buf_dim = np.zeros((2, hp.dim), f32)
        self.q = np.zeros((1, hp.n_head, hp.head_dim), f32)
        self.k = np.zeros((1, hp.n_kv_head, hp.head_dim), f32)
        self.v = np.zeros((1, hp.n_kv_head, hp.head_dim), f32)
        self.att = np.zeros((1, hp.q_dim), f32)
        self.gate = np.zeros(hp.hidden_dim, f32)
        self.up = np.zeros(hp.hidden_dim, f32)
        self.hb = np.zeros(hp.hidden_dim, f32)
        self.logits = np.zeros(hp.vocab_size, f32)
        self.s_dim = np.zeros(dispatch.scratch_bytes(hp.dim), np.uint8)
        self.s_q = np.zeros(dispatch.scratch_bytes(hp.q_dim), np.uint8)
        self.s_hidden = np.zeros(dispatch.scratch_bytes(hp.hidden_dim), np.uint8)

    @classmethod
    def build(cls, be: Any) -> DecodePlan:
        return cls(be)

    @staticmethod
    def supported(w: Any) -> bool:
        """True when every weight is a kernels ``Linear`` (not the dense fallback)."""
        from .kernels import Linear

        lins = [getattr(b, name) for b in w.blocks for name in LINEARS] + [w.output]
        return all(isinstance(lin, Linear) for lin in lins)
