"""The int8 matrix product (runtime/kernels/gemm.py): every GEMM type, token counts that are
not multiples of 4, odd row counts, rows whose width is not a multiple of 128, the three
integer lowerings (VNNI, AVX2, portable), and Linear.matmul taking it from 2 tokens on."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gguflite.runtime.kernels import Linear, gemm, vector_gemm
from gguflite.runtime.kernels.dispatch import Kinds
from test_kernels_matvec import quantized_x, rand_weight, reference

from gguflite.constants import GGMLType

GEMM_NAMES = sorted(t.name for t in gemm.GEMM_TYPES)


def act_block(name: str) -> int:
    """Elements per activation scale in the GEMM: 256 for the super-block types, else 32."""
    return 256 if name.endswith(("_K", "_XS")) or name.startswith("TQ") else 32


def run_gemm(raw: np.ndarray, name: str, shape: tuple[int, int], X: np.ndarray) -> np.ndarray:
    lin = Linear(raw, GGMLType[name], shape, name=f"w.{name}")
    Y = np.full((X.shape[0], shape[0]), np.nan, np.float32)
    gemm.gemm(lin.kind, lin._w, lin.row_bytes, X, Y, gemm.gemm_kinds(lin._kinds))
    return Y


@pytest.mark.parametrize("name", GEMM_NAMES)
def test_gemm_equals_the_float64_product_of_the_int8_activations(name):
    """Y = X @ W.T where X is what the kernel multiplies (dx * xq per 32-block, or per 256-block
    for the super-block types, as llama.cpp's Q8_0 / Q8_K) and W is gguf-py's dequantization:
    the integer dots are exact, so only float rounding remains."""
    rng = np.random.default_rng(sum(map(ord, name)))
    block = act_block(name)
    for out_f, in_f, n_tok in [(33, 2 * block if block == 256 else 576, 7), (16, 768, 1),
                               (5, 256, 12)]:
        raw = rand_weight(rng, name, out_f, in_f)
        X = rng.standard_normal((n_tok, in_f)).astype(np.float32)
        Y = run_gemm(raw, name, (out_f, in_f), X)
        ref = quantized_x(X, block) @ reference(raw, name).astype(np.float64).T
        assert not np.isnan(Y).any()
        scale = np.abs(ref).max()
        np.testing.assert_allclose(Y, ref, rtol=0, atol=2e-5 * scale,
                                   err_msg=f"{name} {out_f}x{in_f}, {n_tok} tokens")


@pytest.mark.parametrize("name", ["Q8_0", "Q4_K", "Q6_K", "Q4_1", "Q5_0"])
def test_each_token_gets_its_own_mat_vec_numbers(name):
    """A token's row of Y does not depend on the other tokens of the call (so a prompt gives the
    same numbers alone or batched); for the 32-block types it equals the per-token mat-vec up
    to summation order (the super-block types quantize activations per 256 in the GEMM, per 32
    in the mat-vec: compared with the float64 product instead)."""
    rng = np.random.default_rng(3)
    shape = (48, 512)
    raw = rand_weight(rng, name, *shape)
    X = rng.standard_normal((9, 512)).astype(np.float32)
    Y = run_gemm(raw, name, shape, X)
    lin = Linear(raw, GGMLType[name], shape)
    for t in range(9):
        alone = run_gemm(raw, name, shape, np.ascontiguousarray(X[[t, t]]))[0]
        np.testing.assert_array_equal(alone, Y[t])
        if act_block(name) == 32:
            mv = lin.matvec(X[t])
        else:
            mv = quantized_x(X[t], 256) @ reference(raw, name).astype(np.float64).T
        np.testing.assert_allclose(Y[t], mv, rtol=0, atol=1e-5 * np.abs(mv).max())


def test_linear_matmul_takes_the_int8_product_from_two_tokens():
    rng = np.random.default_rng(4)
    raw = rand_weight(rng, "Q4_K", 64, 512)
    lin = Linear(raw, GGMLType.Q4_K, (64, 512))
    X = rng.standard_normal((2, 512)).astype(np.float32)
    np.testing.assert_array_equal(lin.matmul(X), run_gemm(raw, "Q4_K", (64, 512), X))
    one = lin.matmul(X[:1])  # one token: the mat-vec
    np.testing.assert_array_equal(one[0], lin.matvec(X[0]))
    f16 = Linear(rand_weight(rng, "F16", 8, 64), GGMLType.F16, (8, 64))  # not a GEMM type
    Xf = rng.standard_normal((9, 64)).astype(np.float32)
    np.testing.assert_allclose(f16.matmul(Xf), Xf @ f16.dequantize().T, rtol=1e-5, atol=1e-5)


def test_kind_outside_the_compiled_set_is_refused():
    rng = np.random.default_rng(5)
    lin = Linear(rand_weight(rng, "Q8_0", 4, 64), GGMLType.Q8_0, (4, 64))
    with pytest.raises(ValueError, match="kind outside"):
        gemm.gemm(lin.kind, lin._w, lin.row_bytes, np.ones((2, 64), np.float32),
                  np.zeros((2, 4), np.float32), Kinds(frozenset({int(GGMLType.Q4_0)})))


def test_an_unrunnable_path_is_refused(monkeypatch):
    monkeypatch.setenv("GGUFLITE_GEMM_PATH", "sse9")
    with pytest.raises(ValueError, match="GGUFLITE_GEMM_PATH='sse9'"):
        vector_gemm._choose_path()


def test_source_fingerprint_is_current():
    """gemm.py carries a fingerprint of dispatch.py (which fingerprints every module it
    inlines); Numba keys gemm's cache on gemm.py's text only."""
    assert gemm.DISPATCH_FINGERPRINT == gemm.dispatch_fingerprint(), (
        f"update DISPATCH_FINGERPRINT in runtime/kernels/gemm.py to "
        f"{gemm.dispatch_fingerprint()!r}")


def _runnable_paths() -> list[str]:
    feats = vector_gemm._host_features()
    paths = ["portable"]
    if "+avx2" in feats:
        paths.append("avx2")
        if "+avx512vnni" in feats and "+avx512vl" in feats:
            paths.append("vnni")
    return paths


@pytest.mark.parametrize("path", ["vnni", "avx2", "portable"])
def test_every_lowering_gives_the_same_products(path, tmp_path):
    """Each integer lowering this CPU can run, in its own process and Numba cache; the paths
    this CPU cannot run are named in the skip reason (the portable one runs everywhere)."""
    if path not in _runnable_paths():
        pytest.skip(f"this CPU cannot run the {path} lowering (no such instructions)")
    code = textwrap.dedent("""
        import numpy as np
        from test_gemm import run_gemm
        from test_kernels_matvec import quantized_x, rand_weight, reference
        from gguflite.runtime.kernels import vector_gemm
        assert vector_gemm.GEMM_PATH == "%s", vector_gemm.GEMM_PATH
        rng = np.random.default_rng(7)
        for name in ("Q8_0", "Q4_K", "Q6_K", "Q4_1"):
            raw = rand_weight(rng, name, 19, 512)
            X = rng.standard_normal((6, 512)).astype(np.float32)
            Y = run_gemm(raw, name, (19, 512), X)
            block = 256 if name.endswith("_K") else 32
            ref = quantized_x(X, block) @ reference(raw, name).astype(np.float64).T
            err = np.abs(Y - ref).max() / np.abs(ref).max()
            assert err < 2e-5, (name, err)
        print("path ok")
    """ % path)
    env = dict(os.environ, GGUFLITE_GEMM_PATH=path, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env.pop("GGUFLITE_PORTABLE_SIMD", None)
    tests_dir = os.path.dirname(__file__)
    env["PYTHONPATH"] = tests_dir + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tests_dir,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "path ok" in proc.stdout
