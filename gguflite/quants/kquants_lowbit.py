"""Q2_K and Q3_K encoders in NumPy, bit-exact with ggml (16 sub-blocks of 16 values each).

- Q2_K without importance: ``quantize_row_q2_K_ref`` (``make_qkx2_quants`` on |x| weights with
  the mean absolute error, scales and mins to 4 bits by their maxima); with importance:
  ``quantize_row_q2_K_impl`` (``make_qkx3_quants`` + ``make_qp_quants``).
- Q3_K without importance: ``quantize_row_q3_K_ref`` (``make_q3_quants``, 6-bit signed
  scales by the largest-magnitude scale); with importance: ``quantize_row_q3_K_impl``
  (weighted ``make_qx_quants`` for the values and again for the scales).

The float32 discipline is that of :mod:`.kquants` (sequential sums, ggml's operation order);
the Numba kernels in :mod:`.kquants_lowbit_numba` run the same sequence. Decoders and the
codec classes are in :mod:`.kquants`.
"""

from __future__ import annotations

import numpy as np

from ..constants import QK_K
from .kquants_search import (
    F32,
    fp16_bits_to_fp32,
    fp32_to_fp16_bits,
    make_q3_quants,
    make_qkx_quants,
    make_qp_quants,
    make_qx_quants,
    nearest_int,
    seq_sum,
)


def pack_2bit_levels(levels: np.ndarray) -> np.ndarray:
    """(nb, 256) levels 0..3 -> (nb, 64) u8, as Q2_K's and Q3_K's ``qs``.

    Value 128*n + 32*j + l sits in bits 2j..2j+1 of byte 32*n + l.
    """
    nb = levels.shape[0]
    q = levels.astype(np.int64).reshape(nb, 2, 4, 32)  # (nb, half n, shift j, 32)
    packed = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    return packed.reshape(nb, 64).astype(np.uint8)


def _max_of(values: np.ndarray) -> np.ndarray:
    """C's ``if (v > max) max = v`` from max = 0 over columns: (nb, k) -> (nb,)."""
    best = np.zeros(values.shape[0], F32)
    for j in range(values.shape[1]):
        best = np.where(values[:, j] > best, values[:, j], best)
    return best


