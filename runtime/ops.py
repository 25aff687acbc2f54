"""Numba kernels of the Llama graph other than the weight products: norms, RoPE, attention.

Every kernel writes into a buffer the caller allocated once (nothing is allocated per token),
accepts read-only inputs (norm weights are memory-mapped), and is compiled once and cached on
disk (``cache=True``). Parallel regions (``prange``) only write disjoint outputs.

RoPE follows llama.cpp's "normal" mode for the llama architecture: each head's dims are rotated
in adjacent pairs ``(x[2i], x[2i+1])`` by the angle ``pos * theta_i``. (Hugging Face's
``rotate_half`` pairs ``x[i]`` with ``x[i + d/2]``; converters permute the Q/K weight rows so the
two agree.)
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import njit, prange

from .kernels import threads as _threads  # noqa: F401  (selects the omp layer first)


def rope_tables(n_ctx: int, head_dim: int, theta: float, freq_scale: float = 1.0,
                freq_factors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin of every rotation angle, (n_ctx, head_dim // 2) float32 each.

    ``angle[p, i] = p * freq_scale * theta ** (-2 i / head_dim) / freq_factors[i]`` (llama.cpp's
    ``ggml_rope_ext`` with rope_freqs, no YaRN), computed in float64.
    """
    half = head_dim // 2
    inv_freq = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / head_dim)  # (half,)
    if freq_factors is not None:
        inv_freq = inv_freq / np.asarray(freq_factors, dtype=np.float64)
    pos = np.arange(n_ctx, dtype=np.float64) * freq_scale  # (n_ctx,)
    angle = pos[:, None] * inv_freq[None, :]  # (n_ctx, half)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


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


@njit(cache=True, fastmath=True)
def swiglu(gate: np.ndarray, up: np.ndarray, out: np.ndarray) -> None:
    """``out = silu(gate) * up`` with ``silu(g) = g / (1 + exp(-g))``. All (n, hidden) f32."""
    for i in range(gate.shape[0]):
        for j in range(gate.shape[1]):
            g = gate[i, j]
            out[i, j] = g / (np.float32(1.0) + np.exp(-g)) * up[i, j]


