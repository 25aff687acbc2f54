"""The parallel drivers: one Numba call per mat-vec group, per mat-mul or per row gather.

Each driver takes the weight type as an integer ``kind`` (the GGMLType id) and switches to the
type's row kernel once per row, so each driver has exactly one compiled signature for all types
and sizes: weights are always flat read-only uint8 arrays, groups always 4-tuples (unused slots
hold empty arrays).

Parallel regions: one ``prange`` over output rows per call; a mat-vec group (q, k, v sharing one
activation vector) puts all its rows in the same region.
"""

from __future__ import annotations

from numba import njit, prange

from ...constants import GGMLType
from . import floats as fl
from . import kquants as kq
from . import legacy as lg
from . import ternary as tq
from .activations import quantize_act

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


@njit(cache=True)
def is_float(kind):
    return kind == F32 or kind == F16 or kind == BF16


@njit(cache=True, fastmath=True)
def row_dot(kind, w, p, n, x, xq, xd, xsd):
    """One row (n weights from byte p of w) times the activation: float32."""
    nb = n // 32
    if kind == Q4_K:
        return kq.dot_q4_k(w, p, nb, xq, xd, xsd)
    if kind == Q6_K:
        return kq.dot_q6_k(w, p, nb, xq, xd, xsd)
    if kind == Q8_0:
        return lg.dot_q8_0(w, p, nb, xq, xd, xsd)
    if kind == Q4_1:
        return lg.dot_q4_1(w, p, nb, xq, xd, xsd)
    if kind == Q4_0:
        return lg.dot_q4_0(w, p, nb, xq, xd, xsd)
    if kind == Q5_0:
        return lg.dot_q5_0(w, p, nb, xq, xd, xsd)
    if kind == Q5_1:
        return lg.dot_q5_1(w, p, nb, xq, xd, xsd)
    if kind == Q5_K:
        return kq.dot_q5_k(w, p, nb, xq, xd, xsd)
    if kind == Q3_K:
        return kq.dot_q3_k(w, p, nb, xq, xd, xsd)
    if kind == Q2_K:
        return kq.dot_q2_k(w, p, nb, xq, xd, xsd)
    if kind == TQ2_0:
        return tq.dot_tq2_0(w, p, nb, xq, xd, xsd)
    if kind == TQ1_0:
        return tq.dot_tq1_0(w, p, nb, xq, xd, xsd)
    if kind == F16:
        return fl.dot_f16(w, p, n, x)
    if kind == BF16:
        return fl.dot_bf16(w, p, n, x)
    return fl.dot_f32(w, p, n, x)  # kinds are validated before any call


@njit(cache=True)
def row_deq(kind, w, p, n, dst, off):
    """One row (n weights from byte p of w) dequantized into dst[off : off + n]."""
    nb = n // 32
    if kind == Q4_K:
        kq.deq_q4_k(w, p, nb, dst, off)
    elif kind == Q6_K:
        kq.deq_q6_k(w, p, nb, dst, off)
    elif kind == Q8_0:
        lg.deq_q8_0(w, p, nb, dst, off)
    elif kind == Q4_1:
        lg.deq_q4_1(w, p, nb, dst, off)
    elif kind == Q4_0:
        lg.deq_q4_0(w, p, nb, dst, off)
    elif kind == Q5_0:
        lg.deq_q5_0(w, p, nb, dst, off)
    elif kind == Q5_1:
        lg.deq_q5_1(w, p, nb, dst, off)
    elif kind == Q5_K:
        kq.deq_q5_k(w, p, nb, dst, off)
    elif kind == Q3_K:
        kq.deq_q3_k(w, p, nb, dst, off)
    elif kind == Q2_K:
        kq.deq_q2_k(w, p, nb, dst, off)
    elif kind == TQ2_0:
        tq.deq_tq2_0(w, p, nb, dst, off)
    elif kind == TQ1_0:
        tq.deq_tq1_0(w, p, nb, dst, off)
    elif kind == F16:
        fl.deq_f16(w, p, n, dst, off)
    elif kind == BF16:
        fl.deq_bf16(w, p, n, dst, off)
    else:
        fl.deq_f32(w, p, n, dst, off)


@njit(parallel=True, cache=True, fastmath=True)
def matvec_group(kind, ws, ys, row_bytes, x, xq, xd, xsd):
    """ys[m] = W_m @ x for up to 4 weights of one type and in_features sharing one activation.

    Parameters
    ----------
    kind : int, the GGMLType id of every weight
    ws : 4-tuple of flat uint8 arrays, W_m as (rows_m, row_bytes) bytes; unused slots empty
    ys : 4-tuple of (rows_m,) float32 outputs; unused slots empty
    x : (n,) float32 activation
    xq, xd, xsd : (n,) int8, (n // 32,) float32, (n // 16,) float32 scratch for the quantized
        activation (see activations.py); unused for float weights
    """
    n = x.size
    if not is_float(kind):
        quantize_act(x, xq, xd, xsd)
    n0 = ys[0].size
    n1 = ys[1].size
    n2 = ys[2].size
    total = n0 + n1 + n2 + ys[3].size
    for r in prange(total):
        if r < n0:
            ys[0][r] = row_dot(kind, ws[0], r * row_bytes, n, x, xq, xd, xsd)
        elif r < n0 + n1:
            k = r - n0
            ys[1][k] = row_dot(kind, ws[1], k * row_bytes, n, x, xq, xd, xsd)
        elif r < n0 + n1 + n2:
            k = r - n0 - n1
            ys[2][k] = row_dot(kind, ws[2], k * row_bytes, n, x, xq, xd, xsd)
        else:
            k = r - n0 - n1 - n2
            ys[3][k] = row_dot(kind, ws[3], k * row_bytes, n, x, xq, xd, xsd)


@njit(parallel=True, cache=True)
def quantize_rows(X, XQ, XD, XSD):
    """quantize_act on every row of X (n_tok, n) into XQ (n_tok, n), XD, XSD (n_tok, ...)."""
    for t in prange(X.shape[0]):
        quantize_act(X[t], XQ[t], XD[t], XSD[t])


@njit(parallel=True, cache=True, fastmath=True)
def matmul_int8(kind, w, row_bytes, X, XQ, XD, XSD, Y):
    """Y = X @ W.T with int8 activations: X (n_tok, n) float32 -> Y (n_tok, rows) float32.

    Each thread takes a run of weight rows and, for each row, every token, so the row's bytes
    stay in L1 while the (small) quantized activations stream from L2.
    """
    n = X.shape[1]
    n_tok = X.shape[0]
    if not is_float(kind):
        for t in prange(n_tok):
            quantize_act(X[t], XQ[t], XD[t], XSD[t])
    rows = Y.shape[1]
    for r in prange(rows):
        p = r * row_bytes
        for t in range(n_tok):
            Y[t, r] = row_dot(kind, w, p, n, X[t], XQ[t], XD[t], XSD[t])


@njit(parallel=True, cache=True)
def dequant_rows(kind, w, row_bytes, n, ids, first, dst):
    """dst[k] = row ids[k] of W as float32, or row first + k when ids is empty.

    dst : (count, n) float32, C-contiguous
    """
    flat = dst.reshape(-1)
    count = dst.shape[0]
    for k in prange(count):
        r = ids[k] if ids.size else first + k
        row_deq(kind, w, r * row_bytes, n, flat, k * n)
