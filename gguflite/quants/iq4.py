"""IQ4_NL and IQ4_XS: 4-bit indices into ggml's non-linear table ``kvalues_iq4nl``.

Both encoders are ggml's ``quantize_row_iq4_nl_impl`` as ``ggml_quantize_chunk`` runs it
(``ntry = 7``, with or without an importance row), bit for bit:

1. per 32-value sub-block, weights ``qw * sqrt(sigma2 + x**2)`` (importance) or ``x**2``, with
   ``sigma2 = 2 * sum(x**2) / n`` over the super-block (32 values for IQ4_NL, 256 for IQ4_XS);
2. a scale search: ``d = max / 127`` (max: the value of largest magnitude, sign kept) and
   15 trial scales ``max / (v0 + t)``, t = -7..7, each fitted by weighted least squares on
   the nearest table indices; the best fit wins;
3. IQ4_NL stores that scale as fp16 and indexes ``x / scale``; IQ4_XS stores
   ``d = -max_scale / 32`` as fp16 and each sub-block's scale as a 6-bit multiple of ``d``
   (computed from the float32 ``d``, not the stored fp16 one, as ggml does).

The float32 discipline is that of :mod:`.kquants`; the Numba kernels in :mod:`.iq4_numba` run
the same sequence and tests prove both equal to ggml.
"""

from __future__ import annotations

import numpy as np

from ..constants import IQ4NL_VALUES, QK_K, GGMLType
from . import iq4_numba as _nb
from .base import Codec
from .kquants_search import (
    F32,
    GROUP_MAX_EPS,
    fp16_bits_to_fp32,
    fp32_to_fp16_bits,
    nearest_int,
    seq_sum,
)

KVALUES = np.array(IQ4NL_VALUES, dtype=np.int8)  # ggml-common.h kvalues_iq4nl
_KF = KVALUES.astype(F32)
NTRY = 7  # quantize_iq4_nl / quantize_iq4_xs pass ntry = 7


def best_index(al: np.ndarray) -> np.ndarray:
    """ggml ``best_index_int8(16, kvalues_iq4nl, al)`` elementwise: the nearest table index.

    A tie between two neighbours goes to the upper one; NaN lands on 15 as in C.
    """
    al = np.asarray(al, F32)
    mu = np.clip(np.searchsorted(_KF, al, side="right"), 1, 15)  # val[mu-1] <= al < val[mu]
    lower = (al - _KF[mu - 1]) < (_KF[mu] - al)
    idx = np.where(lower, mu - 1, mu)
    idx = np.where(al <= _KF[0], 0, idx)
    return np.where((al >= _KF[15]) | np.isnan(al), 15, idx)


def _weighted_fit(x: np.ndarray, w: np.ndarray, iscale: np.ndarray):
    """Sums of (w*q)*x and (w*q)*q over a row for q = table[best_index(iscale*x)]; (m,) each."""
    q = _KF[best_index(iscale[:, None] * x)]  # (m, n)
    wq = w * q
    return seq_sum(wq * x), seq_sum(wq * q)


