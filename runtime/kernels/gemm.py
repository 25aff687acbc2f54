"""The int8 matrix product of prefill: Y = X @ W.T on the stored weights.

llama.cpp multiplies a prefill chunk with int8 activations; so does this driver:

1. every token's activation row is quantized to int8 as llama.cpp does: per 32-block for the
   32-block types (activations.quantize_act, as the mat-vec), per 256-block for the
   super-block types (Q8_K), the token count padded to a multiple of 4 with zeros;
2. the weight rows are cut into tiles of ``TILE_ROWS``; each tile is *packed* once by the type's
   own dequantizer (vector_gemm: int8 q, per-16 scale s and offset f), in parallel over tiles;
3. each pair of packed rows is multiplied with 4 tokens at a time: two record loads feed eight
   integer dot products (VNNI ``vpdpbusd`` where the CPU has it) and eight float accumulators.

The weight bytes are read from memory once per call (not once per token, as mat-vecs per token
would), and the unpacking of each group is paid once per call, not once per token. For the
32-block types the results equal the per-token mat-vec up to float summation order (the same
int8 activations, integer dots and scales); the super-block types quantize activations per
256 here (llama.cpp's Q8_K), per 32 in the mat-vec. Through a whole model these last-bit
differences do not stay small: each layer re-quantizes its input to int8, and a value that
moves across a rounding boundary moves by a whole step, so a prompt's logits from a prefill
and from one-token decode steps differ by about 1e-2 relative after 30 layers (as llama.cpp's
do). That is why the server's batched decode keeps the mat-vec row kernels
(serve/batched.matvec_batch), whose numbers are those of decoding each sequence alone.

Types: the ggml block types whose dequantizer writes through store_affine / store_s8
and vector_iq4.store_s8v (``GEMM_TYPES``); Linear.matmul keeps the dequantize + BLAS path
for the float and KM types.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit, prange

from ...constants import GGMLType
from .dispatch import ALL_KINDS, Kinds, _in_kinds, kinds_of, rows_deq
from .activations import quantize_act
from .ternary import quantize_act_k
from .vector_f32 import ldf, load_f32x8, vadd, vfma, vsplat
from .vector_gemm import (
    F_AT,
    OFFSET_ACTIVATIONS,
    REC,
    corr_scaled,
    fma_dx,
    fma_s,
    group_scales,
    qdot,
    qdot_raw,
    store_f32x8,
)
from .vector_ir import f32at, hsum, vzero

Q4_1, Q5_1 = int(GGMLType.Q4_1), int(GGMLType.Q5_1)
Q2_K, Q4_K, Q5_K = int(GGMLType.Q2_K), int(GGMLType.Q4_K), int(GGMLType.Q5_K)

# Numba keys the cached ``gemm`` on this file's text, but it inlines dispatch.rows_deq and the
# vector modules. dispatch.py carries a fingerprint of every module it inlines (vector_gemm
# included); this sha256 of dispatch.py's text makes any kernel edit change this file too
# (tests/test_gemm.py checks it is current). Recompute with dispatch_fingerprint().
DISPATCH_FINGERPRINT = "2ed839044ef4a68d"


def dispatch_fingerprint() -> str:
    """sha256 (16 hex digits) of runtime/kernels/dispatch.py, for DISPATCH_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(__file__).with_name("dispatch.py").read_bytes()).hexdigest()[:16]


GEMM_TYPES = frozenset({GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1,
                        GGMLType.Q8_0, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K,
                        GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.TQ1_0, GGMLType.TQ2_0,
                        GGMLType.IQ4_NL, GGMLType.IQ4_XS})
"""Types the int8 matrix product runs on (packed by their own exact dequantizer)."""
ALL_GEMM_KINDS = kinds_of(*(int(t) for t in GEMM_TYPES))
TILE_ROWS = 16
"""Weight rows per packed tile (one parallel work item): 16 x 2048-wide rows pack to 128 KB."""


_GEMM_IDS = frozenset(int(t) for t in GEMM_TYPES)
_PART: dict[Kinds, Kinds] = {}


