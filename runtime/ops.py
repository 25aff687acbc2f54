"""Numba kernels of the Llama graph other than the weight products: norms, RoPE, attention.

Every kernel writes into a buffer the caller allocated once (nothing is allocated per token),
accepts read-only inputs (norm weights are memory-mapped), and is compiled once and cached on
disk (``cache=True``). Parallel regions (``prange``) only write disjoint outputs.

RoPE rotates the first ``2 * cos.shape[-1]`` dims of each head, in adjacent pairs
``(x[2i], x[2i+1])`` (llama.cpp's "normal" mode) or in pairs ``(x[i], x[i + r/2])`` (NEOX), by the
angles of ``gguflite.models.rope.rope_tables``.
"""

from __future__ import annotations

import math
from typing import Any

import numba as nb
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .kernels import threads as _threads  # noqa: F401  (selects the omp layer first)
from .kv_cache import kv_load, kv_store


@njit(cache=True, fastmath=True)
def _rmsnorm_row(x: np.ndarray, w: np.ndarray, eps: float, out: np.ndarray) -> None:
    ss = np.float32(0.0)
    for j in range(x.shape[0]):
        ss += x[j] * x[j]
    inv = np.float32(1.0 / math.sqrt(ss / x.shape[0] + eps))
    for j in range(x.shape[0]):
        out[j] = x[j] * inv * w[j]


@njit(cache=True, fastmath=True)
def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float, out: np.ndarray) -> None:
    """``out = x / sqrt(mean(x**2) + eps) * w`` row by row.

    x: (n, dim) f32; w: (dim,) f32; out: (n, dim) f32 (may be x).
    """
    for i in range(x.shape[0]):
        _rmsnorm_row(x[i], w, eps, out[i])


@njit(cache=True, fastmath=True)
def add_rmsnorm(x: np.ndarray, delta: np.ndarray, w: np.ndarray, eps: float,
                out: np.ndarray) -> None:
    """The residual step then the next norm: ``x += delta; out = rmsnorm(x) * w``.

    x: (n, dim) f32, updated in place; delta: (n, dim) f32; w: (dim,); out: (n, dim).
    """
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += delta[i, j]
        _rmsnorm_row(x[i], w, eps, out[i])


@intrinsic
def _pow2(typingctx, n):
    """2.0 ** n as float32 for an int32 n in [-126, 127] (the exponent bits, no call)."""

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, fastmath=True, inline="always")
def exp_nonpositive(x):
    """exp(x) for float32 x <= 0 (a softmax's shifted scores, a sigmoid's exp(-|z|)), within
    2 ulp, as straight-line arithmetic that vectorizes (np.exp is a scalar libm call per
    element): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by its degree-6 Taylor polynomial, times
    2 ** n; below -87 it is exp(-87)."""
    x = max(x, np.float32(-87.0))
    n = np.float32(np.rint(x * np.float32(1.4426950408889634)))
    r = x - n * np.float32(0.693145751953125) - n * np.float32(1.428606765330187e-06)
    p = np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _pow2(np.int32(n))


@njit(cache=True, fastmath=True, inline="always")
def _sigmoid(z):
    """1 / (1 + exp(-z)) for float32 z, from exp(-|z|) (never overflows). Vectorizes in a
    caller compiled with ``error_model="numpy"`` (Numba's default checks every division for
    zero, a branch that keeps the loop scalar)."""
    e = exp_nonpositive(-abs(z))
    return (np.float32(1.0) if z >= 0 else e) / (np.float32(1.0) + e)


@njit(cache=True, fastmath=True, error_model="numpy")  # no zero check: the loop vectorizes
def swiglu(gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
    """``out = silu(gate) * up`` with ``silu(g) = g / (1 + exp(-g))``. All (n, hidden) f32."""
    for i in range(gate.shape[0]):
        g_row, u_row, o_row = gate[i], up[i], out[i]
        for j in range(g_row.size):
            g = g_row[j]
            o_row[j] = g * _sigmoid(g) * u_row[j]


EXACT_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "afn"}
"""Fast-math flags without ``contract`` or ``reassoc``, for code whose results must not depend
on where it is compiled: ``x0 * c - x1 * s`` may be contracted into either of two fused
multiply-adds, and LLVM picked differently when RoPE was compiled inside the decode step than
when compiled for the prefill, so a run that compiled its kernels and one that loaded them from
the cache rotated q and k differently in the last bit (which int8 re-quantization then
amplified to ~1e-1 in the logits)."""


