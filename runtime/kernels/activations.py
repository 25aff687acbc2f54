"""Activation quantization shared by every integer mat-vec: float32 -> int8 per 32-block.

For each block b of 32 activations (as llama.cpp's Q8_0 / Q8_1 activations):

    dx[b]        = max |x| * (1 / 127)             float32 scale (0 for an all-zero block)
    xq[32b + i]  = rint(x[32b + i] / dx[b])        int8 in [-127, 127]
    xsd[2b + h]  = dx[b] * sum(xq[32b + 16h : 32b + 16h + 16])    h = 0, 1 (halves of 16)

so x[i] ~= dx[b] * xq[i] with an error of at most dx[b] / 2 per element. ``xsd`` carries the
per-16 sums that offset weights (``q - 8``, ``q - 32``) and minimums need. Ties round half to
even (llama.cpp rounds half away from zero; only exact ties differ).
"""

from __future__ import annotations

import numpy as np
from numba import njit

INV127 = np.float32(1.0 / 127.0)


# fastmath=False explicitly: Numba compiles a callee that sets nothing with its caller's
# fast-math flags (and caches that code for every later caller), and the drivers that call
# this are fastmath; an "arcp" reciprocal moved activations across rounding boundaries.
@njit(cache=True, fastmath=False)  # must match quantize_act_ref exactly
def quantize_act(x, xq, xd, xsd):
    """Quantize one activation vector in place into preallocated buffers.

    Parameters
    ----------
    x : (n,) float32, n a multiple of 32
    xq : (n,) int8, output
    xd : (n // 32,) float32, output: block scales
    xsd : (n // 16,) float32, output: scale times the sum of each half-block
    """
    nb = x.size // 32
    for b in range(nb):
        amax = np.float32(0.0)
        for i in range(32):
            amax = max(amax, abs(x[32 * b + i]))
        d = amax * INV127  # a multiply, so fastmath callers cannot change the rounding
        inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
        s0 = 0
        s1 = 0
        for i in range(16):
            q = np.int32(np.rint(x[32 * b + i] * inv))
            xq[32 * b + i] = q
            s0 += q
        for i in range(16, 32):
            q = np.int32(np.rint(x[32 * b + i] * inv))
            xq[32 * b + i] = q
            s1 += q
        xd[b] = d
        xsd[2 * b] = d * np.float32(s0)
        xsd[2 * b + 1] = d * np.float32(s1)


def quantize_act_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain NumPy reference of :func:`quantize_act` for (..., n) float32 input.

    Returns xq (..., n) int8, xd (..., n // 32) float32, xsd (..., n // 16) float32.
    """
    x = np.asarray(x, np.float32)
    blocks = x.reshape(*x.shape[:-1], -1, 32)  # (..., nb, 32)
    d = (np.abs(blocks).max(-1) * INV127).astype(np.float32)  # (..., nb)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1.0) / d, np.float32(0.0)).astype(np.float32)
    q = np.rint(blocks * inv[..., None]).astype(np.int8)  # (..., nb, 32)
    sums = q.reshape(*q.shape[:-1], 2, 16).astype(np.int32).sum(-1)  # (..., nb, 2)
    xsd = (d[..., None] * sums.astype(np.float32)).astype(np.float32)
    return q.reshape(x.shape), d, xsd.reshape(*x.shape[:-1], -1)
