"""Prefill attention as batched matrix products (BLAS) instead of one dot per query-key pair.

For n new tokens (n >= ``MIN_TOKENS``), after RoPE and the cache store (ops.rope_and_store), the
queries of the ``n_rep`` heads that share a key/value head are stacked, cut into blocks of
64 to 128 tokens (query_block), and per (key/value head, query block)

    S = (kq_scale Q_b) K_b^T    (n_rep * block, keys_b)     one BLAS call
    P = softmax(S)              over the keys each query sees (causal, sliding window), in place
    O_b = P V_b                 (n_rep * block, head_dim)

where K_b, V_b are only the keys the block's queries can see: up to its last query (causal)
and, with a sliding window, from the first key its first query sees. Within a block the upper
triangle of S is computed and thrown away (BLAS is faster per multiply-add than the per-pair
loop of ops.attention by more than that); across blocks it is skipped, so a 512-token chunk
multiplies 62% of the full square (4 blocks of 128) rather than all of it. The (head, block)
items, longest first, run on Numba's own threads (_attend_items: a parallel loop whose items
call NumPy's bundled OpenBLAS ``cblas_sgemm`` through its address, one BLAS thread per call,
ops.set_blas_threads), which also balances models whose key/value head count is not a
multiple of the thread count (SmolLM2: 3). They used to run on a pool of Python threads; but
the prefill's matrix products leave the OpenMP worker spinning for a while after each
parallel region, and the pool's threads then shared a core with it: attention of a 128-token
chunk took 1.2 ms alone and 6.4 ms right after a GEMM (pp512 of SmolLM2 ~12% faster on Numba's
threads, measured alternating). The pool stays for NumPy builds without that BLAS. The cache
is read once per call, converted from float16 when it is an f16 cache. Results equal
ops.attention's up to float32 summation order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import ops

MIN_TOKENS = 16
"""New tokens from which NumbaOps.attention takes this path (below: ops.attention)."""
MAX_SCORE_BYTES = 64 << 20
"""Largest score matrix (all heads) this path allocates; longer calls use ops.attention."""
ITEM_ROWS = 512
"""Query rows (tokens x the query heads of a kv head) a work item aims at; its token count
is clamped to 64 .. 128 (measured: smaller items cost more in per-call overhead than they
save in skipped keys, larger ones skip less)."""


def query_block(rep: int) -> int:
    """Query tokens per work item for ``rep`` query heads per kv head."""
    return min(max(ITEM_ROWS // rep, 64), 128)


def fits(n: int, n_head: int, keys: int) -> bool:
    """True when a call of n new tokens over ``keys`` cached positions takes this path."""
    return n >= MIN_TOKENS and 4 * n_head * n * keys <= MAX_SCORE_BYTES


@njit(cache=True, fastmath=True, nogil=True)
def _softmax_causal(S, n, q_pos0, key0, window):
    """Rows of S (n_rep * n, keys): row r is query r % n at position q_pos0 + r % n; column c is
    the key at position key0 + c. A query at position p sees the keys [p + 1 - window, p]
    (all keys up to p without a window). In place: the softmax over those keys, zeros
    elsewhere. The loops index a slice from 0 (indices LLVM can prove non-negative): indexed
    from ``first`` they did not vectorize, 4x slower."""
    rows = S.shape[0]
    for r in range(rows):
        p = q_pos0 + r % n
        last = p - key0  # the column of the last key this query sees
        first = p + 1 - window - key0 if 0 < window < p + 1 else 0
        first = max(first, 0)
        row = S[r]
        s = row[first:last + 1]
        m = np.float32(-np.inf)
        for t in range(s.size):
            m = max(m, s[t])
        total = np.float32(0.0)
        for t in range(s.size):
            e = ops.exp_nonpositive(s[t] - m)
            s[t] = e
            total += e
        inv = np.float32(1.0) / total
        for t in range(s.size):
            s[t] *= inv
        row[:first] = 0.0
        row[last + 1:] = 0.0


# -- the work items on Numba's own threads ------------------------------------------------------
def _sgemm_address() -> int:
    """Address of the ILP64 ``cblas_sgemm`` in NumPy's bundled OpenBLAS, or 0 (another BLAS)."""
    import ctypes

    for lib in ops.openblas_libs():
        for symbol in ("scipy_cblas_sgemm64_", "cblas_sgemm64_"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                return int(ctypes.cast(fn, ctypes.c_void_p).value or 0)
    return 0


SGEMM = _sgemm_address()
"""cblas_sgemm for _attend_items (0: the items run on a Python thread pool instead)."""


@intrinsic
def _sgemm(typingctx, fptr, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """C = A @ B (``trans_b``: A @ B^T), row-major float32, by the ILP64 cblas_sgemm at address
    ``fptr``: A (m, k), B (k, n) or (n, k), C (m, n), each from its array's first element
    with leading dimensions lda, ldb, ldc."""

    def codegen(context, builder, sig, args):
        i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        fp = f32.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, f32, fp, i64, fp,
                                               i64, f32, fp, i64])
        fn = builder.inttoptr(args[0], fnty.as_pointer())

        def num(i):
            return context.cast(builder, args[i], sig.args[i], types.int64)

        def data(i):
            arr = context.make_array(sig.args[i])(context, builder, args[i])
            return builder.bitcast(arr.data, fp)

        tb = builder.select(args[1], ir.Constant(i32, 112), ir.Constant(i32, 111))  # (No)Trans
        builder.call(fn, [ir.Constant(i32, 101), ir.Constant(i32, 111), tb, num(2), num(3),
                          num(4), ir.Constant(f32, 1.0), data(5), num(6), data(7), num(8),
                          ir.Constant(f32, 0.0), data(9), num(10)])
        return context.get_dummy_value()

    return types.none(types.int64, types.boolean, m, n, k, a, lda, b, ldb, c, ldc), codegen


