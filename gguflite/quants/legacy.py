"""The legacy 32-element block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.

Each codec is bit-exact with ggml's ``quantize_row_<t>_ref`` (what ``ggml_quantize_chunk`` runs
without an importance matrix) and ``dequantize_row_<t>``. The plain NumPy functions are the
reference; the Numba kernels in :mod:`._legacy_kernels` are the fast path, and tests prove the
two agree bit for bit.

Importance (imatrix): Q8_0 ignores it, as ggml does. Q4_0 .. Q5_1 take it through
``quantize(x, importance=...)`` and then run ggml's ``quantize_row_<t>_impl``: per-value
weights ``qw * sqrtf(sigma2 + x*x)`` with ``sigma2`` the row's mean square (a sequential float32
sum over the whole row, which is why this happens per row in :meth:`_RowImportance.quantize`
and not per block), then ``make_qx_quants`` (Q4_0, Q5_0) or ``make_qkx3_quants`` (Q4_1, Q5_1):
the NumPy versions from :mod:`.kquants_search` on the reference path, the Numba ones from
:mod:`.kquants_numba` (one row per task) on the fast path. Block-level calls
(``quantize_blocks``) cannot see rows and ignore importance; use ``quantize``.

Error bounds (``max_error``): with ``d`` the float32 scale and ``D = fp16(d)`` the stored one,
``|x - x'| <= (rounding step) * |d| + q_max * |d - D| (+ |m - M| for the types with a min)``,
where an fp16 rounding error is at most ``max(2**-11 * |v|, 2**-25)`` and is infinite when ``v``
overflows fp16 (ggml then stores inf, and so do we).
"""

from __future__ import annotations

import numpy as np

from ..constants import GGMLType
from ..errors import QuantizationError
from . import _legacy_kernels as K
from ._numba_common import (
    F32_HALF,
    F32_ONE,
    F32_ZERO,
    FP16_TO_F32,
    c_f32_to_i8,
    c_f32_to_i32,
    c_roundf,
    f32_to_fp16_bits,
    fp16_bits_to_f32,
)
from .base import Codec
from .kquants_search import make_qkx_quants, make_qx_quants, seq_sum

_FP16_MAX_FINITE_INPUT = 65520.0  # float32 values >= this round to inf in fp16


# -- helpers shared by the reference paths ---------------------------------------------------

def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    """(n,) float32 -> (n, 2) uint8: the little-endian fp16 bytes ggml stores."""
    return f32_to_fp16_bits(v).astype("<u2").view(np.uint8).reshape(-1, 2)


def _fp16_field(blocks: np.ndarray, start: int) -> np.ndarray:
    """(n, type_size) uint8 -> (n,) float32 from the fp16 at byte ``start`` of each block."""
    lo = blocks[:, start].astype(np.uint16)
    hi = blocks[:, start + 1].astype(np.uint16)
    return fp16_bits_to_f32(lo | (hi << 8))