def gemm_kinds(kinds: Kinds) -> Kinds:
    """The GEMM-capable part of a Linear's kind set (the set the packing switch compiles for).
    Under GGUFLITE_KERNEL_KINDS=all (the test suite): every GEMM type at once."""
    part = _PART.get(kinds)
    if part is None:
        if os.environ.get("GGUFLITE_KERNEL_KINDS") == "all" or kinds is ALL_KINDS:
            part = ALL_GEMM_KINDS
        else:
            part = kinds_of(*(kinds.ids & _GEMM_IDS))
        _PART[kinds] = part
    return part


@njit(parallel=True, cache=True)
def quantize_tokens(X, xq, dx, xsd, per_256):
    """Rows of X (n_tok, n) quantized into xq (T, n) int8, dx (T, n // 32), xsd (T, n // 16),
    T >= n_tok (rows past n_tok are left as they are); per 32-block (quantize_act) or, with
    ``per_256``, one scale per 256-block (quantize_act_256). With OFFSET_ACTIVATIONS the bytes
    of xq are then stored as ``xq + 128`` (vector_gemm), padding rows included."""
    for t in prange(xq.shape[0]):
        if t < X.shape[0]:
            if per_256:
                quantize_act_256(X[t], xq[t], dx[t], xsd[t])
            else:
                quantize_act(X[t], xq[t], dx[t], xsd[t])
        if OFFSET_ACTIVATIONS:
            row = xq[t].view(np.uint8)
            for i in range(row.size):
                row[i] ^= np.uint8(128)


