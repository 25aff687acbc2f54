"""The parallel drivers: one Numba call per mat-vec group, per mat-mul or per row gather.

Each driver takes the weight type as an integer ``kind`` (the GGMLType id, or one of the KM
pseudo kinds of km_rows: 1002 / 1003 / 1004 for KM2 / KM3 / KM4) and switches to the
type's row kernel once per row, so each driver has exactly one compiled signature for all types
and sizes: weights are always flat read-only uint8 arrays, groups always 4-tuples (unused slots
hold empty arrays).

Parallel regions: one ``prange`` over output rows per call; a mat-vec group (q, k, v sharing one
activation vector) puts all its rows in the same region.
"""

from __future__ import annotations

import numpy as np
from numba import config, njit, prange

from ...constants import GGMLType
from . import floats as fl
from . import km_rows as km
from . import kquants as kq
from . import legacy as lg
from . import ternary as tq
from .activations import quantize_act

# Numba keys the on-disk cache of a function on the text of *its own* file, but the drivers here
# inline the row kernels of the modules below. This fingerprint of their text makes any edit
# there change this file too (test_kernels_api checks it is current), so no stale compiled
# driver is ever loaded from a cache. Recompute with kernel_sources_fingerprint().
SOURCES_FINGERPRINT = "319cbeeada59f587"
INLINED_MODULES = ("activations", "floats", "km_rows", "kquants", "legacy", "ternary",
                   "vector_f32", "vector_ir", "vector_km", "vector_tq")