def _inverse(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f`` elementwise in float32 (1/subnormal overflows to inf, as in C)."""
    out = np.zeros_like(d)
    with np.errstate(over="ignore", divide="ignore"):
        np.divide(F32_ONE, d, out=out, where=d != 0)
    return out


def _signed_absmax(x: np.ndarray) -> np.ndarray:
    """(n, 32) -> (n,): the first value of largest magnitude, keeping its sign.

    C loop: ``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` from ``max = 0.0f``, so an
    all-zero block (even of -0.0) gives +0.0.
    """
    first = np.abs(x).argmax(axis=1)  # (n,) first index of the largest |x|
    mx = x[np.arange(x.shape[0]), first]  # (n,)
    return np.where(mx != 0, mx, F32_ZERO)


def _first_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32) -> (min, max) as the C loops ``if (v < min) min = v;`` find them.

    The loops keep the first of equal values, which only shows for +0.0 / -0.0: the stored
    fp16 then carries the sign of the first zero.
    """
    mn = x.min(axis=1)  # (n,)
    mx = x.max(axis=1)  # (n,)
    for ext in (mn, mx):
        rows = np.flatnonzero(ext == 0)
        if rows.size:
            first = (x[rows] == 0).argmax(axis=1)  # (k,) first zero of each such row
            ext[rows] = x[rows, first]
    return mn, mx


def _fp16_error(v: np.ndarray) -> np.ndarray:
    """Largest |v - fp16(v)| (float64), inf where v overflows fp16."""
    a = np.abs(v.astype(np.float64))
    err = np.maximum(a * 2.0**-11, 2.0**-25)
    return np.where(a >= _FP16_MAX_FINITE_INPUT, np.inf, err)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) ints -> (n, 16) uint8: byte j = q[j] low nibble | q[j + 16] high nibble.

    ::

        byte j:  7 6 5 4 | 3 2 1 0
                 q[j+16] |  q[j]        (low 4 bits of each)
    """
    return ((q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)).astype(np.uint8)


def _unpack_nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) uint8 -> (n, 32) int64: elements 0..15 are low nibbles, 16..31 high."""
    qs = qs.astype(np.int64)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)  # (n, 32)


def _pack_fifth_bits(q: np.ndarray) -> np.ndarray:
    """(n, 32) ints -> (n, 4) uint8: the little-endian uint32 ``qh``, bit j = bit 4 of q[j]."""
    bits = ((q >> 4) & 1).astype(np.uint32)  # (n, 32)
    qh = (bits << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)  # (n,)
    return qh.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_fifth_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 4) uint8 -> (n, 32) int64 holding 0x10 where element j has its fifth bit set."""
    word = np.ascontiguousarray(qh).view("<u4").astype(np.int64)  # (n, 1)
    return ((word >> np.arange(32)) & 1) << 4  # (n, 32)


def _f32(blocks: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(blocks, dtype=np.float32)


# -- codecs -----------------------------------------------------------------------------------

class _RowImportance(Codec):
    """Adds ggml's importance-weighted encoding (``quantize_row_<t>_impl``) to a legacy type."""

    uses_importance = True

    @classmethod
    def quantize(cls, array, *, importance=None, reference=False, name="tensor"):
        # The plain encoding also validates the input (finite values, row length) with the
        # base class's messages; with importance it is then replaced.
        plain = super().quantize(array, reference=reference, name=name)
        if importance is None:
            return plain
        x = np.asarray(array, dtype=np.float32)
        n = x.shape[-1] if x.ndim else 1
        imp = np.asarray(importance, dtype=np.float32)
        if imp.shape != (n,):
            raise QuantizationError(
                f"{name}: importance must have shape ({n},) (one weight per column), "
                f"got {imp.shape}"
            )
        if not np.isfinite(imp).all():
            raise QuantizationError(f"{name}: importance has non-finite values")
        if x.size == 0:
            return plain
        rows = np.ascontiguousarray(x).reshape(-1, n)  # (rows, n)
        if not reference:
            nb = rows.size // 32
            d, m = np.empty(nb, np.float32), np.empty(nb, np.float32)
            lev = np.empty((nb, 32), np.int64)
            K.weighted_levels(rows, imp, cls._asymmetric, cls._nmax, d, m, lev)
            return cls._pack_weighted(d, m, lev).reshape(plain.shape)
        with np.errstate(over="ignore"):
            sigma2 = seq_sum(rows * rows) / np.float32(n)  # (rows,) as ggml: one pass, float32
            w = imp[None, :] * np.sqrt(sigma2[:, None] + rows * rows)  # (rows, n)
        blocks = rows.reshape(-1, 32)  # (n_blocks, 32)
        w = w.reshape(-1, 32)  # (n_blocks, 32)
        with np.errstate(all="ignore"):
            if cls._asymmetric:
                d, the_min, lev = make_qkx_quants(blocks, w, cls._nmax, -0.9, 0.05, 36)
                m = -the_min  # ggml stores -min: the offset added back
            else:
                d, lev = make_qx_quants(blocks, cls._nmax, w)
                m = np.zeros_like(d)
        return cls._pack_weighted(d, m, lev.astype(np.int64)).reshape(plain.shape)

    _asymmetric: bool  # make_qkx3_quants (scale and offset) vs make_qx_quants (scale only)
    _nmax: int

    @classmethod
    def _pack_weighted(cls, d: np.ndarray, m: np.ndarray, lev: np.ndarray) -> np.ndarray:
        """(n,) scales, (n,) offsets, (n, 32) levels -> (n, type_size) block bytes."""
        raise NotImplementedError  # each subclass


class Q8_0(Codec):
    """8-bit, one fp16 scale per 32 values.

    ::

        block_q8_0 (34 bytes):  d: fp16 | qs[32]: int8      x[j] = qs[j] * d
        d = max|x| / 127,  qs[j] = roundf(x[j] / d)   (halves away from zero)

    Bound: ``|x - x'| <= |d| / 2 + 127 * |d - fp16(d)|``.

    Requantizing is stable (``requantize_stable``): ``dequantize(quantize(x))`` quantizes back to
    the same bytes whenever the stored scale is a nonzero finite fp16 (the block of largest
    magnitude maps to the end of the grid exactly, so the scale is recovered exactly).
    """

    name = "q8_0"
    ggml_type = GGMLType.Q8_0
    requantize_stable = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        x = _f32(blocks)  # (n, 32)
        amax = np.abs(x).max(axis=1)  # (n,)
        d = amax / np.float32(127)  # (n,)
        v = x * _inverse(d)[:, None]  # (n, 32) float32
        with np.errstate(invalid="ignore"):
            qs = c_f32_to_i8(c_roundf(v)).astype(np.uint8)  # (n, 32) two's complement bytes
        return np.concatenate([_fp16_bytes(d), qs], axis=1)  # (n, 34)

    @classmethod
    def dequantize_blocks(cls, blocks):
        d = _fp16_field(blocks, 0)  # (n,)
        qs = np.ascontiguousarray(blocks[:, 2:]).view(np.int8)  # (n, 32)
        with np.errstate(invalid="ignore"):  # inf scale * 0
            return qs.astype(np.float32) * d[:, None]  # (n, 32)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        K.q8_0_quantize(_f32(blocks), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        K.q8_0_dequantize(np.ascontiguousarray(blocks).view(np.int8), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        d = np.abs(_f32(blocks)).max(axis=1) / np.float32(127)
        return d / 2 * (1 + 2.0**-20) + 127 * _fp16_error(d)


class Q4_0(_RowImportance):
    """4-bit, one fp16 scale per 32 values, symmetric.

    ::

        block_q4_0 (18 bytes):  d: fp16 | qs[16]: nibbles     x[j] = (q[j] - 8) * d
        qs[j] = q[j] | q[j + 16] << 4
        d = max / -8 (max: the value of largest |x|, with its sign)
        q[j] = MIN(15, (int8_t)(x[j] / d + 8.5f))

    Bound: ``|x - x'| <= |d| + 8 * |d - fp16(d)|`` (the clamp to 15 costs up to one step).

    Requantizing is stable (``requantize_stable``): ``dequantize(quantize(x))`` quantizes back to
    the same bytes whenever the stored scale is a nonzero finite fp16 (the block of largest
    magnitude maps to the end of the grid exactly, so the scale is recovered exactly).
    """

    name = "q4_0"
    ggml_type = GGMLType.Q4_0
    requantize_stable = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        x = _f32(blocks)  # (n, 32)
        d = _signed_absmax(x) / np.float32(-8)  # (n,)
        v = x * _inverse(d)[:, None] + np.float32(8.5)  # (n, 32) float32
        with np.errstate(invalid="ignore"):
            q = np.minimum(15, c_f32_to_i8(v)) & 0xFF  # (n, 32) as uint8_t
        return np.concatenate([_fp16_bytes(d), _pack_nibbles(q)], axis=1)  # (n, 18)

    _asymmetric, _nmax = False, 8

    @classmethod
    def _pack_weighted(cls, d, m, lev):
        return np.concatenate([_fp16_bytes(d), _pack_nibbles(lev)], axis=1)  # (n, 18)

    @classmethod
    def dequantize_blocks(cls, blocks):
        d = _fp16_field(blocks, 0)  # (n,)
        q = _unpack_nibbles(blocks[:, 2:]) - 8  # (n, 32)
        with np.errstate(invalid="ignore"):  # inf scale * 0
            return q.astype(np.float32) * d[:, None]  # (n, 32)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        K.q4_0_quantize(_f32(blocks), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        K.q4_0_dequantize(np.ascontiguousarray(blocks), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        d = np.abs(_f32(blocks)).max(axis=1) / np.float32(8)
        return d * (1 + 2.0**-20) + 8 * _fp16_error(d)


class Q4_1(_RowImportance):
    """4-bit, an fp16 scale and an fp16 minimum per 32 values.

    ::

        block_q4_1 (20 bytes):  d: fp16 | m: fp16 | qs[16]: nibbles    x[j] = q[j] * d + m
        d = (max - min) / 15,  m = min
        q[j] = MIN(15, (int8_t)((x[j] - min) / d + 0.5f))

    Bound: ``|x - x'| <= |d| / 2 + 15 * |d - fp16(d)| + |m - fp16(m)|`` plus float32 rounding
    of ``q * d + m``.

    Requantizing is not always stable (``requantize_stable = False``, as in ggml): when the
    block's range is below about 2**-18 of its magnitude, ``q * d + m`` rounds in float32 and
    the recomputed scale differs. Blocks whose range is comparable to their magnitude are stable.
    """

    name = "q4_1"
    ggml_type = GGMLType.Q4_1
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        x = _f32(blocks)  # (n, 32)
        mn, mx = _first_min_max(x)  # (n,), (n,)
        with np.errstate(over="ignore", invalid="ignore"):
            d = (mx - mn) / np.float32(15)  # (n,) inf if the range overflows float32
            v = (x - mn[:, None]) * _inverse(d)[:, None] + F32_HALF  # (n, 32)
        with np.errstate(invalid="ignore"):
            q = np.minimum(15, c_f32_to_i8(v)) & 0xFF  # (n, 32)
        return np.concatenate([_fp16_bytes(d), _fp16_bytes(mn), _pack_nibbles(q)], axis=1)

    _asymmetric, _nmax = True, 15

    @classmethod
    def _pack_weighted(cls, d, m, lev):
        return np.concatenate([_fp16_bytes(d), _fp16_bytes(m), _pack_nibbles(lev)], axis=1)

    @classmethod
    def dequantize_blocks(cls, blocks):
        d = _fp16_field(blocks, 0)  # (n,)
        m = _fp16_field(blocks, 2)  # (n,)
        q = _unpack_nibbles(blocks[:, 4:])  # (n, 32)
        with np.errstate(invalid="ignore"):  # inf scale * 0, inf + -inf
            return q.astype(np.float32) * d[:, None] + m[:, None]  # (n, 32)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        K.q4_1_quantize(_f32(blocks), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        K.q4_1_dequantize(np.ascontiguousarray(blocks), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        x = _f32(blocks).astype(np.float64)
        mn, mx = x.min(axis=1), x.max(axis=1)
        d = (mx - mn) / 15
        return (d / 2 * (1 + 2.0**-20) + 15 * _fp16_error(d) + _fp16_error(mn)
                + 2.0**-23 * (np.abs(mn) + np.abs(mx) + 2 * d))


class Q5_0(_RowImportance):
    """5-bit, one fp16 scale per 32 values, symmetric.

    ::

        block_q5_0 (22 bytes):  d: fp16 | qh: uint32 LE | qs[16]: nibbles
        q[j] (5 bits) = low nibble from qs (as Q4_0) | bit j of qh << 4
        x[j] = (q[j] - 16) * d,  d = max / -16,  q[j] = MIN(31, (int8_t)(x[j] / d + 16.5f))

        qh bit:  31 ........ 16 | 15 ......... 0
                 q[31..16] >> 4 | q[15..0] >> 4

    Bound: ``|x - x'| <= |d| + 16 * |d - fp16(d)|``.

    Requantizing is stable (``requantize_stable``): ``dequantize(quantize(x))`` quantizes back to
    the same bytes whenever the stored scale is a nonzero finite fp16 (the block of largest
    magnitude maps to the end of the grid exactly, so the scale is recovered exactly).
    """

    name = "q5_0"
    ggml_type = GGMLType.Q5_0
    requantize_stable = True

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        x = _f32(blocks)  # (n, 32)
        d = _signed_absmax(x) / np.float32(-16)  # (n,)
        v = x * _inverse(d)[:, None] + np.float32(16.5)  # (n, 32)
        with np.errstate(invalid="ignore"):
            q = np.minimum(31, c_f32_to_i8(v)) & 0xFF  # (n, 32)
        return np.concatenate([_fp16_bytes(d), _pack_fifth_bits(q), _pack_nibbles(q)], axis=1)

    _asymmetric, _nmax = False, 16

    @classmethod
    def _pack_weighted(cls, d, m, lev):
        return np.concatenate([_fp16_bytes(d), _pack_fifth_bits(lev), _pack_nibbles(lev)], axis=1)

    @classmethod
    def dequantize_blocks(cls, blocks):
        d = _fp16_field(blocks, 0)  # (n,)
        q = (_unpack_nibbles(blocks[:, 6:]) | _unpack_fifth_bits(blocks[:, 2:6])) - 16
        with np.errstate(invalid="ignore"):  # inf scale * 0
            return q.astype(np.float32) * d[:, None]  # (n, 32)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        K.q5_0_quantize(_f32(blocks), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        K.q5_0_dequantize(np.ascontiguousarray(blocks), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        d = np.abs(_f32(blocks)).max(axis=1) / np.float32(16)
        return d * (1 + 2.0**-20) + 16 * _fp16_error(d)


class Q5_1(_RowImportance):
    """5-bit, an fp16 scale and an fp16 minimum per 32 values.

    ::

        block_q5_1 (24 bytes):  d: fp16 | m: fp16 | qh: uint32 LE | qs[16]: nibbles
        x[j] = q[j] * d + m,  d = (max - min) / 31,  q[j] = (uint8_t)((x[j] - min) / d + 0.5f)
        (q split into nibbles and fifth bits as in Q5_0)

    Bound: ``|x - x'| <= |d| / 2 + 31 * |d - fp16(d)| + |m - fp16(m)|`` plus float32 rounding.

    Requantizing is not always stable (``requantize_stable = False``, as in ggml): when the
    block's range is below about 2**-18 of its magnitude, ``q * d + m`` rounds in float32 and
    the recomputed scale differs. Blocks whose range is comparable to their magnitude are stable.
    """

    name = "q5_1"
    ggml_type = GGMLType.Q5_1
    requantize_stable = False

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        x = _f32(blocks)  # (n, 32)
        mn, mx = _first_min_max(x)  # (n,), (n,)
        with np.errstate(over="ignore", invalid="ignore"):
            d = (mx - mn) / np.float32(31)  # (n,)
            v = (x - mn[:, None]) * _inverse(d)[:, None] + F32_HALF  # (n, 32)
        with np.errstate(invalid="ignore"):
            q = c_f32_to_i32(v) & 0xFF  # (n, 32) as uint8_t, no clamp in ggml
        return np.concatenate(
            [_fp16_bytes(d), _fp16_bytes(mn), _pack_fifth_bits(q), _pack_nibbles(q)], axis=1
        )  # (n, 24)

    _asymmetric, _nmax = True, 31

    @classmethod
    def _pack_weighted(cls, d, m, lev):
        return np.concatenate([_fp16_bytes(d), _fp16_bytes(m), _pack_fifth_bits(lev),
                               _pack_nibbles(lev)], axis=1)

    @classmethod
    def dequantize_blocks(cls, blocks):
        d = _fp16_field(blocks, 0)  # (n,)
        m = _fp16_field(blocks, 2)  # (n,)
        q = _unpack_nibbles(blocks[:, 8:]) | _unpack_fifth_bits(blocks[:, 4:8])  # (n, 32)
        with np.errstate(invalid="ignore"):  # inf scale * 0, inf + -inf
            return q.astype(np.float32) * d[:, None] + m[:, None]  # (n, 32)

    @classmethod
    def quantize_blocks_fast(cls, blocks, importance):
        out = np.empty((blocks.shape[0], cls.type_size), np.uint8)
        K.q5_1_quantize(_f32(blocks), out)
        return out

    @classmethod
    def dequantize_blocks_fast(cls, blocks):
        out = np.empty((blocks.shape[0], cls.block_size), np.float32)
        K.q5_1_dequantize(np.ascontiguousarray(blocks), FP16_TO_F32, out)
        return out

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        x = _f32(blocks).astype(np.float64)
        mn, mx = x.min(axis=1), x.max(axis=1)
        d = (mx - mn) / 31
        return (d / 2 * (1 + 2.0**-20) + 31 * _fp16_error(d) + _fp16_error(mn)
                + 2.0**-23 * (np.abs(mn) + np.abs(mx) + 2 * d))