# -- Q2_K ----------------------------------------------------------------------------------------
def quantize_q2_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 84) uint8 Q2_K blocks.

    Block layout (84 bytes)::

        scales[16]  sub-block j: low nibble 4-bit scale, high nibble 4-bit min
        qs[64]      2-bit levels, see pack_2bit_levels
        d           fp16 super-block scale of the scales
        dmin        fp16 super-block scale of the mins

    value = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4), j = value index // 16.
    """
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks, dtype=F32)
    xs = x.reshape(nb * 16, 16)  # (nb*16, 16) sub-blocks
    with np.errstate(all="ignore"):
        if importance is None:
            sub_scale, sub_min, levels = make_qkx_quants(xs, np.abs(xs), 3, -0.5, 0.1, 15,
                                                         use_mad=True)
            sub_scale, sub_min = sub_scale.reshape(nb, 16), sub_min.reshape(nb, 16)
            max_scale, max_min = _max_of(sub_scale), _max_of(sub_min)
            has_s, has_m = max_scale > 0, max_min > 0
            ls = np.where(has_s[:, None],
                          nearest_int((F32(15) / max_scale)[:, None] * sub_scale), 0)
            lm = np.where(has_m[:, None],
                          nearest_int((F32(15) / max_min)[:, None] * sub_min), 0)
            d16 = fp32_to_fp16_bits(np.where(has_s, max_scale / F32(15), F32(0)))
            dmin16 = fp32_to_fp16_bits(np.where(has_m, max_min / F32(15), F32(0)))
        else:
            qw = np.asarray(importance, dtype=F32).reshape(nb * 16, 16)
            sigma2 = seq_sum(x * x) / F32(QK_K)  # (nb,)
            w = qw * np.sqrt(np.repeat(sigma2, 16)[:, None] + xs * xs)  # (nb*16, 16)
            sw = seq_sum(w).reshape(nb, 16)
            sub_scale, sub_min, levels = make_qkx_quants(xs, w, 3, -0.9, 0.05, 36)
            d_block, ls = make_qp_quants(sub_scale.reshape(nb, 16), 15, sw)
            m_block, lm = make_qp_quants(sub_min.reshape(nb, 16), 15, sw)
            d16 = fp32_to_fp16_bits(d_block)
            dmin16 = fp32_to_fp16_bits(m_block)
        scales = ((ls & 0xFF) | (lm << 4)) & 0xFF  # (nb, 16): uint8 stores, as in C
        d = fp16_bits_to_fp32(d16)[:, None] * (scales & 0xF).astype(F32)  # (nb, 16)
        dm = fp16_bits_to_fp32(dmin16)[:, None] * (scales >> 4).astype(F32)
        q = np.clip(nearest_int((xs + dm.reshape(-1, 1)) / d.reshape(-1, 1)), 0, 3)
        levels = np.where((d != 0).reshape(-1, 1), q, levels).reshape(nb, QK_K)
    out = np.empty((nb, 84), dtype=np.uint8)
    out[:, 0:16] = scales.astype(np.uint8)
    out[:, 16:80] = pack_2bit_levels(levels)
    out[:, 80:82] = d16.view(np.uint8).reshape(nb, 2)
    out[:, 82:84] = dmin16.view(np.uint8).reshape(nb, 2)
    return out


# -- Q3_K ----------------------------------------------------------------------------------------
def pack_q3_k_scales(levels: np.ndarray) -> np.ndarray:
    """(nb, 16) 6-bit scale levels 0..63 -> (nb, 12) u8; inverse of ``unpack_q3_k_scales``.

    ::

        byte 0..7    low nibble: scale j low 4 bits; high nibble: scale j + 8 low 4 bits
        byte 8..11   bits 2k..2k+1 of byte 8+i: high 2 bits of scale 4k + i
    """
    ls = levels.astype(np.int64)
    out = np.zeros((ls.shape[0], 12), dtype=np.int64)
    out[:, 0:8] = (ls[:, 0:8] & 0xF) | ((ls[:, 8:16] & 0xF) << 4)
    hi = (ls >> 4).reshape(-1, 4, 4)  # (nb, k, i): scale 4k + i
    out[:, 8:12] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    return (out & 0xFF).astype(np.uint8)


def unpack_q3_k_scales(scales: np.ndarray) -> np.ndarray:
    """Q3_K's sixteen 6-bit scales from 12 bytes: (n, 12) u8 -> (n, 16) int (already - 32).

    ::

        byte 0..7    low nibble: scales 0-7 low 4 bits; high nibble: scales 8-15 low 4 bits
        byte 8..11   bits 2k..2k+1 of byte 8+i: high 2 bits of scale 4k + i
    """
    s = scales.astype(np.int16)
    low = np.concatenate([s[:, 0:8] & 0xF, s[:, 0:8] >> 4], axis=1)  # (n, 16)
    hi = (s[:, 8:12].reshape(-1, 1, 4) >> np.array([0, 2, 4, 6]).reshape(1, 4, 1)) & 3
    return (low | (hi.reshape(-1, 16) << 4)) - 32


def quantize_q3_k(blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
    """(nb, 256) float32 [+ (nb, 256) importance] -> (nb, 110) uint8 Q3_K blocks.

    Block layout (110 bytes)::

        hmask[32]   bit k of byte l: value 32*k + l has level >= 4 (its high bit)
        qs[64]      low 2 bits of the levels, see pack_2bit_levels
        scales[12]  sixteen 6-bit scales (+32), see pack_q3_k_scales
        d           fp16 super-block scale

    value = d * (scale_j - 32) * (q - 4), q in 0..7, j = value index // 16.
    """
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks, dtype=F32)
    xs = x.reshape(nb * 16, 16)  # (nb*16, 16) sub-blocks
    with np.errstate(all="ignore"):
        if importance is None:
            sub_scale, levels = make_q3_quants(xs, 4)
            sub_scale = sub_scale.reshape(nb, 16)
            max_scale = np.zeros(nb, F32)
            amax = np.zeros(nb, F32)
            for j in range(16):
                a = np.abs(sub_scale[:, j])
                bigger = a > amax
                amax = np.where(bigger, a, amax)
                max_scale = np.where(bigger, sub_scale[:, j], max_scale)
            has = max_scale != 0
            iscale = F32(-32) / max_scale
            raw = nearest_int(iscale[:, None] * sub_scale)
            raw = ((raw + 128) & 0xFF) - 128  # int8_t l = nearest_int(...)
            ls = np.where(has[:, None], np.clip(raw, -32, 31) + 32, 0)  # (nb, 16)
            packed = np.where(has[:, None], pack_q3_k_scales(ls), 0).astype(np.uint8)
            d16 = fp32_to_fp16_bits(np.where(has, F32(1) / iscale, F32(0)))
        else:
            qw = np.asarray(importance, dtype=F32).reshape(nb * 16, 16)
            sigma2 = (F32(2) * seq_sum(x * x)) / F32(QK_K)  # (nb,)
            w = qw * np.sqrt(np.repeat(sigma2, 16)[:, None] + xs * xs)  # (nb*16, 16)
            sw = seq_sum(w).reshape(nb, 16)
            sub_scale, levels = make_qx_quants(xs, 4, w)
            d_block, ls = make_qx_quants(sub_scale.reshape(nb, 16), 32, sw)
            packed = pack_q3_k_scales(ls)
            d16 = fp32_to_fp16_bits(d_block)
        sc = unpack_q3_k_scales(packed).astype(F32)  # (nb, 16), already - 32
        d = fp16_bits_to_fp32(d16)[:, None] * sc
        q = np.clip(nearest_int(xs / d.reshape(-1, 1)), -4, 3) + 4
        levels = np.where((d != 0).reshape(-1, 1), q, levels).reshape(nb, 8, 32)
    high = (levels > 3).astype(np.int64)  # (nb, k, 32): value 32*k + l
    hmask = (high << np.arange(8).reshape(1, 8, 1)).sum(axis=1)  # (nb, 32), disjoint bits
    out = np.empty((nb, 110), dtype=np.uint8)
    out[:, 0:32] = hmask.astype(np.uint8)
    out[:, 32:96] = pack_2bit_levels((levels & 3).reshape(nb, QK_K))
    out[:, 96:108] = packed
    out[:, 108:110] = d16.view(np.uint8).reshape(nb, 2)
    return out