@njit(parallel=True, cache=True)
def _attend_items(fptr, Q, K, V, Y, items, pos0, window):
    """The work items (rows of ``items``: kv head g, queries t0 .. t1 - 1) on Numba's threads,
    each BLAS call on one of them: Q (n_kv, rep, n, hd) scaled queries, K and V (n_kv, keys,
    hd) float32, Y (n, n_kv, rep, hd) the output. The loop body is a call (_attend_item):
    compiled inside the parallel loop it took 7.5 s to compile."""
    for i in prange(items.shape[0]):
        _attend_item(fptr, Q, K, V, Y, items[i, 0], items[i, 1], items[i, 2], pos0, window)


@njit(cache=True, nogil=True)
def _attend_item(fptr, Q, K, V, Y, g, t0, t1, pos0, window):
    """One work item of _attend_items."""
    rep, hd = Q.shape[1], Q.shape[3]
    nt = t1 - t0
    lo = max(pos0 + t0 + 1 - window, 0) if window > 0 else 0
    keys = pos0 + t1 - lo  # keys lo .. pos0 + t1 - 1
    Qb = np.empty((rep * nt, hd), np.float32)
    for j in range(rep):
        for t in range(nt):
            for d in range(hd):
                Qb[j * nt + t, d] = Q[g, j, t0 + t, d]
    S = np.empty((rep * nt, keys), np.float32)
    _sgemm(fptr, True, rep * nt, keys, hd, Qb, hd, K[g, lo:], hd, S, keys)
    _softmax_causal(S, nt, pos0 + t0, lo, window)
    Ob = np.empty((rep * nt, hd), np.float32)
    _sgemm(fptr, False, rep * nt, hd, keys, S, keys, V[g, lo:], hd, Ob, hd)
    for t in range(nt):
        for j in range(rep):
            for d in range(hd):
                Y[t0 + t, g, j, d] = Ob[j * nt + t, d]


# -- or on a Python thread pool -----------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, nb.get_num_threads()), "gguflite-attention")
    return _POOL


def _as_f32(cache: np.ndarray, keys: int) -> np.ndarray:
    """(kv heads, keys, hd) float32 C-contiguous rows 0 .. keys - 1 of a layer's cache (f16
    bits or f32)."""
    rows = cache[:, :keys]
    if rows.dtype == np.uint16:
        return rows.view(np.float16).astype(np.float32)
    return np.ascontiguousarray(rows)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, cos: np.ndarray, sin: np.ndarray,
              use_rope: bool, neox: bool, k_cache: np.ndarray, v_cache: np.ndarray, pos0: int,
              kq_scale: float, window: int, out: np.ndarray, *, block: int = 0,
              sgemm: int | None = None) -> None:
    """ops.attention for a prefill chunk (same arguments, no scores scratch), through BLAS.

    ``block``: query tokens per work item (0: query_block). ``sgemm``: the cblas_sgemm the
    items call from Numba's threads (None: ``SGEMM``; 0: run them on a Python thread pool)."""
    n, n_head, hd = q.shape
    n_kv = k.shape[1]
    rep = n_head // n_kv
    block = block or query_block(rep)
    sgemm = SGEMM if sgemm is None else sgemm
    ops.rope_and_store(q, k, v, cos, sin, use_rope, neox, k_cache, v_cache, pos0)
    K = _as_f32(k_cache, pos0 + n)  # (n_kv, keys, hd)
    V = _as_f32(v_cache, pos0 + n)
    # (n, n_kv, rep, hd) -> (n_kv, rep, n, hd): the query heads of one kv head together
    Q = np.ascontiguousarray(q.reshape(n, n_kv, rep, hd).transpose(1, 2, 0, 3))
    Q *= np.float32(kq_scale)  # the score scale on the n x hd queries, not the n x keys scores
    Y = out.reshape(n, n_kv, rep, hd)
    items = [(g, t0, min(t0 + block, n)) for t0 in range(0, n, block) for g in range(n_kv)]
    items.reverse()  # the blocks with the most keys first: the threads end together
    if sgemm:
        _attend_items(sgemm, Q, K, V, Y, np.array(items, np.int64), pos0, window)
        return

    def item(g: int, t0: int, t1: int) -> None:  # kv head g, queries t0 .. t1 - 1
        lo = max(pos0 + t0 + 1 - window, 0) if window > 0 else 0
        hi = pos0 + t1  # keys lo .. hi - 1
        S = Q[g, :, t0:t1].reshape(rep * (t1 - t0), hd) @ K[g, lo:hi].T
        _softmax_causal(S, t1 - t0, pos0 + t0, lo, window)
        Y[t0:t1, g] = (S @ V[g, lo:hi]).reshape(rep, t1 - t0, hd).transpose(1, 0, 2)

    list(_pool().map(lambda a: item(*a), items))  # list(): wait for all, raise any error