def search_sub_block_scales(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Step 2 above for (m, 32) sub-blocks and weights -> (m,) float32 scales (0: all tiny)."""
    m = x.shape[0]
    amax = np.zeros(m, F32)
    vmax = np.zeros(m, F32)
    for i in range(x.shape[1]):
        ax = np.abs(x[:, i])
        bigger = ax > amax
        amax = np.where(bigger, ax, amax)
        vmax = np.where(bigger, x[:, i], vmax)
    zero = amax < GROUP_MAX_EPS
    d = (-vmax) / _KF[0]
    sumqx, sumq2 = _weighted_fit(x, w, F32(1) / d)
    d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        sqx, sq2 = _weighted_fit(x, w, F32(itry + int(KVALUES[0])) / vmax)
        win = (sq2 > 0) & (sqx * sqx > best * sq2)
        d = np.where(win, sqx / sq2, d)
        best = np.where(win, d * sqx, best)
    return np.where(zero, F32(0), d).astype(F32)


def _weights(x: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, n) super-blocks [+ importance] -> (nb, n) float32 weights of step 1."""
    if importance is None:
        return x * x
    sigma2 = seq_sum(x * x) * (F32(2) / F32(x.shape[1]))  # (nb,)
    return np.asarray(importance, F32) * np.sqrt(sigma2[:, None] + x * x)


def pack_nibbles(idx: np.ndarray) -> np.ndarray:
    """(nb, 32*k) indices 0..15 -> (nb, 16*k) u8: byte 16*i + j holds 32*i + j (low nibble)
    and 32*i + 16 + j (high nibble)."""
    nb = idx.shape[0]
    q = idx.astype(np.int64).reshape(nb, -1, 2, 16)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(nb, -1).astype(np.uint8)


def unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: (nb, 16*k) u8 -> (nb, 32*k) indices."""
    nb = qs.shape[0]
    q = qs.reshape(nb, -1, 1, 16) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return (q & 0xF).reshape(nb, -1)


# -- IQ4_NL --------------------------------------------------------------------------------------
def quantize_iq4_nl(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 32) float32 [+ (nb, 32) importance] -> (nb, 18) uint8 IQ4_NL blocks.

    Block layout (18 bytes): d fp16, qs[16] (see pack_nibbles); value = d * kvalues[q].
    """
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks, dtype=F32)
    with np.errstate(all="ignore"):
        scale = search_sub_block_scales(x, _weights(x, importance))  # (nb,)
        d16 = fp32_to_fp16_bits(scale)
        inv = np.where(scale != 0, F32(1) / scale, F32(0))
        idx = best_index(inv[:, None] * x)  # (nb, 32)
    out = np.empty((nb, 18), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(nb, 2)
    out[:, 2:] = pack_nibbles(idx)
    return out


def dequantize_iq4_nl(blocks: np.ndarray) -> np.ndarray:
    """(nb, 18) uint8 -> (nb, 32) float32; ggml ``dequantize_row_iq4_nl``."""
    with np.errstate(all="ignore"):
        d = fp16_bits_to_fp32(blocks[:, 0:2]).reshape(-1, 1)
        return d * _KF[unpack_nibbles(blocks[:, 2:18])]


# -- IQ4_XS --------------------------------------------------------------------------------------
def quantize_iq4_xs(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 136) uint8 IQ4_XS blocks.

    Block layout (136 bytes)::

        d            fp16 super-block scale
        scales_h     u16: bits 2j..2j+1 are the high 2 bits of sub-block j's 6-bit scale
        scales_l[4]  nibble j % 2 of byte j // 2: the low 4 bits of sub-block j's scale
        qs[128]      4-bit table indices, 16 bytes per 32-value sub-block (see pack_nibbles)

    value = d * (scale_j - 32) * kvalues[q], j = value index // 32.
    """
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks, dtype=F32)
    xs = x.reshape(nb * 8, 32)  # (nb*8, 32) sub-blocks
    with np.errstate(all="ignore"):
        w = _weights(x, importance).reshape(nb * 8, 32)
        scales = search_sub_block_scales(xs, w).reshape(nb, 8)
        max_scale = np.zeros(nb, F32)
        amax = np.zeros(nb, F32)
        for j in range(8):
            a = np.abs(scales[:, j])
            bigger = a > amax
            amax = np.where(bigger, a, amax)
            max_scale = np.where(bigger, scales[:, j], max_scale)
        d = (-max_scale) / F32(32)  # (nb,)
        d16 = fp32_to_fp16_bits(d)
        inv_d = np.where(d != 0, F32(1) / d, F32(0))
        lv = np.clip(nearest_int(inv_d[:, None] * scales), -32, 31)  # (nb, 8)
        dl = d[:, None] * lv.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0))
        idx = best_index(idl.reshape(-1, 1) * xs).reshape(nb, QK_K)
    ls = lv + 32  # (nb, 8) in 0..63
    scales_l = (ls[:, 0::2] & 0xF) | ((ls[:, 1::2] & 0xF) << 4)  # (nb, 4)
    scales_h = ((ls >> 4) << (2 * np.arange(8))).sum(axis=1)  # (nb,), disjoint bits
    out = np.empty((nb, 136), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = scales_h.astype("<u2").view(np.uint8).reshape(nb, 2)
    out[:, 4:8] = scales_l.astype(np.uint8)
    out[:, 8:] = pack_nibbles(idx)
    return out


def iq4_xs_sub_scales(blocks: np.ndarray) -> np.ndarray:
    """(nb, 136) u8 -> (nb, 8) int: each sub-block's 6-bit scale minus 32."""
    ls_lo = (blocks[:, 4:8, None] >> np.array([0, 4], np.uint8)) & 0xF  # (nb, 4, 2)
    sh = blocks[:, 2].astype(np.int64) | (blocks[:, 3].astype(np.int64) << 8)  # (nb,)
    ls_hi = (sh[:, None] >> (2 * np.arange(8))) & 3  # (nb, 8)
    return (ls_lo.reshape(-1, 8).astype(np.int64) | (ls_hi << 4)) - 32


def dequantize_iq4_xs(blocks: np.ndarray) -> np.ndarray:
    """(nb, 136) uint8 -> (nb, 256) float32; ggml ``dequantize_row_iq4_xs``."""
    nb = blocks.shape[0]
    with np.errstate(all="ignore"):
        d = fp16_bits_to_fp32(blocks[:, 0:2]).reshape(nb, 1)
        dl = (d * iq4_xs_sub_scales(blocks).astype(F32)).reshape(nb, 8, 1)  # (nb, 8, 1)
        q = _KF[unpack_nibbles(blocks[:, 8:136])].reshape(nb, 8, 32)
        return (dl * q).reshape(nb, QK_K)


# -- codecs --------------------------------------------------------------------------------------
def _table_bound(x: np.ndarray, step: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Error bound of a table grid ``step * kvalues`` per sub-block.

    x (nb, k, n) float64; step (nb, k) the decoded scale; levels (nb, k) how many multiples
    of the fp16 super-block scale the encoder's float32 scale was (1 for IQ4_NL). A value is
    within half the widest table gap (12 steps) of the grid, or clipped to its ends; the
    encoder picked indices for the float32 scale, which differs from the decoded one by at
    most half an fp16 step (2**-11 relative, 2**-25 absolute) per multiple.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.abs(step)[..., None]
        lo = np.minimum(-127 * a, 113 * a)
        hi = np.maximum(-127 * a, 113 * a)
        dist = np.maximum(lo - x, 0) + np.maximum(x - hi, 0)  # (nb, k, n)
        rounding = 300 * (a * 2.0**-10 + np.abs(levels)[..., None] * 2.0**-24)
        slack = 2.0**-20 * (np.abs(x) + a * 127)
        bound = (dist + 12 * a + rounding + slack).max(axis=(1, 2))
    return np.where(np.isfinite(step).all(axis=1), bound, np.inf)


class IQ4NL(Codec):
    """IQ4_NL: blocks of 32, ``d * kvalues_iq4nl[q]`` with a 4-bit index q.

    Layout in :func:`quantize_iq4_nl`; encoding is ggml's (module docstring).

    Bound (``max_error``, a posteriori): the distance to the grid ``d * [-127, 113]`` plus half
    the widest table gap (12 d), plus the fp16 rounding of the scale (see ``_table_bound``).
    Requantizing is not stable (``requantize_stable = False``, as in ggml): the scale search
    on decoded values need not find the stored scale again.
    """

    name = "iq4_nl"
    ggml_type = GGMLType.IQ4_NL
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_iq4_nl(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_iq4_nl(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_iq4_nl(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_iq4_nl(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nb.quantize_iq4_nl(blocks, None)  # (nb, 18)
        d = fp16_bits_to_fp32(packed[:, 0:2]).astype(np.float64).reshape(-1, 1)  # (nb, 1)
        x = np.asarray(blocks, np.float64).reshape(-1, 1, 32)
        return _table_bound(x, d, np.ones_like(d))


class IQ4XS(Codec):
    """IQ4_XS: super-blocks of 256 in 8 sub-blocks, ``d * (sc_j - 32) * kvalues_iq4nl[q]``.

    Layout in :func:`quantize_iq4_xs`; encoding is ggml's (module docstring). Bound and
    stability as IQ4_NL's, per sub-block with its decoded scale ``d * (sc_j - 32)``.
    """

    name = "iq4_xs"
    ggml_type = GGMLType.IQ4_XS
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_iq4_xs(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_iq4_xs(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_iq4_xs(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_iq4_xs(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nb.quantize_iq4_xs(blocks, None)  # (nb, 136)
        sub = iq4_xs_sub_scales(packed).astype(np.float64)  # (nb, 8)
        step = fp16_bits_to_fp32(packed[:, 0:2]).astype(np.float64).reshape(-1, 1) * sub
        x = np.asarray(blocks, np.float64).reshape(-1, 8, 32)
        return _table_bound(x, step, sub)
