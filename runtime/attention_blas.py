"""Prefill attention as two batched matrix products (BLAS) instead of one dot per query-key pair.

For n new tokens (n >= ``MIN_TOKENS``), after RoPE and the cache store (ops.rope_and_store), the
queries of the ``n_rep`` heads that share a key/value head are stacked, and per key/value head

    S = (kq_scale Q) K^T    (n_rep * n, keys)     one BLAS call per kv head
    P = softmax(S)          over the keys each query sees (causal, sliding window), in place
    O = P V            (n_rep * n, head_dim)

The upper triangle of S is computed and thrown away (BLAS is faster per multiply-add than the
per-pair loop of ops.attention by more than that). The key/value heads are split between the
Numba thread count's worth of Python threads (BLAS runs one thread per call, beside Numba's
pool, ops.set_blas_threads; NumPy and the nogil softmax release the GIL). The cache is read
once per call, converted from float16 when it is an f16 cache. Results equal
ops.attention's up to float32 summation order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import ops

MIN_TOKENS = 16
"""New tokens from which NumbaOps.attention takes this path (below: ops.attention)."""
MAX_SCORE_BYTES = 64 << 20
"""Largest score matrix (all heads) this path allocates; longer calls use ops.attention."""


def fits(n: int, n_head: int, keys: int) -> bool:
    """True when a call of n new tokens over ``keys`` cached positions takes this path."""
    return n >= MIN_TOKENS and 4 * n_head * n * keys <= MAX_SCORE_BYTES


@njit(cache=True, fastmath=True, nogil=True)
def _softmax_causal(S, n, pos0, window):
    """Rows of S (n_rep * n, keys): row r is query r % n at position pos0 + r % n; it sees
    keys [first, pos0 + r % n] (first > 0 only with a sliding window). In place: the softmax
    over those keys, zeros elsewhere."""
    rows, keys = S.shape
    for r in range(rows):
        s = S[r]
        last = pos0 + r % n  # the last key this query sees
        first = last + 1 - window if 0 < window < last + 1 else 0
        m = np.float32(-np.inf)
        for t in range(first, last + 1):
            m = max(m, s[t])
        total = np.float32(0.0)
        for t in range(first, last + 1):
            e = _exp(s[t] - m)
            s[t] = e
            total += e
        inv = np.float32(1.0) / total
        for t in range(first):
            s[t] = 0.0
        for t in range(first, last + 1):
            s[t] *= inv
        for t in range(last + 1, keys):
            s[t] = 0.0


@intrinsic
def _pow2(typingctx, n):
    """2.0 ** n as float32 for an int32 n in [-126, 127] (the exponent bits, no call)."""

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(args[0], ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, fastmath=True, inline="always")
def _exp(x):
    """exp(x) for float32 x <= 0 (a softmax's shifted scores), within 2 ulp, as straight-line
    arithmetic that vectorizes (np.exp is a scalar libm call per element here): x = n ln2 + r,
    |r| <= ln2 / 2, exp(r) by its degree-6 Taylor polynomial, times 2 ** n."""
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


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, nb.get_num_threads()), "gguflite-attention")
    return _POOL


def _as_f32(cache: np.ndarray, keys: int) -> np.ndarray:
    """(kv heads, keys, hd) float32 rows 0 .. keys - 1 of a layer's cache (f16 bits or f32)."""
    rows = cache[:, :keys]
    return rows.view(np.float16).astype(np.float32) if rows.dtype == np.uint16 else rows


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cos: np.ndarray, sin: np.ndarray,
              use_rope: bool, neox: bool, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int,
              kq_scale: float, window: int, out: np.ndarray) -> None:
    """ops.attention for a prefill chunk (same arguments, no scores scratch), through BLAS."""
    n, n_head, hd = q.shape
    n_kv = k.shape[1]
    rep = n_head // n_kv
    ops.rope_and_store(q, k, v, cos, sin, use_rope, neox, k_cache, v_cache, pos0)
    keys = pos0 + n
    K = _as_f32(k_cache, keys)  # (n_kv, keys, hd)
    V = _as_f32(v_cache, keys)
    # (n, n_kv, rep, hd) -> (n_kv, rep * n, hd): the query heads of one kv head stacked
    Q = np.ascontiguousarray(q.reshape(n, n_kv, rep, hd).transpose(1, 2, 0, 3)).reshape(
        n_kv, rep * n, hd)
    Q *= np.float32(kq_scale)  # the score scale on the n x hd queries, not the n x keys scores

    def head(g: int) -> np.ndarray:  # one kv head and the query heads that read it
        S = Q[g] @ K[g].T  # (rep * n, keys)
        _softmax_causal(S, n, pos0, window)
        return S @ V[g]  # (rep * n, hd)

    O = list(_pool().map(head, range(n_kv))) if n_kv > 1 else [head(0)]
    out.reshape(n, n_kv, rep, hd)[:] = np.stack(O).reshape(n_kv, rep, n, hd).transpose(
        2, 0, 1, 3)
