"""The k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-value super-blocks).

All five decode and encode, bit-exact with ggml:

- without importance: ``quantize_row_q<n>_K_ref`` (what ``ggml_quantize_chunk`` runs when
  ``quant_weights`` is NULL);
- with importance (one weight per column, as an imatrix gives): ``quantize_row_q<n>_K_impl``
  (``make_qkx3_quants`` + ``make_qp_quants`` for Q4_K / Q5_K, weighted ``make_qx_quants``
  for Q6_K; Q2_K and Q3_K in :mod:`.kquants_lowbit`).

Bit-exactness rests on doing every float operation in float32, one at a time and in ggml's
order: sums accumulate sequentially (a NumPy ``sum`` is pairwise and differs), ``a*b*c`` is
``(a*b)*c``, integers are converted to float32 before they meet a float, and ``nearest_int``
is ggml's magic-number rounding (round half to even, garbage beyond 2**22 reproduced as is).
libggml-base is compiled for baseline x86-64, so ggml itself never fuses a multiply-add.

The reference encoders here (with ggml's helpers in :mod:`.kquants_search`) vectorise across
blocks and loop in Python over the values inside a block, so each lane sees exactly ggml's
sequence of float32 operations. The Numba kernels in :mod:`.kquants_numba` (and
:mod:`.kquants_lowbit_numba`) run the same sequence as scalar loops.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..constants import QK_K, GGMLType
from . import kquants_lowbit_numba as _nbl
from . import kquants_numba as _nb
from .base import Codec
from .kquants_lowbit import quantize_q2_k, quantize_q3_k, unpack_q3_k_scales
from .kquants_search import (
    F32,
    GROUP_MAX_EPS,
    fp16_bits_to_fp32,
    fp32_to_fp16_bits,
    make_qkx_quants,
    make_qp_quants,
    make_qx_quants,
    nearest_int,
    seq_sum,
)

__all__ = [
    "Q2K", "Q3K", "Q4K", "Q5K", "Q6K", "dequantize_q2_k", "dequantize_q3_k", "dequantize_q4_k",
    "dequantize_q5_k", "dequantize_q6_k", "fp16_bits_to_fp32", "fp32_to_fp16_bits",
    "nearest_int", "pack_scale_min_k4", "quantize_q2_k", "quantize_q3_k", "quantize_q4_k",
    "quantize_q5_k", "quantize_q6_k", "unpack_q3_k_scales", "unpack_scale_min_k4",
]


def _no_float_warnings(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """Decorator: run a decoder with NumPy's float warnings off (inf * 0 in garbage blocks)."""

    @functools.wraps(fn)
    def run(blocks: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(blocks)

    return run


def unpack_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml ``get_scale_min_k4`` for all 8 sub-blocks: (n, 12) u8 -> scale, min, each (n, 8) u8.

    Eight 6-bit scales (a..h) and eight 6-bit mins (A..H) in 12 bytes::

        byte  0..3   ssaaaaaa .. ssdddddd    low 6 bits: scales a-d, top 2: high bits of e-h
        byte  4..7   mmAAAAAA .. mmDDDDDD    low 6 bits: mins A-D,   top 2: high bits of E-H
        byte  8..11  EEEEeeee .. HHHHhhhh    low nibble: scale e-h,  high nibble: min E-H
    """
    s = scales.reshape(-1, 3, 4)  # (n, 3, 4)
    lo, mid, hi = s[:, 0], s[:, 1], s[:, 2]  # (n, 4) each
    sc = np.concatenate([lo & 63, (hi & 0xF) | ((lo >> 6) << 4)], axis=1)  # (n, 8)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)  # (n, 8)
    return sc.astype(np.uint8), mn.astype(np.uint8)


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_scale_min_k4`, byte for byte as ggml writes it.

    ``ls``, ``lm``: (n, 8) integer levels, normally 0..63; ggml stores whole bytes for
    sub-blocks 0-3, so out-of-range values are kept as ggml keeps them. Returns (n, 12) u8.
    """
    ls = ls.astype(np.int64) & 0xFF
    lm = lm.astype(np.int64) & 0xFF
    out = np.zeros((ls.shape[0], 12), dtype=np.int64)  # (n, 12)
    out[:, 0:4] = ls[:, 0:4]
    out[:, 4:8] = lm[:, 0:4]
    out[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    out[:, 0:4] |= (ls[:, 4:8] >> 4) << 6
    out[:, 4:8] |= (lm[:, 4:8] >> 4) << 6
    return (out & 0xFF).astype(np.uint8)


# -- Q4_K, Q5_K (8 sub-blocks of 32, a 6-bit scale and min each) ------------------------------
def search_scale_min_k(
    blocks: np.ndarray, importance: np.ndarray | None, nmax: int,
    ref_search: tuple[float, float, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K's and Q5_K's encoder up to the bit packing of the levels.

    Without importance it is ggml's ``quantize_row_q{4,5}_K_ref`` (``make_qkx2_quants`` with
    ``ref_search`` = (rmin, rdelta, nstep), then the sub-block scales and mins scaled to
    0..63); with importance ``quantize_row_q{4,5}_K_impl`` (``make_qkx3_quants`` -0.9, 0.05,
    36 and ``make_qp_quants``). The levels are then re-fitted to the stored scales.

    Returns d16 (nb,) u16, dmin16 (nb,) u16, scales (nb, 12) u8 (see
    :func:`unpack_scale_min_k4`) and levels (nb, 8, 32) int in 0..nmax.
    """
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks, dtype=F32)
    xs = x.reshape(nb * 8, 32)  # (nb*8, 32) sub-blocks
    with np.errstate(all="ignore"):
        if importance is None:
            sum_x2 = seq_sum(xs * xs)  # (nb*8,)
            av_x = np.sqrt(sum_x2 / F32(32))
            w = av_x[:, None] + np.abs(xs)  # (nb*8, 32)
            rmin, rdelta, nstep = ref_search
            sub_scale, sub_min, levels = make_qkx_quants(xs, w, nmax, rmin, rdelta, nstep)
            sub_scale = sub_scale.reshape(nb, 8)
            sub_min = sub_min.reshape(nb, 8)
            max_scale = np.zeros(nb, F32)
            max_min = np.zeros(nb, F32)
            for j in range(8):
                max_scale = np.where(sub_scale[:, j] > max_scale, sub_scale[:, j], max_scale)
                max_min = np.where(sub_min[:, j] > max_min, sub_min[:, j], max_min)
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
            ls = np.minimum(63, nearest_int(inv_scale[:, None] * sub_scale) & 0xFF)  # (nb, 8)
            lm = np.minimum(63, nearest_int(inv_min[:, None] * sub_min) & 0xFF)
            d16 = fp32_to_fp16_bits(max_scale / F32(63))
            dmin16 = fp32_to_fp16_bits(max_min / F32(63))
        else:
            qw = np.asarray(importance, dtype=F32).reshape(nb * 8, 32)
            sigma2 = (F32(2) * seq_sum(x * x)) / F32(QK_K)  # (nb,)
            sig_sub = np.repeat(sigma2, 8)  # (nb*8,)
            w = qw * np.sqrt(sig_sub[:, None] + xs * xs)  # (nb*8, 32)
            sw = seq_sum(w).reshape(nb, 8)
            sub_scale, sub_min, levels = make_qkx_quants(xs, w, nmax, -0.9, 0.05, 36)
            d_block, ls = make_qp_quants(sub_scale.reshape(nb, 8), 63, sw)
            m_block, lm = make_qp_quants(sub_min.reshape(nb, 8), 63, sw)
            if nmax == 31:  # Q5_K's impl clamps the stored uint8 levels to 63; Q4_K's does not
                ls, lm = np.minimum(63, ls), np.minimum(63, lm)
            d16 = fp32_to_fp16_bits(d_block)
            dmin16 = fp32_to_fp16_bits(m_block)
        packed_scales = pack_scale_min_k4(ls, lm)  # (nb, 12)
        sc, mn = unpack_scale_min_k4(packed_scales)  # what a decoder will see, (nb, 8) each
        d = fp16_bits_to_fp32(d16)[:, None] * sc.astype(F32)  # (nb, 8)
        dm = fp16_bits_to_fp32(dmin16)[:, None] * mn.astype(F32)
        q = np.clip(nearest_int((xs + dm.reshape(-1, 1)) / d.reshape(-1, 1)), 0, nmax)
        levels = np.where((d != 0).reshape(-1, 1), q, levels).reshape(nb, 8, 32)
    return d16, dmin16, packed_scales, levels


def quantize_q4_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 144) uint8 Q4_K blocks.

    Block layout (144 bytes)::

        d     fp16        super-block scale of the 6-bit sub-block scales
        dmin  fp16        super-block scale of the 6-bit sub-block mins
        scales[12]        8 x (6-bit scale, 6-bit min), see unpack_scale_min_k4
        qs[128]           4-bit levels: byte 32*c + l holds value 64*c + l (low nibble)
                          and value 64*c + 32 + l (high nibble)

    value = d * scale_j * q - dmin * min_j for sub-block j = value index // 32.
    """
    nb = blocks.shape[0]
    d16, dmin16, packed_scales, levels = search_scale_min_k(blocks, importance, 15,
                                                            (-1.0, 0.1, 20))
    levels = levels.reshape(nb, 4, 2, 32)  # (nb, chunk c, nibble, 32)
    qs = (levels[:, :, 0] | (levels[:, :, 1] << 4)).astype(np.uint8).reshape(nb, 128)
    out = np.empty((nb, 144), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = dmin16.view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = packed_scales
    out[:, 16:] = qs
    return out


def quantize_q5_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 176) uint8 Q5_K blocks.

    Block layout (176 bytes)::

        d, dmin fp16, scales[12]    as Q4_K
        qh[32]      fifth bits: bit 2*c + h of byte l is value 64*c + 32*h + l
        qs[128]     low 4 bits, as Q4_K's qs

    value = d * scale_j * q - dmin * min_j, q in 0..31.
    """
    nb = blocks.shape[0]
    d16, dmin16, packed_scales, levels = search_scale_min_k(blocks, importance, 31,
                                                            (-0.5, 0.1, 15))
    levels = levels.reshape(nb, 4, 2, 32).astype(np.int64)  # (nb, chunk c, half h, 32)
    low = levels & 0xF
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(nb, 128)
    bit = np.arange(8, dtype=np.int64).reshape(1, 4, 2, 1)  # bit 2*c + h
    qh = ((levels >> 4) << bit).sum(axis=(1, 2))  # (nb, 32): disjoint bits, so sum == or
    out = np.empty((nb, 176), dtype=np.uint8)
    out[:, 0:2] = d16.view(np.uint8).reshape(nb, 2)
    out[:, 2:4] = dmin16.view(np.uint8).reshape(nb, 2)
    out[:, 4:16] = packed_scales
    out[:, 16:48] = qh.astype(np.uint8)
    out[:, 48:] = qs.astype(np.uint8)
    return out


@_no_float_warnings
def dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 144) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q4_K``."""
    nb = blocks.shape[0]
    d = fp16_bits_to_fp32(blocks[:, 0:2]).reshape(nb, 1)
    dmin = fp16_bits_to_fp32(blocks[:, 2:4]).reshape(nb, 1)
    sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
    d1 = (d * sc.astype(F32)).reshape(nb, 4, 2, 1)  # (nb, 4 chunks, 2 nibbles, 1)
    m1 = (dmin * mn.astype(F32)).reshape(nb, 4, 2, 1)
    qs = blocks[:, 16:].reshape(nb, 4, 1, 32)
    q = (qs >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0xF  # (nb, 4, 2, 32)
    return (d1 * q.astype(F32) - m1).reshape(nb, QK_K)


# -- Q5_K ----------------------------------------------------------------------------------------
@_no_float_warnings
def dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 176) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q5_K``.

    Layout: d fp16, dmin fp16, scales[12] (as Q4_K), qh[32], qs[128]. Value 64*c + 32*h + l has
    low 4 bits in nibble h of qs[32*c + l] and its fifth bit in bit 2*c + h of qh[l].
    """
    nb = blocks.shape[0]
    d = fp16_bits_to_fp32(blocks[:, 0:2]).reshape(nb, 1)
    dmin = fp16_bits_to_fp32(blocks[:, 2:4]).reshape(nb, 1)
    sc, mn = unpack_scale_min_k4(blocks[:, 4:16])
    d1 = (d * sc.astype(F32)).reshape(nb, 4, 2, 1)
    m1 = (dmin * mn.astype(F32)).reshape(nb, 4, 2, 1)
    qh = blocks[:, 16:48].reshape(nb, 1, 1, 32)
    qs = blocks[:, 48:].reshape(nb, 4, 1, 32)
    low = (qs >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0xF  # (nb, 4, 2, 32)
    bit = np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)  # bit 2*c + h
    high = (qh >> bit) & 1  # (nb, 4, 2, 32)
    q = (low | (high << 4)).astype(F32)
    return (d1 * q - m1).reshape(nb, QK_K)


# -- Q6_K ----------------------------------------------------------------------------------------
def quantize_q6_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 210) uint8 Q6_K blocks.

    Block layout (210 bytes)::

        ql[128]     low 4 bits: for half n (128 values), byte 64*n + l holds value
                    128*n + l (low nibble) and 128*n + 64 + l (high nibble); byte
                    64*n + 32 + l holds 128*n + 32 + l and 128*n + 96 + l
        qh[64]      high 2 bits: byte 32*n + l, bits 2g..2g+1 hold value 128*n + 32*g + l
        scales[16]  int8 scale of each 16-value sub-block
        d           fp16 super-block scale

    value = d * scale_j * (q - 32) for sub-block j = value index // 16.
    """
    nb = blocks.shape[0]
    xs = np.ascontiguousarray(blocks, dtype=F32).reshape(nb * 16, 16)  # (nb*16, 16)
    qw = None if importance is None else np.asarray(importance, F32).reshape(nb * 16, 16)
    with np.errstate(all="ignore"):
        sub_scale, levels = make_qx_quants(xs, 32, qw)
        sub_scale = sub_scale.reshape(nb, 16)
        max_scale = np.zeros(nb, F32)
        max_abs = np.zeros(nb, F32)
        for j in range(16):
            a = np.abs(sub_scale[:, j])
            bigger = a > max_abs
            max_abs = np.where(bigger, a, max_abs)
            max_scale = np.where(bigger, sub_scale[:, j], max_scale)
        zero = max_abs < GROUP_MAX_EPS  # the whole block is stored as zero bytes
        iscale = F32(-128) / max_scale
        d16 = fp32_to_fp16_bits(F32(1) / iscale)
        sc = np.minimum(127, nearest_int(iscale[:, None] * sub_scale))  # (nb, 16)
        sc8 = ((sc & 0xFF).astype(np.uint8)).view(np.int8)  # stored as int8_t
        d = fp16_bits_to_fp32(d16)[:, None] * sc8.astype(F32)  # (nb, 16)
        q = np.clip(nearest_int(xs / d.reshape(-1, 1)), -32, 31) + 32
        levels = np.where((d != 0).reshape(-1, 1), q, levels).reshape(nb, 2, 4, 32)
    g = [levels[:, :, k] for k in range(4)]  # value 128*n + 32*k + l, each (nb, 2, 32)
    ql = np.concatenate([(g[0] & 0xF) | ((g[2] & 0xF) << 4),
                         (g[1] & 0xF) | ((g[3] & 0xF) << 4)], axis=2)  # (nb, 2, 64)
    qh = (g[0] >> 4) | ((g[1] >> 4) << 2) | ((g[2] >> 4) << 4) | ((g[3] >> 4) << 6)  # (nb,2,32)
    out = np.empty((nb, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(nb, 128).astype(np.uint8)
    out[:, 128:192] = qh.reshape(nb, 64).astype(np.uint8)
    out[:, 192:208] = sc8.view(np.uint8)
    out[:, 208:210] = d16.view(np.uint8).reshape(nb, 2)
    out[zero] = 0
    return out


@_no_float_warnings
def dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 210) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q6_K``."""
    nb = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(nb, 2, 1, 2, 32)  # (nb, half, nibble, ql half, 32)
    qh = blocks[:, 128:192].reshape(nb, 2, 1, 32)
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(F32)  # (nb, 16)
    d = fp16_bits_to_fp32(blocks[:, 208:210]).reshape(nb, 1)
    low = (ql >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1, 1)) & 0xF  # (nb, 2, 2, 2, 32)
    low = low.reshape(nb, 2, 4, 32)  # group g = 2*nibble + ql half -> value 128*n + 32*g + l
    high = (qh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3  # (nb, 2, 4, 32)
    q = ((low | (high << 4)).astype(np.int16) - 32).astype(F32).reshape(nb, 16, 16)
    return ((d * scales).reshape(nb, 16, 1) * q).reshape(nb, QK_K)


# -- Q2_K, Q3_K (decode only) --------------------------------------------------------------------
@_no_float_warnings
def dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 84) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q2_K``.

    Layout: scales[16] (low nibble scale, high nibble min), qs[64], d fp16, dmin fp16.
    Value 128*n + 32*j + 16*k + l is bits 2j..2j+1 of qs[32*n + 16*k + l], sub-block 8n+2j+k.
    """
    nb = blocks.shape[0]
    scales = blocks[:, 0:16]
    d = fp16_bits_to_fp32(blocks[:, 80:82]).reshape(nb, 1)
    dmin = fp16_bits_to_fp32(blocks[:, 82:84]).reshape(nb, 1)
    dl = (d * (scales & 0xF).astype(F32)).reshape(nb, 2, 4, 2, 1)  # (nb, n, j, k, 1)
    ml = (dmin * (scales >> 4).astype(F32)).reshape(nb, 2, 4, 2, 1)
    qs = blocks[:, 16:80].reshape(nb, 2, 1, 2, 16)
    q = (qs >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1, 1)) & 3  # (nb, 2, 4, 2, 16)
    return (dl * q.astype(F32) - ml).reshape(nb, QK_K)


@_no_float_warnings
def dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    """(nb, 110) uint8 -> (nb, 256) float32; ggml ``dequantize_row_q3_K``.

    Layout: hmask[32], qs[64], scales[12], d fp16. Value 128*n + 32*j + 16*k + l: low 2 bits
    are bits 2j.. of qs[32*n + 16*k + l]; 4 is subtracted unless bit 4n + j of
    hmask[16*k + l] is set; sub-block 8n + 2j + k.
    """
    nb = blocks.shape[0]
    d = fp16_bits_to_fp32(blocks[:, 108:110]).reshape(nb, 1)
    dl = (d * unpack_q3_k_scales(blocks[:, 96:108]).astype(F32)).reshape(nb, 2, 4, 2, 1)
    qs = blocks[:, 32:96].reshape(nb, 2, 1, 2, 16)
    low = (qs >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1, 1)) & 3  # (nb,2,4,2,16)
    hm = blocks[:, 0:32].reshape(nb, 1, 1, 2, 16)
    bit = np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1, 1)  # 4n + j
    minus = ((hm >> bit) & 1) ^ 1  # (nb, 2, 4, 2, 16)
    q = low.astype(np.int16) - (minus.astype(np.int16) << 2)
    return (dl * q.astype(F32)).reshape(nb, QK_K)


# -- codecs --------------------------------------------------------------------------------------
class Q2K(Codec):
    """Q2_K: 16 sub-blocks of 16, each ``d * sc_j * q - dmin * m_j`` with q in 0..3.

    Layout and encoding in :func:`.kquants_lowbit.quantize_q2_k` (ggml's, bit for bit).

    Bound (``max_error``, a posteriori as for Q4_K): every value is within half a step of its
    sub-block's grid ``[-dmin*m_j, -dmin*m_j + 3*d*sc_j]`` or clipped to its nearest end.
    Requantizing is not stable (``requantize_stable = False``, as in ggml): the scale search
    on decoded values need not find the stored scales again.
    """

    name = "q2_k"
    ggml_type = GGMLType.Q2_K
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q2_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nbl.quantize_q2_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q2_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q2_k(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nbl.quantize_q2_k(blocks, None)  # (nb, 84)
        nb = packed.shape[0]
        sc = packed[:, 0:16].astype(np.float64)  # (nb, 16)
        step = fp16_bits_to_fp32(packed[:, 80:82]).astype(np.float64) * (sc % 16)
        lo = -(fp16_bits_to_fp32(packed[:, 82:84]).astype(np.float64) * (sc // 16))
        x = np.asarray(blocks, np.float64).reshape(nb, 16, 16)
        return _grid_bound(x, lo, lo + 3 * step, step)


class Q3K(Codec):
    """Q3_K: 16 sub-blocks of 16, each ``d * (sc_j - 32) * (q - 4)`` with q in 0..7.

    Layout and encoding in :func:`.kquants_lowbit.quantize_q3_k` (ggml's, bit for bit).

    Bound (``max_error``, a posteriori as for Q6_K): every value is within half a step of its
    sub-block's grid ``D_j * [-4, 3]`` (``D_j = d * (sc_j - 32)``, either sign) or clipped to
    its nearest end. Requantizing is not stable (``requantize_stable = False``, as in ggml).
    """

    name = "q3_k"
    ggml_type = GGMLType.Q3_K
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q3_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nbl.quantize_q3_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q3_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q3_k(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nbl.quantize_q3_k(blocks, None)  # (nb, 110)
        nb = packed.shape[0]
        sc = unpack_q3_k_scales(packed[:, 96:108]).astype(np.float64)  # (nb, 16)
        step = fp16_bits_to_fp32(packed[:, 108:110]).astype(np.float64) * sc  # (nb, 16)
        x = np.asarray(blocks, np.float64).reshape(nb, 16, 16)
        return _grid_bound(x, np.minimum(-4 * step, 3 * step), np.maximum(-4 * step, 3 * step),
                           np.abs(step))


class Q4K(Codec):
    """Q4_K: 8 sub-blocks of 32, each ``d * sc_j * q - dmin * m_j`` with q in 0..15.

    Layout in :func:`quantize_q4_k`. Encoding is ggml's (see the module docstring).

    Bound (``max_error``, a posteriori: ggml's scale search may clip outliers on purpose, so no
    bound follows from the input alone): every value is within half a step of its sub-block's
    grid ``[-dmin*m_j, -dmin*m_j + 15*d*sc_j]`` or is clipped to the grid's nearest end:
    ``|x - x'| <= dist(x, grid_j) + d*sc_j / 2`` plus float32 rounding (2**-21 of the
    magnitudes). Infinite where the fp16 super-block scales overflow.

    Requantizing is not stable (``requantize_stable = False``, as in ggml): the scale search
    run on decoded values need not land on the stored scales again (one block in a few hundred
    for Gaussian data; nearly every near-constant block).
    """

    name = "q4_k"
    ggml_type = GGMLType.Q4_K
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q4_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_q4_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q4_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q4_k(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nb.quantize_q4_k(blocks, None)  # (nb, 144)
        nb = packed.shape[0]
        sc, mn = unpack_scale_min_k4(packed[:, 4:16])
        step = fp16_bits_to_fp32(packed[:, 0:2]).astype(np.float64) * sc  # (nb, 8)
        lo = -(fp16_bits_to_fp32(packed[:, 2:4]).astype(np.float64) * mn)  # (nb, 8)
        x = np.asarray(blocks, np.float64).reshape(nb, 8, 32)
        return _grid_bound(x, lo, lo + 15 * step, step)


class Q5K(Codec):
    """Q5_K: as Q4_K with 5-bit levels (q in 0..31); layout in :func:`quantize_q5_k`.

    Encoding is ggml's (``quantize_row_q5_K_ref`` / ``_impl``). Bound and stability as Q4_K's,
    with the grid ``[-dmin*m_j, -dmin*m_j + 31*d*sc_j]``.
    """

    name = "q5_k"
    ggml_type = GGMLType.Q5_K
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q5_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_q5_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q5_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q5_k(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nb.quantize_q5_k(blocks, None)  # (nb, 176)
        nb = packed.shape[0]
        sc, mn = unpack_scale_min_k4(packed[:, 4:16])
        step = fp16_bits_to_fp32(packed[:, 0:2]).astype(np.float64) * sc  # (nb, 8)
        lo = -(fp16_bits_to_fp32(packed[:, 2:4]).astype(np.float64) * mn)  # (nb, 8)
        x = np.asarray(blocks, np.float64).reshape(nb, 8, 32)
        return _grid_bound(x, lo, lo + 31 * step, step)


class Q6K(Codec):
    """Q6_K: 16 sub-blocks of 16, each ``d * sc_j * (q - 32)`` with q in 0..63, sc_j int8.

    Layout in :func:`quantize_q6_k`. Encoding is ggml's (see the module docstring).

    Bound (``max_error``, a posteriori from the stored scales, as for Q4_K): every value is
    within half a step of its sub-block's grid ``D_j * [-32, 31]`` (``D_j = d * sc_j``, either
    sign) or clipped to its nearest end: ``|x - x'| <= dist(x, grid_j) + |D_j| / 2`` plus
    float32 rounding. Infinite where the fp16 scale overflows.

    Requantizing is not stable (``requantize_stable = False``, as in ggml): ``make_qx_quants``
    picks the least-squares best of 19 trial scales, which on decoded values is often not the
    stored one (about a quarter of Gaussian blocks).
    """

    name = "q6_k"
    ggml_type = GGMLType.Q6_K
    uses_importance = True
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return quantize_q6_k(blocks, importance)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        return _nb.quantize_q6_k(blocks, importance)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return dequantize_q6_k(blocks)

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        return _nb.dequantize_q6_k(blocks)

    @classmethod
    def max_error(cls, blocks):
        packed = _nb.quantize_q6_k(blocks, None)  # (nb, 210)
        nb = packed.shape[0]
        sc = np.ascontiguousarray(packed[:, 192:208]).view(np.int8)  # (nb, 16)
        step = fp16_bits_to_fp32(packed[:, 208:210]).astype(np.float64) * sc  # (nb, 16), signed
        x = np.asarray(blocks, np.float64).reshape(nb, 16, 16)
        return _grid_bound(x, np.minimum(-32 * step, 31 * step),
                           np.maximum(-32 * step, 31 * step), np.abs(step))


def _grid_bound(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Per block: max over values of dist(x, [lo, hi]) + step / 2, plus float32 rounding.

    x (nb, n_sub, k) float64; lo, hi, step (nb, n_sub) float64. Returns (nb,) float64, inf for
    blocks whose grid is not finite.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        lo3, hi3, step3 = lo[..., None], hi[..., None], step[..., None]
        dist = np.maximum(lo3 - x, 0) + np.maximum(x - hi3, 0)  # (nb, n_sub, k)
        slack = 2.0**-21 * (np.abs(x) + np.abs(lo3) + np.abs(hi3))
        bound = (dist + step3 / 2 + slack).max(axis=(1, 2))  # (nb,)
        finite = np.isfinite(lo).all(axis=1) & np.isfinite(hi).all(axis=1)
    return np.where(finite, bound, np.inf)
