"""Ternary types TQ1_0 (1.6875 bpw) and TQ2_0 (2.0625 bpw), and BitNet b1.58 ternarization.

Both types store trits t in {-1, 0, 1} and one fp16 scale per 256 values: x' = t * d with
d = max|x| of the block, t = lroundf(x / d) (halves away from zero). They are bit-exact with
ggml's ``quantize_row_tq{1,2}_0_ref`` and ``dequantize_row_tq{1,2}_0``.

:func:`ternarize` applies BitNet b1.58's absmean rule to any weight; :func:`is_ternary` detects
weights that already are trits times one per-tensor scale, which both types then store without
loss (the converter uses it and says so).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..constants import GGMLType
from ..errors import QuantizationError
from ._numba_common import (
    F32_ONE,
    F32_ZERO,
    FP16_TO_F32,
    c_lroundf,
    f32_to_fp16_bits,
    fp16_bits_to_f32,
    nb_c_lroundf,
    nb_f32_to_fp16,
    nb_roundf_small,
)
from .base import Codec

_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.int64)
_F32_INF = np.float32(np.inf)
_CHUNK = 64  # blocks per parallel task (see _legacy_kernels)


def _scale_and_trit_codes(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 256) float32 -> (d (n,) float32, xi (n, 256) int64 = lroundf(x / d) + 1 as C int).

    ``xi`` is 0, 1, 2 for finite scales; when ``1/d`` overflows (all-subnormal blocks) lroundf
    gets inf/NaN, returns LONG_MIN, and ``(int)(LONG_MIN + 1)`` is 1, as in ggml.
    """
    x = np.ascontiguousarray(blocks, dtype=np.float32)
    d = np.abs(x).max(axis=1)  # (n,)
    idv = np.zeros_like(d)
    with np.errstate(over="ignore", divide="ignore"):
        np.divide(F32_ONE, d, out=idv, where=d != 0)
    with np.errstate(invalid="ignore"):
        xi = c_lroundf(x * idv[:, None]) + 1  # (n, 256)
    xi = ((xi + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # long -> int (low 32 bits, signed)
    return d, xi


def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    return f32_to_fp16_bits(v).astype("<u2").view(np.uint8).reshape(-1, 2)  # (n, 2)


def _fp16_error(v: np.ndarray) -> np.ndarray:
    a = np.abs(v.astype(np.float64))
    return np.where(a >= 65520.0, np.inf, np.maximum(a * 2.0**-11, 2.0**-25))


class TQ1_0(Codec):
    """Ternary, 5 trits per byte (base 3), 256 values in 54 bytes.

    ::

        block_tq1_0 (54 bytes):  qs[48] | qh[4] | d: fp16
        qs[m]      m < 32: trits of x[m + 32k],        k = 0..4  (values   0..159)
        qs[32 + m] m < 16: trits of x[160 + m + 16k],  k = 0..4  (values 160..239)
        qh[j]      j < 4:  trits of x[240 + j + 4k],   k = 0..3, then a 0 trit (240..255)

        byte = ceil(256 * sum_k (t_k + 1) * 3**(4 - k) / 243)     (k = 0 most significant)
        decode trit k: ((byte * 3**k) mod 256) * 3 >> 8, minus 1

    Bound: ``|x - x'| <= max|x| / 2 + |d - fp16(d)|`` per block.

    Requantizing is stable (``requantize_stable``): ``dequantize(quantize(x))`` quantizes back to
    the same bytes whenever the stored scale is a nonzero finite fp16 (the largest value maps to
    trit +-1 exactly, so the scale is recovered exactly).
    """

    name = "tq1_0"
    ggml_type = GGMLType.TQ1_0
    requantize_stable = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        d, xi = _scale_and_trit_codes(blocks)  # (n,), (n, 256)
        n = xi.shape[0]
        parts = []
        for lo, hi, width, ntrits in ((0, 160, 32, 5), (160, 240, 16, 5), (240, 256, 4, 4)):
            t = xi[:, lo:hi].reshape(n, ntrits, width)  # (n, k, byte)
            q = np.zeros((n, width), np.int64)
            for k in range(ntrits):
                q = (q * 3 + t[:, k]) & 0xFF  # uint8_t arithmetic
            if ntrits == 4:
                q = (q * 3) & 0xFF  # shift to the most significant trit
            parts.append(((q * 256 + 242) // 243) & 0xFF)  # ceiling division by 3**5
        qs = np.concatenate(parts, axis=1).astype(np.uint8)  # (n, 52)
        return np.concatenate([qs, _fp16_bytes(d)], axis=1)  # (n, 54)

    @classmethod
    def dequantize_blocks(cls, blocks):
        n = blocks.shape[0]
        d = fp16_bits_to_f32(np.ascontiguousarray(blocks[:, 52:54]).view("<u2")[:, 0])  # (n,)
        b = blocks[:, :52].astype(np.int64)  # (n, 52)
        trits = []
        for lo, hi, ntrits in ((0, 32, 5), (32, 48, 5), (48, 52, 4)):
            q = (b[:, None, lo:hi] * _POW3[:ntrits, None]) & 0xFF  # (n, k, bytes)
            trits.append(((q * 3) >> 8).reshape(n, -1))  # k-major: value index = k * w + m
        t = np.concatenate(trits, axis=1) - 1  # (n, 256)
        with np.errstate(invalid="ignore"):
            return t.astype(np.float32) * d[:, None]

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        _tq1_0_quantize(np.ascontiguousarray(blocks, dtype=np.float32), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        _tq1_0_dequantize(np.ascontiguousarray(blocks), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        d = np.abs(np.asarray(blocks, np.float32)).max(axis=1)
        return d / 2 * (1 + 2.0**-20) + _fp16_error(d)


class TQ2_0(Codec):
    """Ternary, 2 bits per value, 256 values in 66 bytes.

    ::

        block_tq2_0 (66 bytes):  qs[64] | d: fp16
        qs[32h + m], bits 2k+1..2k  =  t + 1  of  x[128h + 32k + m]   (h < 2, k < 4, m < 32)

        byte:  7 6 | 5 4 | 3 2 | 1 0
               k=3 | k=2 | k=1 | k=0

    Bound: ``|x - x'| <= max|x| / 2 + |d - fp16(d)|`` per block. (Code 3 never comes out of the
    quantizer; it decodes to 2d, as in ggml.)

    Requantizing is stable (``requantize_stable``): ``dequantize(quantize(x))`` quantizes back to
    the same bytes whenever the stored scale is a nonzero finite fp16 (the largest value maps to
    trit +-1 exactly, so the scale is recovered exactly).
    """

    name = "tq2_0"
    ggml_type = GGMLType.TQ2_0
    requantize_stable = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        d, xi = _scale_and_trit_codes(blocks)  # (n,), (n, 256)
        t = (xi & 3).reshape(-1, 2, 4, 32)  # (n, h, k, m)
        qs = (t << (2 * np.arange(4))[None, None, :, None]).sum(axis=2)  # (n, h, m)
        return np.concatenate([qs.reshape(-1, 64).astype(np.uint8), _fp16_bytes(d)], axis=1)

    @classmethod
    def dequantize_blocks(cls, blocks):
        d = fp16_bits_to_f32(np.ascontiguousarray(blocks[:, 64:66]).view("<u2")[:, 0])  # (n,)
        qs = blocks[:, :64].astype(np.int64).reshape(-1, 2, 1, 32)  # (n, h, 1, m)
        t = ((qs >> (2 * np.arange(4))[None, None, :, None]) & 3) - 1  # (n, h, k, m)
        with np.errstate(invalid="ignore"):
            return t.reshape(-1, 256).astype(np.float32) * d[:, None]  # (n, 256)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        _tq2_0_quantize(np.ascontiguousarray(blocks, dtype=np.float32), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        _tq2_0_dequantize(np.ascontiguousarray(blocks), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        d = np.abs(np.asarray(blocks, np.float32)).max(axis=1)
        return d / 2 * (1 + 2.0**-20) + _fp16_error(d)


# -- Numba kernels ------------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _block_scale(x, i):
    """(d = max |x|, 1/d or 0) of block i. Eight running maxima: max is exact and order-free
    (no NaN reaches a kernel), and one chain of 256 dependent maxima ran ~3x slower."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = F32_ZERO
    for j in range(0, 256, 8):
        a0 = max(a0, abs(x[i, j]))
        a1 = max(a1, abs(x[i, j + 1]))
        a2 = max(a2, abs(x[i, j + 2]))
        a3 = max(a3, abs(x[i, j + 3]))
        a4 = max(a4, abs(x[i, j + 4]))
        a5 = max(a5, abs(x[i, j + 5]))
        a6 = max(a6, abs(x[i, j + 6]))
        a7 = max(a7, abs(x[i, j + 7]))
    amax = max(max(max(a0, a1), max(a2, a3)), max(max(a4, a5), max(a6, a7)))
    idv = F32_ONE / amax if amax != F32_ZERO else F32_ZERO
    return amax, idv


@njit(cache=True, inline="always")
def _trit_codes(x, i, idv, codes):
    """codes[j] = (int)(lroundf(x[i, j] * idv) + 1): 0, 1, 2 (1 for inf/NaN, as in ggml)."""
    qk = x.shape[1]  # 256, read at run time so LLVM vectorizes the loop
    if idv < _F32_INF:  # |x * idv| <= 1: branch-free rounding
        for j in range(qk):
            codes[j] = nb_roundf_small(x[i, j] * idv) + 1
    else:
        for j in range(qk):
            codes[j] = np.int32((nb_c_lroundf(x[i, j] * idv) + 1) & 0xFFFFFFFF)


@njit(cache=True, inline="always")
def _ceil_div_243(q):
    return ((q & 0xFF) * 256 + 242) // 243


@njit(cache=True, parallel=True)
def _tq1_0_quantize(x, out):
    """x (n, 256) float32 -> out (n, 54) uint8."""
    n = x.shape[0]
    w = x.shape[1] // 8  # 32 (run-time value: the loops over it vectorize)
    h = w // 2  # 16
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        codes = np.empty(x.shape[1], np.int32)  # (256,) t + 1 per value
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d, idv = _block_scale(x, i)
            _trit_codes(x, i, idv, codes)
            for m in range(w):  # values 0..159: 5 trits per byte, the first most significant
                q = (codes[m] * 81 + codes[m + w] * 27 + codes[m + 2 * w] * 9
                     + codes[m + 3 * w] * 3 + codes[m + 4 * w])
                out[i, m] = _ceil_div_243(q)
            for m in range(h):  # values 160..239
                b = 5 * w + m
                q = (codes[b] * 81 + codes[b + h] * 27 + codes[b + 2 * h] * 9
                     + codes[b + 3 * h] * 3 + codes[b + 4 * h])
                out[i, w + m] = _ceil_div_243(q)
            for j in range(4):  # values 240..255: 4 trits, then a 0 trit
                b = 240 + j
                q = codes[b] * 27 + codes[b + 4] * 9 + codes[b + 8] * 3 + codes[b + 12]
                out[i, 48 + j] = _ceil_div_243(q * 3)
            hb = nb_f32_to_fp16(d)
            out[i, 52] = hb & 0xFF
            out[i, 53] = hb >> 8


@njit(cache=True, inline="always")
def _trit_value(q, d):
    """Trit k of a base-3 byte, given ``q = byte * 3**k``: ((q mod 256) * 3 >> 8) - 1, times d."""
    return np.float32((((q & 0xFF) * 3) >> 8) - 1) * d


@njit(cache=True, parallel=True)
def _tq1_0_dequantize(blocks, table, out):
    """blocks (n, 54) uint8 -> out (n, 256) float32 (constant trip counts: measured faster)."""
    n = blocks.shape[0]
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = table[np.int64(blocks[i, 52]) | (np.int64(blocks[i, 53]) << 8)]
            p3 = 1
            for k in range(5):  # trit k of every byte, most significant first
                for m in range(32):  # values 0..159
                    out[i, 32 * k + m] = _trit_value(np.int64(blocks[i, m]) * p3, d)
                for m in range(16):  # values 160..239
                    out[i, 160 + 16 * k + m] = _trit_value(np.int64(blocks[i, 32 + m]) * p3, d)
                if k < 4:
                    for j in range(4):  # values 240..255
                        out[i, 240 + 4 * k + j] = _trit_value(np.int64(blocks[i, 48 + j]) * p3, d)
                p3 *= 3


@njit(cache=True, parallel=True)
def _tq2_0_quantize(x, out):
    """x (n, 256) float32 -> out (n, 66) uint8."""
    n = x.shape[0]
    w = x.shape[1] // 8  # 32 (run-time value: the loops over it vectorize)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        codes = np.empty(x.shape[1], np.int32)  # (256,) t + 1 per value
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d, idv = _block_scale(x, i)
            _trit_codes(x, i, idv, codes)
            for hh in range(2):
                b = 4 * w * hh
                for m in range(w):
                    out[i, w * hh + m] = np.uint8(
                        (codes[b + m] & 3) | ((codes[b + w + m] & 3) << 2)
                        | ((codes[b + 2 * w + m] & 3) << 4) | ((codes[b + 3 * w + m] & 3) << 6))
            hb = nb_f32_to_fp16(d)
            out[i, 64] = hb & 0xFF
            out[i, 65] = hb >> 8


@njit(cache=True, parallel=True)
def _tq2_0_dequantize(blocks, table, out):
    """blocks (n, 66) uint8 -> out (n, 256) float32."""
    n = blocks.shape[0]
    w = out.shape[1] // 8  # 32 (run-time value: the loops over it vectorize)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            d = table[np.int32(blocks[i, 64]) | (np.int32(blocks[i, 65]) << 8)]
            for hh in range(2):
                for k in range(4):
                    for m in range(w):
                        q = (np.int32(blocks[i, w * hh + m]) >> (2 * k)) & 3
                        out[i, 4 * w * hh + w * k + m] = np.float32(q - 1) * d


# -- BitNet b1.58 ---------------------------------------------------------------------------------

ABSMEAN_EPS = 1e-5  # BitNet b1.58 clamps the mean |w| from below by this


def ternarize(w: np.ndarray, *, name: str = "tensor") -> tuple[np.ndarray, np.float32]:
    """BitNet b1.58 absmean ternarization: ``w ~ trits * scale``.

    ``scale = max(mean|w|, 1e-5)`` (float32; the mean accumulates in float64), and
    ``trits = clip(round(w * (1 / scale)), -1, 1)`` with round-half-to-even, as ``torch.round``
    in BitNet's ``weight_quant``.

    Parameters
    ----------
    w:
        Weights of any shape (converted to float32).

    Returns
    -------
    trits:
        int8 array of ``w``'s shape with values in {-1, 0, 1}.
    scale:
        float32 per-tensor scale.
    """
    x = np.asarray(w, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        bad = np.unravel_index(int(np.argmin(np.isfinite(x).reshape(-1))), x.shape)
        raise QuantizationError(
            f"{name}: non-finite value {x[bad]!r} at index {tuple(int(i) for i in bad)}; "
            "cannot ternarize"
        )
    mean = float(np.abs(x).mean(dtype=np.float64)) if x.size else 0.0
    scale = np.float32(max(mean, ABSMEAN_EPS))
    trits = np.clip(np.round(x * (np.float32(1) / scale)), -1, 1).astype(np.int8)
    return trits, scale


def is_ternary(w: np.ndarray, *, fp16_exact: bool = True) -> float | None:
    """The scale ``s`` if ``w`` is exactly ``trits * s`` for one ``s > 0``, else None.

    With ``fp16_exact`` (the default) ``s`` must also be an fp16 number, which is what makes
    TQ1_0 / TQ2_0 reproduce ``w`` exactly (each block stores ``fp16(max|w|)``; -0.0 comes back
    as +0.0). An all-zero (or empty) tensor returns 0.0, so test the result with ``is None``.
    """
    a = np.abs(np.asarray(w, dtype=np.float32)).reshape(-1)  # (n,)
    nz = a[a != 0]
    if nz.size == 0:
        return 0.0
    s = nz.max()
    if not np.isfinite(s) or nz.min() != s:
        return None
    if fp16_exact and FP16_TO_F32[f32_to_fp16_bits(s)] != s:
        return None
    return float(s)
