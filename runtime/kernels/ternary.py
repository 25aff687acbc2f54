"""Row kernels of the ternary types TQ1_0 and TQ2_0 (256-element blocks, w = d * (t - 1)).

Same contract as legacy.py, except for the activation: like llama.cpp (whose ternary dot
products take Q8_K activations), the mat-vec quantizes x with one scale per 256 elements
(:func:`quantize_act_k`), so the 8 groups of a block share all their factors and the kernels
add the int16 pair products of a whole block (vector_tq.I16x16) before one 128-bit pmaddwd and
one int -> float conversion per block (vector_tq.fold_fma4). Trits t in {0, 1, 2} are the
unsigned lanes u, the offset -1 is subtracted in int16 as the activation's 32-element sums.

    TQ2_0: qs[64] | d: f16.  Element 128c + 32l + m = (qs[32c + m] >> 2l) & 3.
    TQ1_0: qs[48] | qh[4] | d: f16. Five trits per byte in base-3 fixed point: the trit n of
           byte q is ((q * 3**n mod 256) * 3) >> 8.
           elements   0..159: 32n + m       <- qs[m],      n = 0..4
           elements 160..239: 160 + 16n + m <- qs[32 + m], n = 0..4
           elements 240..255: 240 + 4n + j  <- qh[j],      n = 0..3
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .vector_ir import band, dup16, f16, hsum4, load_u8x32, shr, store_affine, vzero4
from .vector_tq import (
    add16,
    fold_fma4,
    maddubs,
    pow3_halves,
    scale4,
    sra16,
    tq1_qh_merge,
    trit_cmp,
    xor_halves,
)

TQ1_0_BYTES = 48 + 4 + 2
TQ2_0_BYTES = 64 + 2
INV127 = np.float32(1.0 / 127.0)


# -- the activation, one scale per 256 (llama.cpp's Q8_K, in the scratch of dispatch) -----------
@njit(cache=True, fastmath=False)  # explicitly (see activations.quantize_act): exact as the ref
def quantize_act_k(x, xq, xd, xsd):
    """Quantize one activation vector per 256-block, into the buffers of quantize_act.

    For each block b of 256 activations:

        xd[4b : 4b + 4]   = max |x| * (1 / 127)         float32 scale, 4 copies (the F32x4 that
                                                        vector_tq.scale4 multiplies by d)
        xq[256b + i]      = rint(x[256b + i] / xd[4b])  int8 in [-127, 127]
        xsd16[8b + h]     = sum(xq[256b + 32h : 256b + 32h + 32])   int16, h = 0..7

    where xsd16 is the int16 view of xsd (its first n // 32 int16; the rest is unused), and
    xd[n // 64 :] is unused. A scale is 0 for an all-zero block.

    Parameters
    ----------
    x : (n,) float32, n a multiple of 256
    xq : (n,) int8, output
    xd : (n // 32,) float32, output: block scales in xd[: n // 64]
    xsd : (n // 16,) float32, output: the int16 sums in its first 2 * (n // 32) bytes
    """
    xs16 = xsd.view(np.int16)
    for b in range(x.size // 256):
        amax = np.float32(0.0)
        for i in range(256):
            amax = max(amax, abs(x[256 * b + i]))
        d = amax * INV127
        inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
        for h in range(8):
            s = 0
            for i in range(256 * b + 32 * h, 256 * b + 32 * h + 32):
                q = np.int32(np.rint(x[i] * inv))
                xq[i] = q
                s += q
            xs16[8 * b + h] = s
        for k in range(4):
            xd[4 * b + k] = d


def quantize_act_k_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain NumPy reference of :func:`quantize_act_k` for (..., n) float32 input.

    Returns xq (..., n) int8, the block scales (..., n // 256) float32 (one copy each), and the
    sums (..., n // 32) int16.
    """
    x = np.asarray(x, np.float32)
    blocks = x.reshape(*x.shape[:-1], -1, 256)  # (..., nb, 256)
    d = (np.abs(blocks).max(-1) * INV127).astype(np.float32)  # (..., nb)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.rint(blocks * inv[..., None]).astype(np.int8)  # (..., nb, 256)
    sums = q.reshape(*q.shape[:-1], 8, 32).astype(np.int32).sum(-1).astype(np.int16)
    return q.reshape(x.shape), d, sums.reshape(*x.shape[:-1], -1)


# -- the mat-vec row kernels ----------------------------------------------------------------------
# Each block ends in 128-bit lanes (vector_tq.fold_fma4: fold, less the activation sums, pmaddwd,
# convert, times d * xd), and a row runs 4 blocks per iteration into 2 accumulators: on znver1
# that was 1.16x faster than one block per iteration in 256-bit lanes (the unrolled body lets the
# scheduler overlap the blocks' long dependency chains; see benchmarks/results/ternary.md).
@njit(cache=True, fastmath=True, inline="always")
def _tq2_sums(w, b, i, xq):
    """The int16 products of the TQ2_0 block at byte b with activation block i. One 16-bit shift
    per 32-byte chunk of qs: byte m of chunk c holds the codes of elements 128c + 32l + m,

        byte = [ u3 : 2 | u2 : 2 | u1 : 2 | u0 : 2 ],   v >> 4 = [ 0 : 4 | u3 : 2 | u2 : 2 ]

    so v & 3 = u0, v & 12 = 4 u1, (v >> 4) & 3 = u2, (v >> 4) & 12 = 4 u3, and the block sum is
    s1 + (s4 >> 2) with s1 / s4 the sums of the factor-1 / factor-4 products (s4 <= 4 * 3048,
    exact multiples of 4). Straight-line (no loop), so inlining it adds no reference counting."""
    x = 256 * i
    v0 = load_u8x32(w, b)  # chunk 0: elements 0..127
    v1 = load_u8x32(w, b + 32)  # chunk 1: elements 128..255
    h0 = shr(v0, 4)
    h1 = shr(v1, 4)
    s1 = add16(add16(maddubs(band(v0, 3), xq, x), maddubs(band(v1, 3), xq, x + 128)),
               add16(maddubs(band(h0, 3), xq, x + 64), maddubs(band(h1, 3), xq, x + 192)))
    s4 = add16(add16(maddubs(band(v0, 12), xq, x + 32), maddubs(band(v1, 12), xq, x + 160)),
               add16(maddubs(band(h0, 12), xq, x + 96), maddubs(band(h1, 12), xq, x + 224)))
    return add16(s1, sra16(s4, 2))  # (16,) i16, <= 6096


@njit(cache=True, fastmath=True, inline="always")
def _tq2_block(acc, w, b, i, xq, xd, xsd):
    """acc + block i of a TQ2_0 row, its bytes at b (F32x4; xd, xsd as quantize_act_k)."""
    return fold_fma4(acc, _tq2_sums(w, b, i, xq), xsd, 4 * i,
                     scale4(w, b + TQ2_0_BYTES - 2, xd, 4 * i))


@njit(cache=True, fastmath=True, inline="always")
def _tq1_packed(w, b):
    """The 8 groups of the TQ1_0 block at byte b, trits still packed: 8 U8x32 whose top base-3
    digit (trit_cmp) is the trit, stored offset by 128 (q ^ 128, kept by the odd multipliers).
    The powers of 3 are byte shifts and adds (pow3_halves)."""
    q0 = xor_halves(load_u8x32(w, b), 128, 128)  # groups 0..4: qs[0:32] * 3**n
    q1 = pow3_halves(q0, 1, 1)  # 2 byte adds
    q2 = pow3_halves(q0, 2, 2)  # a shift, a mask, an add
    q3 = pow3_halves(q2, 1, 1)
    q4 = pow3_halves(q3, 1, 1)
    y1 = pow3_halves(xor_halves(dup16(w, b + 32), 128, 128), 0, 1)  # group 5: qs[32:48] * [1, 3]
    y2 = pow3_halves(y1, 2, 2)  # group 6: * [9, 27]
    # group 7: qs[32:48] * 81 | qh * 3**n, the qh half offset after the merge
    y3 = xor_halves(tq1_qh_merge(pow3_halves(y2, 2, 2), w, b + 48), 0, 128)
    return q0, q1, q2, q3, q4, y1, y2, y3


@njit(cache=True, fastmath=True, inline="always")
def _tq1_block(acc, w, b, i, xq, xd, xsd):
    """acc + block i of a TQ1_0 row, its bytes at b: no multiply but the vpmaddubsw.
    Straight-line, like _tq2_sums."""
    x = 256 * i
    g = _tq1_packed(w, b)
    s0 = add16(maddubs(trit_cmp(g[0]), xq, x), maddubs(trit_cmp(g[1]), xq, x + 32))
    s1 = add16(maddubs(trit_cmp(g[2]), xq, x + 64), maddubs(trit_cmp(g[3]), xq, x + 96))
    s0 = add16(s0, add16(maddubs(trit_cmp(g[4]), xq, x + 128),
                         maddubs(trit_cmp(g[5]), xq, x + 160)))
    s1 = add16(s1, add16(maddubs(trit_cmp(g[6]), xq, x + 192),
                         maddubs(trit_cmp(g[7]), xq, x + 224)))
    return fold_fma4(acc, add16(s0, s1), xsd, 4 * i, scale4(w, b + TQ1_0_BYTES - 2, xd, 4 * i))


@njit(cache=True, fastmath=True, inline="always")
def dot_tq2_0(w, p, nb, xq, xd, xsd):
    """TQ2_0 row dot (row bytes at p, nb 32-groups) with quantize_act_k activations: blocks
    4 at a time into 2 accumulators, then the remaining nb // 8 % 4 blocks."""
    nbk = nb // 8
    a0 = vzero4()
    a1 = vzero4()
    for j in range(nbk // 4):
        i = 4 * j
        b = p + TQ2_0_BYTES * i
        a0 = _tq2_block(a0, w, b, i, xq, xd, xsd)
        a1 = _tq2_block(a1, w, b + TQ2_0_BYTES, i + 1, xq, xd, xsd)
        a0 = _tq2_block(a0, w, b + 2 * TQ2_0_BYTES, i + 2, xq, xd, xsd)
        a1 = _tq2_block(a1, w, b + 3 * TQ2_0_BYTES, i + 3, xq, xd, xsd)
    for i in range(nbk - nbk % 4, nbk):
        a0 = _tq2_block(a0, w, p + TQ2_0_BYTES * i, i, xq, xd, xsd)
    return hsum4(a0) + hsum4(a1)


@njit(cache=True, fastmath=True, inline="always")
def dot_tq1_0(w, p, nb, xq, xd, xsd):
    """TQ1_0 row dot (row bytes at p, nb 32-groups) with quantize_act_k activations, one block
    per iteration (unrolling 2 spilled registers and was slower)."""
    acc = vzero4()
    for i in range(nb // 8):
        acc = _tq1_block(acc, w, p + TQ1_0_BYTES * i, i, xq, xd, xsd)
    return hsum4(acc)


@njit(cache=True, fastmath=True, inline="always")
def rows_tq2_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    """y[r] = row r . x for r in [lo, hi): dot_tq2_0 inlined in the row loop (no reference
    counting per row: the compiled driver has the same NRT calls and speed as with the block
    loop written out here, checked on 4096x4096)."""
    for r in range(lo, hi):
        y[r] = dot_tq2_0(w, r * row_bytes, nb, xq, xd, xsd)


@njit(cache=True, fastmath=True, inline="always")
def rows_tq1_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd):
    """y[r] = row r . x for r in [lo, hi), as rows_tq2_0."""
    for r in range(lo, hi):
        y[r] = dot_tq1_0(w, r * row_bytes, nb, xq, xd, xsd)


# -- dequantization (prefill through BLAS, row gathers) --------------------------------------------
@njit(cache=True)
def deq_tq1_0(w, p, nb, dst, off):
    for i in range(nb // 8):
        b = p + TQ1_0_BYTES * i
        d = f16(w, b + TQ1_0_BYTES - 2)
        g = _tq1_packed(w, b)
        o = off + 256 * i
        store_affine(dst, o, trit_cmp(g[0]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 32, trit_cmp(g[1]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 64, trit_cmp(g[2]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 96, trit_cmp(g[3]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 128, trit_cmp(g[4]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 160, trit_cmp(g[5]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 192, trit_cmp(g[6]), -1, d, 0.0, d, 0.0)
        store_affine(dst, o + 224, trit_cmp(g[7]), -1, d, 0.0, d, 0.0)


@njit(cache=True)
def deq_tq2_0(w, p, nb, dst, off):
    for i in range(nb // 8):
        b = p + TQ2_0_BYTES * i
        d = f16(w, b + TQ2_0_BYTES - 2)
        for k in range(8):  # group k: (qs[32 (k // 4) + m] >> 2 (k % 4)) & 3
            u = band(shr(load_u8x32(w, b + 32 * (k // 4)), 2 * (k % 4)), 3)
            store_affine(dst, off + 256 * i + 32 * k, u, -1, d, 0.0, d, 0.0)