@njit(cache=True, fastmath=EXACT_FASTMATH)
def _rope_head(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, neox: bool) -> None:
    """Rotate one head in place: x (head_dim,), cos/sin (n_rot // 2,) of its position."""
    half = cos.shape[0]
    for i in range(half):
        a = i if neox else 2 * i
        b = i + half if neox else 2 * i + 1
        x0 = x[a]
        x1 = x[b]
        x[a] = x0 * cos[i] - x1 * sin[i]
        x[b] = x0 * sin[i] + x1 * cos[i]


@njit(cache=True, fastmath=EXACT_FASTMATH)
def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, pos0: int, neox: bool) -> None:
    """Rotate every head of n tokens in place: x (n, heads, hd); cos/sin (n_ctx, n_rot // 2)."""
    for i in range(x.shape[0]):
        for h in range(x.shape[1]):
            _rope_head(x[i, h], cos[pos0 + i], sin[pos0 + i], neox)


@njit(cache=True, fastmath=True)
def _attend_head(h: int, q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int,
                 kq_scale: float, window: int, out: np.ndarray, scores: np.ndarray) -> None:
    """Query head h of every new token: softmax(q k^T * scale) v over the positions it sees
    (causal; the last ``window`` ones when window > 0).

    q: (n, n_head, hd), already rotated; k_cache/v_cache: (n_kv_head, n_ctx, hd);
    out: (n, n_head * hd); scores: (n_head, n_ctx) scratch (row h is used).
    """
    n, n_head, hd = q.shape
    g = h // (n_head // k_cache.shape[0])  # the key/value head this query head reads
    s = scores[h]  # (n_ctx,)
    kc = k_cache[g]  # (capacity, hd), f16 bits or f32
    vc = v_cache[g]
    for i in range(n):
        qi = q[i, h]  # (hd,)
        n_keys = pos0 + i + 1
        first = n_keys - window if 0 < window < n_keys else 0
        m = np.float32(-np.inf)
        for t in range(first, n_keys):
            acc = np.float32(0.0)
            kt = kc[t]
            for d in range(hd):
                acc += qi[d] * kv_load(kt, d)
            acc *= kq_scale
            s[t] = acc
            if acc > m:
                m = acc
        total = np.float32(0.0)
        seen = s[first:n_keys]  # indexed from 0: vectorizes (attention_blas._softmax_causal)
        for t in range(seen.size):
            e = exp_nonpositive(seen[t] - m)
            seen[t] = e
            total += e
        o = out[i, h * hd:(h + 1) * hd]  # (hd,)
        o[:] = 0.0
        for t in range(first, n_keys):
            p = s[t]
            vt = vc[t]
            for d in range(hd):
                o[d] += p * kv_load(vt, d)
        inv = np.float32(1.0) / total
        for d in range(hd):
            o[d] *= inv


@njit(cache=True, fastmath=True, parallel=True)
def _attend_parallel(q, k_cache, v_cache, pos0, kq_scale, window, out, scores) -> None:
    for h in prange(q.shape[1]):  # h is unsigned in a prange: cast, to share attention's
        _attend_head(np.int64(h), q, k_cache, v_cache, pos0, kq_scale, window, out,
                     scores)  # compiled (int64) _attend_head instead of a second one


# Multiply-adds below which attention runs on the calling thread: starting a parallel region
# costs microseconds (much more on a busy machine), the work of a short context far less.
PARALLEL_MIN_WORK = 1 << 20


@njit(cache=True, fastmath=True)
def rope_and_store(q: np.ndarray, k: np.ndarray, v: np.ndarray, cos: np.ndarray,
                   sin: np.ndarray, use_rope: bool, neox: bool, k_cache: np.ndarray,
                   v_cache: np.ndarray, pos0: int) -> None:
    """The first half of ``attention``: rotate q and k in place (when ``use_rope``) and store k
    and v in the cache rows pos0 .. pos0 + n - 1 (shapes as ``attention``)."""
    n, _, hd = q.shape
    if use_rope:
        rope(q, cos, sin, pos0, neox)
        rope(k, cos, sin, pos0, neox)
    for i in range(n):
        for g in range(k.shape[1]):
            kr = k_cache[g, pos0 + i]
            vr = v_cache[g, pos0 + i]
            for d in range(hd):
                kv_store(kr, d, k[i, g, d])
                kv_store(vr, d, v[i, g, d])