@njit(cache=True, fastmath=True)
def _rope_head(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """Rotate one head in place: x (head_dim,), cos/sin (head_dim // 2,) of its position."""
    for i in range(cos.shape[0]):
        x0 = x[2 * i]
        x1 = x[2 * i + 1]
        x[2 * i] = x0 * cos[i] - x1 * sin[i]
        x[2 * i + 1] = x0 * sin[i] + x1 * cos[i]


@njit(cache=True, fastmath=True)
def _attend_head(h: int, q: np.ndarray, cos: np.ndarray, sin: np.ndarray, k_cache: np.ndarray,
                 v_cache: np.ndarray, pos0: int, kq_scale: float, out: np.ndarray,
                 scores: np.ndarray) -> None:
    """Query head h of every new token: rotate it, then softmax(q k^T * scale) v, causally.

    q: (n, n_head, hd); k_cache/v_cache: (n_kv_head, n_ctx, hd); out: (n, n_head * hd);
    scores: (n_head, n_ctx) scratch (row h is used).
    """
    n, n_head, hd = q.shape
    g = h // (n_head // k_cache.shape[0])  # the key/value head this query head reads
    s = scores[h]  # (n_ctx,)
    kc = k_cache[g]  # (n_ctx, hd)
    vc = v_cache[g]  # (n_ctx, hd)
    for i in range(n):
        qi = q[i, h]  # (hd,)
        _rope_head(qi, cos[pos0 + i], sin[pos0 + i])
        n_keys = pos0 + i + 1
        m = np.float32(-np.inf)
        for t in range(n_keys):
            acc = np.float32(0.0)
            for d in range(hd):
                acc += qi[d] * kc[t, d]
            acc *= kq_scale
            s[t] = acc
            if acc > m:
                m = acc
        total = np.float32(0.0)
        for t in range(n_keys):
            e = np.exp(s[t] - m)
            s[t] = e
            total += e
        o = out[i, h * hd:(h + 1) * hd]  # (hd,)
        o[:] = 0.0
        for t in range(n_keys):
            p = s[t]
            for d in range(hd):
                o[d] += p * vc[t, d]
        inv = np.float32(1.0) / total
        for d in range(hd):
            o[d] *= inv


@njit(cache=True, fastmath=True)
def _store_kv(k: np.ndarray, v: np.ndarray, cos: np.ndarray, sin: np.ndarray,
              k_cache: np.ndarray, v_cache: np.ndarray, pos0: int) -> None:
    """Rotate the new keys and write keys and values to the cache rows pos0 .. pos0 + n - 1."""
    for i in range(k.shape[0]):
        for g in range(k.shape[1]):
            _rope_head(k[i, g], cos[pos0 + i], sin[pos0 + i])
            for d in range(k.shape[2]):  # element loops: a slice assignment would compile
                k_cache[g, pos0 + i, d] = k[i, g, d]  # Numba's shape-mismatch message
                v_cache[g, pos0 + i, d] = v[i, g, d]  # formatting (seconds at first run)


@njit(cache=True, fastmath=True, parallel=True)
def _attend_parallel(q, cos, sin, k_cache, v_cache, pos0, kq_scale, out, scores) -> None:
    for h in prange(q.shape[1]):  # h is unsigned in a prange: cast, to share attention's
        _attend_head(np.int64(h), q, cos, sin, k_cache, v_cache, pos0, kq_scale, out,
                     scores)  # compiled (int64) _attend_head instead of a second one


# Multiply-adds below which attention runs on the calling thread: starting a parallel region
# costs microseconds (much more on a busy machine), the work of a short context far less.
PARALLEL_MIN_WORK = 1 << 20


@njit(cache=True, fastmath=True)
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cos: np.ndarray, sin: np.ndarray,
              k_cache: np.ndarray, v_cache: np.ndarray, pos0: int, kq_scale: float,
              out: np.ndarray, scores: np.ndarray) -> None:
    """One layer's self-attention for n new tokens at positions pos0 .. pos0 + n - 1.

    RoPE is applied to q and k (in place), k and v are stored in the cache, then each query
    attends causally to every cached position up to its own. Query heads run in parallel when
    the work (n_head * n * keys * head_dim * 2) exceeds ``PARALLEL_MIN_WORK``.

    Parameters
    ----------
    q : (n, n_head, head_dim) f32
        Query projections, rotated in place.
    k, v : (n, n_kv_head, head_dim) f32
        Key/value projections of the new tokens; k is rotated in place.
    cos, sin : (n_ctx, head_dim // 2) f32
        ``rope_tables``.
    k_cache, v_cache : (n_kv_head, n_ctx, head_dim) f32
        This layer's cache; rows pos0 .. pos0 + n - 1 are written.
    pos0 : int
        Position of the first new token.
    kq_scale : float
        Score scale, usually 1 / sqrt(head_dim).
    out : (n, n_head * head_dim) f32
        Attention output, heads concatenated (the input of the output projection).
    scores : (n_head, >= pos0 + n) f32
        Scratch.
    """
    n, n_head, hd = q.shape
    _store_kv(k, v, cos, sin, k_cache, v_cache, pos0)
    work = 2 * n_head * n * (pos0 + n) * hd
    if work >= PARALLEL_MIN_WORK:
        _attend_parallel(q, cos, sin, k_cache, v_cache, pos0, kq_scale, out, scores)
    else:
        for h in range(n_head):
            _attend_head(h, q, cos, sin, k_cache, v_cache, pos0, kq_scale, out, scores)


@njit(cache=True)
def add_(x: np.ndarray, delta: np.ndarray) -> None:
    """``x += delta`` for (n, dim) f32 arrays (the last residual step)."""
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] += delta[i, j]


def set_blas_threads(n: int) -> bool:
    """Limit NumPy's OpenBLAS to n threads (best effort; False when it cannot be found).

    Prefill multiplies dequantized tiles with BLAS between Numba parallel regions; both thread
    pools spin while waiting, and on a 2-core machine 2 + 2 spinning threads made pp128 3-9x
    slower than a single-threaded BLAS (benchmarks/results/runtime.md).
    """
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                  "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
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