@njit(cache=True, fastmath=False)  # explicitly (see activations.quantize_act)
def quantize_act_256(x, xq, xd, xsd):
    """llama.cpp's activation of the k-quants (Q8_K: one scale per 256; ternary.quantize_act_k,
    which writes it in its own layout) in quantize_act's layout: xd[g] is the scale of g's
    256-block (8 equal entries per block) and xsd[2g + h] = xd[g] * sum(xq of half h of group
    g). n a multiple of 256; xd and xsd are used as quantize_act_k's scratch first."""
    quantize_act_k(x, xq, xd, xsd)
    nb = x.size // 256
    for b in range(nb - 1, -1, -1):  # backwards: block b's scale sits at xd[4b]
        d = xd[4 * b]
        for g in range(8 * b, 8 * b + 8):
            xd[g] = d
    for h in range(x.size // 16):
        s = 0
        for i in range(16 * h, 16 * h + 16):
            s += xq[i]
        xsd[h] = xd[h // 2] * np.float32(s)


def gemm(kind: int, w: np.ndarray, row_bytes: int, X: np.ndarray, Y: np.ndarray,
         kinds: Kinds = ALL_GEMM_KINDS) -> None:
    """Y = X @ W.T with int8 activations.

    Parameters
    ----------
    kind : int, the GGMLType id of W (in ``kinds``, a subset of GEMM_TYPES)
    w : flat uint8 array, W as (out, row_bytes) bytes
    row_bytes : bytes per row of W
    X : (n_tok, n) float32, C-contiguous, n a multiple of 32 (and of the type's block)
    Y : (n_tok, out) float32 output, C-contiguous
    kinds : the Kinds set the packing switch is compiled for (gemm_kinds)

    The 32-block types and the super-block types run two separately compiled drivers
    (gemm_32, gemm_256), so a model compiles only the one its types need.
    """
    (gemm_256 if int(kind) in _PER_256 else gemm_32)(kind, w, row_bytes, X, Y, kinds)


@njit(cache=True, fastmath=True)
def _setup(kind, X, Y, kinds, per_256):
    """The activations of a call, quantized (padded to 4-token groups; xsd copied into rows
    padded to whole F32x8 vectors for the bias of the types with a minimum)."""
    if not _in_kinds(kind, kinds):  # checked here: an exception inside prange is garbled
        raise ValueError("gemm: kind outside the driver's Kinds set")
    n_tok, n = X.shape
    ng = n // 32
    T = (n_tok + 3) // 4 * 4
    xq = np.zeros((T, n), np.int8)
    dx2 = np.zeros((T, ng), np.float32)
    xsd2 = np.zeros((T, 2 * ng), np.float32)
    quantize_tokens(X, xq, dx2, xsd2, per_256)
    xsd_w = (2 * ng + 7) // 8 * 8
    xsdp = np.zeros(T * xsd_w, np.float32)
    if _has_min(kind):
        for t in range(n_tok):
            xsdp[t * xsd_w : t * xsd_w + 2 * ng] = xsd2[t]
    return xq.reshape(-1).view(np.uint8), dx2.reshape(-1), xsdp, xsd_w


@njit(cache=True, fastmath=True)  # a call per tile (not inlined: parfor renaming)
def _pack(kind, w, row_bytes, n, r0, rows, kinds, xsd_w):
    """Rows r0 .. r0 + rows - 1 of W packed (flat records) and their f_h (padded rows; empty
    for the types without a minimum)."""
    ng = n // 32
    pack = np.empty((rows * ng, REC), np.uint8)
    rows_deq(kind, w, row_bytes, n, np.zeros(0, np.int64), r0, 0, rows, pack, kinds)
    flat = pack.reshape(-1)
    fz_rows = rows
    if not _has_min(kind):
        fz_rows = 0
    fz = np.zeros(fz_rows * xsd_w, np.float32)
    for r in range(fz_rows):
        for h in range(2 * ng):
            fz[r * xsd_w + h] = f32at(flat, (r * ng + h // 2) * REC + F_AT + 4 * (h % 2))
    return flat, fz


@njit(parallel=True, cache=True, fastmath=True)
def gemm_32(kind, w, row_bytes, X, Y, kinds):
    """gemm for the 32-block types: activations per 32-block, their scale applied per group."""
    n_tok, n = X.shape
    out = Y.shape[1]
    ng = n // 32
    xa, dx, xsdp, xsd_w = _setup(kind, X, Y, kinds, False)
    T = (n_tok + 3) // 4 * 4
    for ti in prange((out + TILE_ROWS - 1) // TILE_ROWS):
        r0 = ti * TILE_ROWS
        rows = min(TILE_ROWS, out - r0)
        flat, fz = _pack(kind, w, row_bytes, n, r0, rows, kinds, xsd_w)
        for t0 in range(0, T, 4):
            for r in range(0, rows, 2):
                ra = r * ng * REC
                rb = min(r + 1, rows - 1) * ng * REC  # an odd last row is computed twice
                a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                a4, a5, a6, a7 = vzero(), vzero(), vzero(), vzero()
                for g in range(ng):
                    a0, a1, a2, a3, a4, a5, a6, a7 = _step(
                        a0, a1, a2, a3, a4, a5, a6, a7, flat, ra + g * REC, rb + g * REC,
                        xa, t0 * n + 32 * g, n, dx, t0 * ng + g, ng)
                for h in range(0, xsd_w * (fz.size > 0), 8):  # + sum_h f_h xsd_h (minimums)
                    a0, a1, a2, a3, a4, a5, a6, a7 = _bias_step(
                        a0, a1, a2, a3, a4, a5, a6, a7, fz, r * xsd_w + h,
                        min(r + 1, rows - 1) * xsd_w + h, xsdp, t0 * xsd_w + h, xsd_w)
                _store4(Y, t0, r0 + r, n_tok, a0, a1, a2, a3)
                if r + 1 < rows:
                    _store4(Y, t0, r0 + r + 1, n_tok, a4, a5, a6, a7)


@njit(parallel=True, cache=True, fastmath=True)
def gemm_256(kind, w, row_bytes, X, Y, kinds):
    """gemm for the super-block types: activations per 256-block (llama.cpp's Q8_K), their
    scale applied once per block (_fold); the records' corr added once per block (ez)."""
    n_tok, n = X.shape
    out = Y.shape[1]
    ng = n // 32
    nb = ng // 8
    xa, dx, xsdp, xsd_w = _setup(kind, X, Y, kinds, True)
    T = (n_tok + 3) // 4 * 4
    for ti in prange((out + TILE_ROWS - 1) // TILE_ROWS):
        r0 = ti * TILE_ROWS
        rows = min(TILE_ROWS, out - r0)
        flat, fz = _pack(kind, w, row_bytes, n, r0, rows, kinds, xsd_w)
        ez_rows = rows
        if not OFFSET_ACTIVATIONS:  # corr is zero on the avx2 path
            ez_rows = 0
        ez = np.zeros(ez_rows * nb * 8, np.float32)
        for r in range(ez_rows):
            for b in range(nb):  # ez[r, b] = sum over b's groups of corr * sv (F32x8)
                e = vzero()
                for g in range(8 * b, 8 * b + 8):
                    e = vadd(e, corr_scaled(flat, (r * ng + g) * REC))
                store_f32x8(ez, (r * nb + b) * 8, e)
        for t0 in range(0, T, 4):
            for r in range(0, rows, 2):
                ra = r * ng * REC
                rb = min(r + 1, rows - 1) * ng * REC  # an odd last row is computed twice
                a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
                a4, a5, a6, a7 = vzero(), vzero(), vzero(), vzero()
                for b in range(nb):
                    c0, c1, c2, c3 = vzero(), vzero(), vzero(), vzero()
                    c4, c5, c6, c7 = vzero(), vzero(), vzero(), vzero()
                    if OFFSET_ACTIVATIONS:
                        ea = load_f32x8(ez, (r * nb + b) * 8)
                        eb = load_f32x8(ez, (min(r + 1, rows - 1) * nb + b) * 8)
                        c0, c1, c2, c3 = ea, ea, ea, ea
                        c4, c5, c6, c7 = eb, eb, eb, eb
                    for g in range(8 * b, 8 * b + 8):
                        c0, c1, c2, c3, c4, c5, c6, c7 = _step_256(
                            c0, c1, c2, c3, c4, c5, c6, c7, flat, ra + g * REC, rb + g * REC,
                            xa, t0 * n + 32 * g, n)
                    a0, a1, a2, a3, a4, a5, a6, a7 = _fold(
                        a0, a1, a2, a3, a4, a5, a6, a7, c0, c1, c2, c3, c4, c5, c6, c7,
                        dx, t0 * ng + 8 * b, ng)
                for h in range(0, xsd_w * (fz.size > 0), 8):  # + sum_h f_h xsd_h (minimums)
                    a0, a1, a2, a3, a4, a5, a6, a7 = _bias_step(
                        a0, a1, a2, a3, a4, a5, a6, a7, fz, r * xsd_w + h,
                        min(r + 1, rows - 1) * xsd_w + h, xsdp, t0 * xsd_w + h, xsd_w)
                _store4(Y, t0, r0 + r, n_tok, a0, a1, a2, a3)
                if r + 1 < rows:
                    _store4(Y, t0, r0 + r + 1, n_tok, a4, a5, a6, a7)


_PER_256 = frozenset(int(t) for t in (GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K,
                                      GGMLType.Q6_K, GGMLType.TQ1_0, GGMLType.TQ2_0,
                                      GGMLType.IQ4_XS))
"""The super-block types, whose activations are quantized with one scale per 256 (llama.cpp's
Q8_K); the 32-block types keep one per 32 (Q8_0 / Q8_1)."""


@njit(cache=True)
def _has_min(kind):
    """True for the types whose weights carry a per-group minimum (f != 0 in the records)."""
    return (kind == Q4_1 or kind == Q5_1 or kind == Q2_K or kind == Q4_K or kind == Q5_K)


@njit(cache=True, fastmath=True, inline="always")
def _step(a0, a1, a2, a3, a4, a5, a6, a7, flat, ra, rb, xa, x, n, dx, d, ng):
    """Group g of two packed rows (records at bytes ra, rb) times 4 tokens (activation bytes
    at x + k * n, block scales dx[d + k * ng]): a0..a3 for row a, a4..a7 for row b.
    Straight-line, so inlining it into the group loop adds no reference counting."""
    sa = group_scales(flat, ra)
    sb = group_scales(flat, rb)
    e = ldf(dx, d)
    a0 = fma_dx(a0, qdot(flat, ra, xa, x), sa, e)
    a4 = fma_dx(a4, qdot(flat, rb, xa, x), sb, e)
    e = ldf(dx, d + ng)
    a1 = fma_dx(a1, qdot(flat, ra, xa, x + n), sa, e)
    a5 = fma_dx(a5, qdot(flat, rb, xa, x + n), sb, e)
    e = ldf(dx, d + 2 * ng)
    a2 = fma_dx(a2, qdot(flat, ra, xa, x + 2 * n), sa, e)
    a6 = fma_dx(a6, qdot(flat, rb, xa, x + 2 * n), sb, e)
    e = ldf(dx, d + 3 * ng)
    a3 = fma_dx(a3, qdot(flat, ra, xa, x + 3 * n), sa, e)
    a7 = fma_dx(a7, qdot(flat, rb, xa, x + 3 * n), sb, e)
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(cache=True, fastmath=True, inline="always")
def _step_256(c0, c1, c2, c3, c4, c5, c6, c7, flat, ra, rb, xa, x, n):
    """_step for activations with one scale per 256-block: no scale here (see _fold), and no
    corr (added once per super-block from ez): only the records' first cache line is read."""
    sa = group_scales(flat, ra)
    sb = group_scales(flat, rb)
    c0 = fma_s(c0, qdot_raw(flat, ra, xa, x), sa)
    c4 = fma_s(c4, qdot_raw(flat, rb, xa, x), sb)
    c1 = fma_s(c1, qdot_raw(flat, ra, xa, x + n), sa)
    c5 = fma_s(c5, qdot_raw(flat, rb, xa, x + n), sb)
    c2 = fma_s(c2, qdot_raw(flat, ra, xa, x + 2 * n), sa)
    c6 = fma_s(c6, qdot_raw(flat, rb, xa, x + 2 * n), sb)
    c3 = fma_s(c3, qdot_raw(flat, ra, xa, x + 3 * n), sa)
    c7 = fma_s(c7, qdot_raw(flat, rb, xa, x + 3 * n), sb)
    return c0, c1, c2, c3, c4, c5, c6, c7


@njit(cache=True, fastmath=True, inline="always")
def _fold(a0, a1, a2, a3, a4, a5, a6, a7, c0, c1, c2, c3, c4, c5, c6, c7, dx, d, ng):
    """a_k += c_k * (the 256-block scale of token k): dx[d + k * ng]."""
    e = vsplat(ldf(dx, d))
    a0 = vfma(a0, c0, e)
    a4 = vfma(a4, c4, e)
    e = vsplat(ldf(dx, d + ng))
    a1 = vfma(a1, c1, e)
    a5 = vfma(a5, c5, e)
    e = vsplat(ldf(dx, d + 2 * ng))
    a2 = vfma(a2, c2, e)
    a6 = vfma(a6, c6, e)
    e = vsplat(ldf(dx, d + 3 * ng))
    a3 = vfma(a3, c3, e)
    a7 = vfma(a7, c7, e)
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(cache=True, fastmath=True, inline="always")
def _bias_step(a0, a1, a2, a3, a4, a5, a6, a7, fz, fa, fb, xs, x, w):
    """8 lanes of f_h * xsd_h of two rows (fz at fa, fb) and 4 tokens (xs at x + k * w)."""
    f = load_f32x8(fz, fa)
    g = load_f32x8(fz, fb)
    v = load_f32x8(xs, x)
    a0 = vfma(a0, f, v)
    a4 = vfma(a4, g, v)
    v = load_f32x8(xs, x + w)
    a1 = vfma(a1, f, v)
    a5 = vfma(a5, g, v)
    v = load_f32x8(xs, x + 2 * w)
    a2 = vfma(a2, f, v)
    a6 = vfma(a6, g, v)
    v = load_f32x8(xs, x + 3 * w)
    a3 = vfma(a3, f, v)
    a7 = vfma(a7, g, v)
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(cache=True, fastmath=True, inline="always")
def _store4(Y, t0, col, n_tok, a0, a1, a2, a3):
    """Y[t0 + k, col] = the lane sum of a_k, for the tokens t0 + k < n_tok."""
    Y[t0, col] = hsum(a0)
    if t0 + 1 < n_tok:
        Y[t0 + 1, col] = hsum(a1)
    if t0 + 2 < n_tok:
        Y[t0 + 2, col] = hsum(a2)
    if t0 + 3 < n_tok:
        Y[t0 + 3, col] = hsum(a3)