@njit(cache=True, fastmath=True)
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cos: np.ndarray, sin: np.ndarray,
              use_rope: bool, neox: bool, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int,
              kq_scale: float, window: int, out: np.ndarray, scores: np.ndarray) -> None:
    """One layer's self-attention for n new tokens at positions pos0 .. pos0 + n - 1.

    RoPE is applied to q and k (in place) when ``use_rope``, k and v are stored in the cache,
    then each query attends causally to the cached positions it sees. Query heads run in
    parallel when the work (n_head * n * keys * head_dim * 2) exceeds ``PARALLEL_MIN_WORK``.

    Parameters
    ----------
    q : (n, n_head, head_dim) f32
        Query projections, rotated in place.
    k, v : (n, n_kv_head, head_dim) f32
        Key/value projections of the new tokens; k is rotated in place.
    cos, sin : (n_ctx, n_rot // 2) f32
        This layer's table of ``rope_tables``.
    use_rope, neox : bool
        Rotate at all; NEOX pairs (i, i + n_rot/2) instead of (2i, 2i+1).
    k_cache, v_cache : (n_kv_head, >= pos0 + n, head_dim) f32, or uint16 f16 bits
        This layer's cache (kv_cache.py); rows pos0 .. pos0 + n - 1 are written.
    pos0 : int
        Position of the first new token.
    kq_scale : float
        Score scale, usually 1 / sqrt(head_dim).
    window : int
        Sliding window: a query sees at most this many positions, itself included (0: all).
    out : (n, n_head * head_dim) f32
        Attention output, heads concatenated (the input of the output projection).
    scores : (n_head, >= pos0 + n) f32
        Scratch.
    """
    n, n_head, hd = q.shape
    rope_and_store(q, k, v, cos, sin, use_rope, neox, k_cache, v_cache, pos0)
    work = 2 * n_head * n * (pos0 + n) * hd
    if work >= PARALLEL_MIN_WORK:
        _attend_parallel(q, k_cache, v_cache, pos0, kq_scale, window, out, scores)
    else:
        for h in range(n_head):
            _attend_head(h, q, k_cache, v_cache, pos0, kq_scale, window, out, scores)


@njit(cache=True, fastmath=True, error_model="numpy")  # as swiglu
def gelu_tanh_glu(gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
    """``out = gelu_tanh(gate) * up``, gelu_tanh(g) = g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715
    g^3))). All (n, hidden) f32.

    Computed as ``g * sigmoid(2u)`` (u the tanh argument; g/2 (1 + tanh u) is that exactly),
    which vectorizes where ``tanh`` is a scalar libm call per element (6x slower over a
    prefill chunk)."""
    for i in range(gate.shape[0]):
        g_row, u_row, o_row = gate[i], up[i], out[i]
        for j in range(g_row.size):
            g = g_row[j]
            z = np.float32(1.5957691216) * (g + np.float32(0.044715) * g * g * g)
            o_row[j] = g * _sigmoid(z) * u_row[j]


@njit(cache=True, fastmath=True, parallel=True)
def glu_rows(gate: np.ndarray, up: np.ndarray, out: np.ndarray, gelu: bool) -> None:
    """swiglu (or gelu_tanh_glu with ``gelu``) with the rows split between threads: a prefill
    chunk's activation (n, hidden) f32. Decode calls the one-thread kernels above."""
    for i in prange(gate.shape[0]):
        if gelu:
            gelu_tanh_glu(gate[i:i + 1], up[i:i + 1], out[i:i + 1])
        else:
            swiglu(gate[i:i + 1], up[i:i + 1], out[i:i + 1])


@njit(cache=True)
def add_(x: np.ndarray, delta: np.ndarray) -> None:
    """``x += delta`` for (n, dim) f32 arrays (the last residual step)."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += delta[i, j]


def openblas_libs() -> list[Any]:
    """The OpenBLAS libraries NumPy ships (``numpy.libs/*openblas*``), loaded with ctypes;
    empty when NumPy uses another BLAS."""
    import ctypes
    import glob
    import os

    libs = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir,
                                              "numpy.libs", "*openblas*"))):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libs


def set_blas_threads(n: int) -> bool:
    """Limit NumPy's OpenBLAS to n threads (best effort; False when it cannot be found).

    Prefill multiplies dequantized tiles with BLAS between Numba parallel regions; both thread
    pools spin while waiting, and on a 2-core machine 2 + 2 spinning threads made pp128 3-9x
    slower than a single-threaded BLAS (benchmarks/results/runtime.md).
    """
    import ctypes

    for lib in openblas_libs():
        for symbol in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                       "openblas_set_num_threads"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False


def set_threads(n: int | None) -> int:
    """Set Numba's thread count for this process (None: all cores); returns it."""
    most = nb.config.NUMBA_NUM_THREADS
    count = most if n is None else max(1, min(n, most))
    nb.set_num_threads(count)
    return count
