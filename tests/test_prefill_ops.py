"""The prefill-only kernels equal the decode ones: the attention through BLAS
(runtime/attention_blas.py) equals the per-pair kernel (ops.attention): rope, cache store,
causal mask, sliding window, GQA, f16 and f32 caches, a chunk that follows cached positions,
query blocks that see only their keys;
the row-parallel GLU equals the one-thread kernels."""

from __future__ import annotations

import numpy as np
import pytest
from gguflite.runtime import attention_blas, ops


@pytest.mark.parametrize("sgemm", [None, 0])
@pytest.mark.parametrize("block", [0, 8])
@pytest.mark.parametrize("kv_dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("n_head,n_kv,window,pos0,neox,rope", [
    (4, 4, 0, 0, False, True), (6, 2, 0, 5, True, True), (6, 2, 7, 9, False, True),
    (4, 1, 3, 0, False, False), (8, 4, 40, 30, True, True)])
def test_blas_attention_equals_the_per_pair_kernel(kv_dtype, n_head, n_kv, window, pos0, neox,
                                                   rope, block, sgemm):
    rng = np.random.default_rng(n_head * 100 + n_kv * 10 + window + pos0)
    n, hd, cap = 20, 16, 64
    assert attention_blas.fits(n, n_head, pos0 + n)
    cos_sin = rng.standard_normal((2, cap, hd // 2)).astype(np.float32)
    q = rng.standard_normal((n, n_head, hd)).astype(np.float32)
    k = rng.standard_normal((n, n_kv, hd)).astype(np.float32)
    v = rng.standard_normal((n, n_kv, hd)).astype(np.float32)
    old = rng.standard_normal((2, n_kv, cap, hd)).astype(np.float32)  # positions < pos0
    caches = [old.astype(np.float16).view(np.uint16) if kv_dtype == np.uint16
              else old.copy() for _ in range(2)]
    outs = [np.full((n, n_head * hd), np.nan, np.float32) for _ in range(2)]
    args = [(q.copy(), k.copy(), v.copy(), cos_sin[0], cos_sin[1], rope, neox)
            for _ in range(2)]
    attention_blas.attention(*args[0], caches[0][0], caches[0][1], pos0, 0.25, window, outs[0],
                             block=block, sgemm=sgemm)  # block 8: 3 query blocks, one short
    ops.attention(*args[1], caches[1][0], caches[1][1], pos0, 0.25, window, outs[1],
                  np.zeros((n_head, cap), np.float32))
    np.testing.assert_array_equal(caches[0], caches[1])  # the same rows stored
    np.testing.assert_allclose(outs[0], outs[1], rtol=0, atol=2e-5)


def test_fits_bounds_the_score_matrix():
    assert not attention_blas.fits(attention_blas.MIN_TOKENS - 1, 8, 100)
    assert attention_blas.fits(512, 32, 512)
    assert not attention_blas.fits(512, 32, 1 << 20)  # 64 GiB of scores: the per-pair kernel


@pytest.mark.parametrize("gelu", [False, True])
def test_row_parallel_glu_equals_the_one_thread_kernels(gelu):
    rng = np.random.default_rng(int(gelu))
    gate, up = rng.standard_normal((2, 37, 96)).astype(np.float32) * 3
    want, got = np.empty_like(gate), np.full_like(gate, np.nan)
    (ops.gelu_tanh_glu if gelu else ops.swiglu)(gate, up, want)
    ops.glu_rows(gate, up, got, gelu)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # fastmath: last-bit rounding


def test_the_work_items_find_numpys_sgemm():
    """Where NumPy ships OpenBLAS (its wheels do), the prefill attention's work items run on
    Numba's threads through its cblas_sgemm: a NumPy with another BLAS would fall back to the
    thread pool, and the sgemm=None cases above would then not test the Numba path."""
    from gguflite.runtime import ops

    if not ops.openblas_libs():
        pytest.skip("this NumPy ships no OpenBLAS: the attention runs on the thread pool")
    assert attention_blas.SGEMM != 0