def kernel_sources_fingerprint() -> str:
    """sha256 of the text of INLINED_MODULES, for SOURCES_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for name in INLINED_MODULES:
        h.update((Path(__file__).with_name(name + ".py")).read_bytes())
    return h.hexdigest()[:16]


F32, F16, BF16 = int(GGMLType.F32), int(GGMLType.F16), int(GGMLType.BF16)
Q4_0, Q4_1, Q5_0, Q5_1 = (int(GGMLType.Q4_0), int(GGMLType.Q4_1), int(GGMLType.Q5_0),
                          int(GGMLType.Q5_1))
Q8_0, Q2_K, Q3_K, Q4_K = (int(GGMLType.Q8_0), int(GGMLType.Q2_K), int(GGMLType.Q3_K),
                          int(GGMLType.Q4_K))
Q5_K, Q6_K, TQ1_0, TQ2_0 = (int(GGMLType.Q5_K), int(GGMLType.Q6_K), int(GGMLType.TQ1_0),
                            int(GGMLType.TQ2_0))

KERNEL_TYPES = frozenset(GGMLType(k) for k in (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
                                               Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0))
FLOAT_TYPES = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16})
# gguflite's KM v2 types have no ggml id: pseudo kinds >= 1000, defined in km_rows.
KM2, KM3, KM4 = km.KM2_KIND, km.KM3_KIND, km.KM4_KIND


@njit(cache=True)
def is_float(kind):
    return kind == F32 or kind == F16 or kind == BF16


# -- serial row loops: one branch per type, each a direct call of an inline="always" kernel.
# A row-range kernel (rows_<type>: the row loop and the block loop in one function) costs no
# reference counting per row; calling an inline="always" single-row kernel (dot_<type>) in a
# loop leaves an atomic incref/decref of each array argument per row, which Numba's pruning
# does not remove (measured: 1.5-1.9x slower on 576-wide rows, and both threads then hammer the
# same counters) ----------------------------------------------------------------------------
@njit(cache=True, fastmath=True)
def rows_dot(kind, w, row_bytes, n, lo, hi, y, x, xq, xd, xsd):
    """y[lo:hi] = W[lo:hi] @ x, switching on the type once per run of rows.

    For the KM kinds, xq / xd / xsd cover x padded with zeros to a multiple of 64 (_prepare).
    """
    nb = n // 32
    if kind == Q4_K:
        kq.rows_q4_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q6_K:
        kq.rows_q6_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q8_0:
        lg.rows_q8_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q4_1:
        lg.rows_q4_1(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q4_0:
        lg.rows_q4_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q5_0:
        lg.rows_q5_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q5_1:
        lg.rows_q5_1(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q5_K:
        kq.rows_q5_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q3_K:
        kq.rows_q3_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == Q2_K:
        kq.rows_q2_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == TQ2_0:
        tq.rows_tq2_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == TQ1_0:
        tq.rows_tq1_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
    elif kind == KM4:
        km.rows_km4(w, row_bytes, km.padded_cols(n) // 32, lo, hi, y, xq, xd, xsd)
    elif kind == KM3:
        km.rows_km3(w, row_bytes, km.padded_cols(n) // 32, lo, hi, y, xq, xd, xsd)
    elif kind == KM2:
        km.rows_km2(w, row_bytes, km.padded_cols(n) // 32, lo, hi, y, xq, xd, xsd)
    elif kind == F16:
        fl.rows_f16(w, row_bytes, n, lo, hi, y, x)
    elif kind == BF16:
        fl.rows_bf16(w, row_bytes, n, lo, hi, y, x)
    else:  # F32; kinds are validated before any call
        fl.rows_f32(w, row_bytes, n, lo, hi, y, x)


@njit(cache=True)
def rows_deq(kind, w, row_bytes, n, ids, first, lo, hi, flat):
    """flat[k * n : (k + 1) * n] = row (ids[k] or first + k) of W, for k in [lo, hi)."""
    nb = n // 32
    for k in range(lo, hi):
        p = (ids[k] if ids.size else first + k) * row_bytes
        if kind == Q4_K:
            kq.deq_q4_k(w, p, nb, flat, k * n)
        elif kind == Q6_K:
            kq.deq_q6_k(w, p, nb, flat, k * n)
        elif kind == Q8_0:
            lg.deq_q8_0(w, p, nb, flat, k * n)
        elif kind == Q4_1:
            lg.deq_q4_1(w, p, nb, flat, k * n)
        elif kind == Q4_0:
            lg.deq_q4_0(w, p, nb, flat, k * n)
        elif kind == Q5_0:
            lg.deq_q5_0(w, p, nb, flat, k * n)
        elif kind == Q5_1:
            lg.deq_q5_1(w, p, nb, flat, k * n)
        elif kind == Q5_K:
            kq.deq_q5_k(w, p, nb, flat, k * n)
        elif kind == Q3_K:
            kq.deq_q3_k(w, p, nb, flat, k * n)
        elif kind == Q2_K:
            kq.deq_q2_k(w, p, nb, flat, k * n)
        elif kind == TQ2_0:
            tq.deq_tq2_0(w, p, nb, flat, k * n)
        elif kind == TQ1_0:
            tq.deq_tq1_0(w, p, nb, flat, k * n)
        elif kind == KM4:
            km.deq_km4(w, p, n, flat, k * n)
        elif kind == KM3:
            km.deq_km3(w, p, n, flat, k * n)
        elif kind == KM2:
            km.deq_km2(w, p, n, flat, k * n)
        elif kind == F16:
            fl.deq_f16(w, p, n, flat, k * n)
        elif kind == BF16:
            fl.deq_bf16(w, p, n, flat, k * n)
        else:
            fl.deq_f32(w, p, n, flat, k * n)


CHUNK_ROWS = 16  # rows per parallel work item (the type switch runs once per item)
# At most this many work items per mat-vec region. Each rows_dot call increments and decrements
# the reference counts of its ~6 arrays atomically, and the arrays are shared by all threads:
# with one call per 16 rows (~1 us of work) the threads would bounce those counters' cache lines
# between cores. (Not measurable on the loaded machine of 2026-11-25; one thread's CPU time is
# unchanged.) Numba's schedule is static (each thread runs one contiguous range of items), so a
# few items per thread lose no balance. NUMBA_NUM_THREADS (the pool size) is frozen at compile
# time, which only matters for speed.
MAX_MATVEC_ITEMS = 4 * config.NUMBA_NUM_THREADS


@njit(cache=True)
def matvec_chunk(rows):
    """Rows per work item of a mat-vec region over ``rows`` rows."""
    items = min((rows + CHUNK_ROWS - 1) // CHUNK_ROWS, MAX_MATVEC_ITEMS)
    return (rows + items - 1) // items if items > 0 else CHUNK_ROWS


def scratch_bytes(n: int) -> int:
    """Bytes of the activation scratch for in_features n: xq (n_p) | xd (n_p // 32) |
    xsd (n_p // 16) | 16 spare bytes, with n_p = n rounded up to a multiple of 64 (KM rows are
    padded to 64; the KM row tails read 16 bytes of xsd from their block on)."""
    n_p = (n + 63) // 64 * 64
    return n_p + 4 * (n_p // 32) + 4 * (n_p // 16) + 16


@njit(cache=True)
def _prepare(kind, x, scratch):
    """Views of the scratch buffer (xq, xd, xsd), filled with the quantized x for int8 types;
    for the KM kinds, x is padded with zeros to a multiple of 64 and quantized with per-256
    steps and per-32 integer multipliers (km_rows.quantize_act_km)."""
    n = km.padded_cols(x.size) if km.is_km_kind(kind) else x.size
    nb = n // 32
    xq = scratch[:n].view(np.int8)
    xd = scratch[n : n + 4 * nb].view(np.float32)
    spare = 16 if km.is_km_kind(kind) else 0  # the KM row tails read past their block sums
    xsd = scratch[n + 4 * nb : n + 12 * nb + spare].view(np.float32)
    if km.is_km_kind(kind):  # per-256 steps, per-32 multipliers and sums (quantize_act_km)
        km.quantize_act_km(x, xq, xd, xsd)
    elif kind == TQ1_0 or kind == TQ2_0:  # one scale per 256, as llama.cpp's Q8_K
        tq.quantize_act_k(x, xq, xd, xsd)
    elif not is_float(kind):
        quantize_act(x, xq, xd, xsd)
    return xq, xd, xsd


@njit(parallel=True, cache=True, fastmath=True)
def matvec_one(kind, w, y, row_bytes, x, scratch):
    """y = W @ x, one parallel region over chunks of rows.

    Parameters
    ----------
    kind : int, the GGMLType id or a KM pseudo kind
    w : flat uint8 array, W as (y.size, row_bytes) bytes
    y : (rows,) float32 output
    x : (n,) float32 activation
    scratch : (scratch_bytes(n),) uint8 buffer for the quantized activation
    """
    n = x.size
    xq, xd, xsd = _prepare(kind, x, scratch)
    rows = y.size
    chunk = matvec_chunk(rows)
    for c in prange((rows + chunk - 1) // chunk):
        lo = c * chunk
        rows_dot(kind, w, row_bytes, n, lo, min(lo + chunk, rows), y, x, xq, xd, xsd)


@njit(parallel=True, cache=True, fastmath=True)
def matvec_group(kind, ws, ys, row_bytes, x, scratch):
    """ys[m] = W_m @ x for up to 4 weights of one type and in_features sharing one activation.

    Parameters
    ----------
    kind : int, the GGMLType id (or KM pseudo kind) of every weight
    ws : 4-tuple of flat uint8 arrays, W_m as (rows_m, row_bytes) bytes; unused slots empty
    ys : 4-tuple of (rows_m,) float32 outputs; unused slots empty
    x : (n,) float32 activation
    scratch : (scratch_bytes(n),) uint8 buffer for the quantized activation
    """
    n = x.size
    xq, xd, xsd = _prepare(kind, x, scratch)
    n0 = ys[0].size
    n1 = ys[1].size
    n2 = ys[2].size
    n3 = ys[3].size
    chunk = matvec_chunk(n0 + n1 + n2 + n3)
    for c in prange((n0 + n1 + n2 + n3 + chunk - 1) // chunk):
        lo = c * chunk  # rows [lo, hi) of the concatenation W_0; W_1; W_2; W_3
        hi = lo + chunk
        base = 0
        for m, nm in enumerate((n0, n1, n2, n3)):
            a = max(lo - base, 0)
            b = min(hi - base, nm)
            if a < b:
                rows_dot(kind, ws[m], row_bytes, n, a, b, ys[m], x, xq, xd, xsd)
            base += nm


@njit(parallel=True, cache=True)
def dequant_rows(kind, w, row_bytes, n, ids, first, dst):
    """dst[k] = row ids[k] of W as float32, or row first + k when ids is empty.

    dst : (count, n) float32, C-contiguous
    """
    flat = dst.reshape(-1)
    count = dst.shape[0]
    for c in prange((count + CHUNK_ROWS - 1) // CHUNK_ROWS):
        lo = c * CHUNK_ROWS
        rows_deq(kind, w, row_bytes, n, ids, first, lo, min(lo + CHUNK_ROWS, count), flat)
