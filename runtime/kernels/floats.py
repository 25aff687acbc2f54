"""Row kernels of the float weight types F32, F16 and BF16 (activations stay float32).

``dot_<type>(w, p, n, x)``: the row of ``n`` weights starting at byte ``p`` of the flat weight
bytes ``w`` times ``x`` (n,) float32; 32 weights per vector step, then a scalar tail.
``deq_<type>(w, p, n, dst, off)``: the row converted to float32 (exact) into ``dst[off:]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .vector_f32 import fma_bf16x32, fma_f16x32, fma_f32x32
from .vector_ir import bf16, f16, f32at, hsum, vzero


@njit(cache=True, fastmath=True, inline="always")
def dot_f32(w, p, n, x):
    acc = vzero()
    n32 = n - n % 32
    for i in range(0, n32, 32):
        acc = fma_f32x32(acc, w, p + 4 * i, x, i)
    tail = np.float32(0.0)
    for i in range(n32, n):
        tail += f32at(w, p + 4 * i) * x[i]
    return hsum(acc) + tail


@njit(cache=True, fastmath=True, inline="always")
def dot_f16(w, p, n, x):
    acc = vzero()
    n32 = n - n % 32
    for i in range(0, n32, 32):
        acc = fma_f16x32(acc, w, p + 2 * i, x, i)
    tail = np.float32(0.0)
    for i in range(n32, n):
        tail += f16(w, p + 2 * i) * x[i]
    return hsum(acc) + tail


@njit(cache=True, fastmath=True, inline="always")
def dot_bf16(w, p, n, x):
    acc = vzero()
    n32 = n - n % 32
    for i in range(0, n32, 32):
        acc = fma_bf16x32(acc, w, p + 2 * i, x, i)
    tail = np.float32(0.0)
    for i in range(n32, n):
        tail += bf16(w, p + 2 * i) * x[i]
    return hsum(acc) + tail


@njit(cache=True)
def deq_f32(w, p, n, dst, off):
    for i in range(n):
        dst[off + i] = f32at(w, p + 4 * i)


@njit(cache=True)
def deq_f16(w, p, n, dst, off):
    for i in range(n):
        dst[off + i] = f16(w, p + 2 * i)


@njit(cache=True)
def deq_bf16(w, p, n, dst, off):
    for i in range(n):
        dst[off + i] = bf16(w, p + 2 * i)


# -- row ranges: the row loop in the same function as the element loop, because an inlined
# helper that takes arrays and loops costs an atomic incref/decref per array per call (see
# legacy._rows_legacy) ------------------------------------------------------------------------
@njit(cache=True, fastmath=True, inline="always")
def rows_f32(w, row_bytes, n, lo, hi, y, x):
    """y[r] = row r . x for r in [lo, hi)."""
    n32 = n - n % 32
    for r in range(lo, hi):
        p = r * row_bytes
        acc = vzero()
        for i in range(0, n32, 32):
            acc = fma_f32x32(acc, w, p + 4 * i, x, i)
        tail = np.float32(0.0)
        for i in range(n32, n):
            tail += f32at(w, p + 4 * i) * x[i]
        y[r] = hsum(acc) + tail


@njit(cache=True, fastmath=True, inline="always")
def rows_f16(w, row_bytes, n, lo, hi, y, x):
    """y[r] = row r . x for r in [lo, hi)."""
    n32 = n - n % 32
    for r in range(lo, hi):
        p = r * row_bytes
        acc = vzero()
        for i in range(0, n32, 32):
            acc = fma_f16x32(acc, w, p + 2 * i, x, i)
        tail = np.float32(0.0)
        for i in range(n32, n):
            tail += f16(w, p + 2 * i) * x[i]
        y[r] = hsum(acc) + tail


@njit(cache=True, fastmath=True, inline="always")
def rows_bf16(w, row_bytes, n, lo, hi, y, x):
    """y[r] = row r . x for r in [lo, hi)."""
    n32 = n - n % 32
    for r in range(lo, hi):
        p = r * row_bytes
        acc = vzero()
        for i in range(0, n32, 32):
            acc = fma_bf16x32(acc, w, p + 2 * i, x, i)
        tail = np.float32(0.0)
        for i in range(n32, n):
            tail += bf16(w, p + 2 * i) * x[i]
        y[r] = hsum(acc) + tail
