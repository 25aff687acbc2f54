"""KM2/KM3/KM4 k-means codebook tensors: exactness, determinism, storage, edge cases."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import gguf
import numpy as np
import pytest

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite.errors import MetadataError, QuantizationError, TensorInfoError
from gguflite.quants import dequantize as q_dequantize
from gguflite.quants import km
from gguflite.quants import quantize as q_quantize
from gguflite.quants.km_numba import optimal_1d


def _matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Heavy-tailed weights with a few outliers, like real projection matrices."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(4, size=(rows, cols)).astype(np.float32) * 0.02
    w[rng.random((rows, cols)) < 0.01] *= 8
    return w


def _same(a: km.KMTensor, b: km.KMTensor) -> None:
    assert a.shape == b.shape and a.bits == b.bits
    assert (a.group_rows, a.group_cols) == (b.group_rows, b.group_cols)
    bad = np.flatnonzero(~(a.codebook == b.codebook).all(axis=1))
    assert bad.size == 0, f"codebook {bad[0]} differs: {a.codebook[bad[0]]} vs {b.codebook[bad[0]]}"
    bad_rows = np.flatnonzero(~(a.codes == b.codes).all(axis=1))
    assert bad_rows.size == 0, f"codes of row {bad_rows[0]} differ"


# -- the Numba kernels equal the NumPy reference bit for bit ------------------------------------
CASES = [  # (bits, granularity, init): every init, every granularity kind
    (4, "row", "optimal"), (3, "row", "optimal"), (2, "row", "optimal"),
    (4, "tensor", "optimal"), (3, "rows3", "quantile"), (4, "cols16", "kmeans++"),
    (2, (5, 24), "kmeans++"), (3, "row", "kmeans++"), (4, "row", "quantile"),
]


@pytest.mark.parametrize("bits,granularity,init", CASES)
def test_numba_equals_reference(bits, granularity, init):
    w = _matrix(13, 77)
    w[2] = 0.5  # constant row
    w[3, ::2] = -1.0  # two distinct values
    imp = np.random.default_rng(1).random(77).astype(np.float32) ** 3
    for importance, dp in ((None, 256), (imp, 64)):  # dp 64 < 77: the cut-into-runs path
        kw = dict(importance=importance, granularity=granularity, init=init, seed=7, dp_points=dp)
        _same(km.quantize(w, bits, **kw), km.quantize(w, bits, reference=True, **kw))


def test_dequantize_and_pack_equal_reference():
    rng = np.random.default_rng(2)
    for bits, cols in itertools.product((2, 3, 4), (1, 5, 8, 13, 64)):
        q = rng.integers(0, 1 << bits, size=(6, cols))
        packed = km.pack_codes(q, bits)
        assert packed.shape == (6, km.packed_bytes(cols, bits))
        assert np.array_equal(km.unpack_codes(packed, cols, bits), q)
        kmt = km.quantize(_matrix(6, cols), bits, granularity="tensor")
        assert np.array_equal(kmt.dequantize(), kmt.dequantize(reference=True))


def test_pack_layout_drawn_in_docs():
    # KM4: low nibble first; KM2: lowest pair first; KM3: 24-bit little-endian words
    assert km.pack_codes(np.array([[1, 2, 3]]), 4).tolist() == [[0x21, 0x03]]
    assert km.pack_codes(np.array([[1, 2, 3, 0, 1]]), 2).tolist() == [[0b00111001, 0b01]]
    q = np.array([[1, 2, 3, 4, 5, 6, 7, 0, 7]])
    word = sum(int(v) << (3 * i) for i, v in enumerate(q[0, :8]))
    assert km.pack_codes(q, 3).tolist() == [[word & 255, word >> 8 & 255, word >> 16, 7, 0, 0]]


# -- the algorithm ----------------------------------------------------------------------------
def test_optimal_init_is_the_global_optimum():
    """The DP's SSE equals brute force over every contiguous split of sorted points."""
    rng = np.random.default_rng(3)
    for trial in range(20):
        n, k = 9, int(rng.integers(2, 5))
        x = np.sort(rng.standard_normal(n) * rng.choice([1, 10], n))
        w = rng.random(n) + 0.05
        u = [np.concatenate(([0.0], np.cumsum(a))) for a in (w, w * x, w * x * x)]
        c = np.empty(k)
        optimal_1d(*u, k, c)

        def sse(cuts, x=x, w=w, n=n):
            b = (0, *cuts, n)
            return sum(((x[a:e] - np.average(x[a:e], weights=w[a:e])) ** 2 * w[a:e]).sum()
                       for a, e in zip(b[:-1], b[1:], strict=True))

        best = min(sse(cuts) for cuts in itertools.combinations(range(1, n), k - 1))
        got = ((x[:, None] - c[None, :]) ** 2 * w[:, None]).min(1).sum()
        assert got == pytest.approx(best, rel=1e-9, abs=1e-12), f"trial {trial}"


def test_deterministic_for_a_seed():
    w = _matrix(40, 96)
    for init in ("optimal", "quantile", "kmeans++"):
        a = km.quantize(w, 3, init=init, seed=11)
        _same(a, km.quantize(w.copy(), 3, init=init, seed=11))
    a, b = (km.quantize(w, 4, init="kmeans++", granularity="tensor", seed=s) for s in (1, 2))
    assert not np.array_equal(a.codebook, b.codebook)  # the seed does steer k-means++


def test_importance_weighting_lowers_the_weighted_error():
    """Planted: a few important columns hold values that unweighted k-means would merge."""
    rng = np.random.default_rng(4)
    cols = 200
    w = rng.uniform(-1, 1, size=(8, cols)).astype(np.float32)
    important = np.arange(0, cols, 20)  # 10 columns
    w[:, important] = rng.choice([0.30, 0.34, 0.38], size=(8, important.size))
    imp = np.full(cols, 1e-3, np.float32)
    imp[important] = 1.0
    for bits in (2, 3):
        errs = []
        for importance in (None, imp):
            w2 = km.quantize(w, bits, importance=importance).dequantize()
            errs.append(float((imp * (w2 - w) ** 2).sum()))
        assert errs[1] < 0.5 * errs[0], (bits, errs)


def test_lower_error_than_uniform_3bit_rounding():
    """KM3 per row beats per-row min/max 3-bit rounding at a lower bit rate."""
    w = _matrix(32, 512)
    w2 = km.quantize(w, 3).dequantize()
    lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
    d = (hi - lo) / 7
    rtn = lo + np.round((w - lo) / d) * d
    assert np.linalg.norm(w2 - w) < 0.6 * np.linalg.norm(rtn - w)


@pytest.mark.parametrize("cols", [1, 3, 9, 100, 577])
def test_any_row_length(cols):
    w = _matrix(5, cols)
    for bits in (2, 3, 4):
        kmt = km.quantize(w, bits)
        assert kmt.codes.shape == (5, km.packed_bytes(cols, bits))
        w2 = kmt.dequantize()
        assert w2.shape == (5, cols)
        if cols <= 1 << bits:  # no more values than codes: exact
            assert np.array_equal(w2, w.astype(np.float16).astype(np.float32))


def test_matvec_equals_dequantize_dot():
    rng = np.random.default_rng(5)
    for bits, gran, cols in [(4, "row", 577), (3, "row", 203), (2, "row", 130),
                             (4, "cols64", 256), (3, (4, 32), 100), (2, "tensor", 7)]:
        kmt = km.quantize(_matrix(21, cols), bits, granularity=gran)
        x = rng.standard_normal(cols).astype(np.float32)
        want = kmt.dequantize().astype(np.float64) @ x
        assert np.allclose(km.matvec_reference(kmt, x), want, rtol=0, atol=1e-12)
        got = km.matvec(kmt, x)
        scale = np.abs(kmt.dequantize()).astype(np.float64) @ np.abs(x)
        assert np.all(np.abs(got - want) <= 1e-5 * scale), (bits, gran)


# -- storage ----------------------------------------------------------------------------------
def _write(path, tensors):
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama", gguflite.GGUFValueType.STRING)
        w.add_tensor("plain.weight", shape=(2, 3), type=GGMLType.F32,
                     data=np.arange(6, dtype=np.float32).reshape(2, 3))
        for name, kmt in tensors.items():
            km.add_to_writer(w, name, kmt)


def test_gguf_round_trip(tmp_path):
    tensors = {
        "blk.0.ffn_down.weight": km.quantize(_matrix(24, 1536 // 8), 4),
        "blk.0.attn_q.weight": km.quantize(_matrix(16, 72), 3, granularity="rows4"),
        "blk.0.ffn_up.weight": km.quantize(_matrix(9, 50), 2, granularity="cols16",
                                           codebook_type="f32"),
        "empty.weight": km.quantize(np.zeros((0, 40), np.float32), 4),
    }
    path = tmp_path / "km.gguf"
    _write(path, tensors)
    with gguflite.open(path) as f:
        assert km.km_tensor_names(f) == list(tensors)
        for name, kmt in tensors.items():
            back = km.from_gguf(f, name)
            _same(back, kmt)
            assert back.codebook.dtype == kmt.codebook.dtype
            assert np.array_equal(back.dequantize(), kmt.dequantize())
            if kmt.shape[0]:  # the kernels take the read-only memory-mapped arrays as they are
                x = np.ones(kmt.shape[1], np.float32)
                assert np.allclose(km.matvec(back, x), km.matvec(kmt, x), rtol=1e-6)

    # another GGUF reader sees standard tensors and keys
    r = gguf.GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    for name, kmt in tensors.items():
        codes = by_name[name + km.CODES_SUFFIX]
        book = by_name[name + km.BOOK_SUFFIX]
        assert codes.tensor_type == gguf.GGMLQuantizationType.I8
        assert list(codes.shape) == [kmt.codes.shape[1], kmt.codes.shape[0]]  # ne0 first
        assert np.array_equal(np.asarray(codes.data).view(np.uint8).reshape(kmt.codes.shape),
                              kmt.codes)
        assert book.tensor_type == (gguf.GGMLQuantizationType.F16
                                    if kmt.codebook.dtype == np.float16
                                    else gguf.GGMLQuantizationType.F32)
        field = r.fields[f"{km.KEY_PREFIX}{name}.bits"]
        assert int(field.parts[field.data[0]][0]) == kmt.bits


def test_from_gguf_rejects_mismatched_companions(tmp_path):
    kmt = km.quantize(_matrix(8, 32), 4)
    name = "blk.0.attn_k.weight"
    cases = {  # what is written -> the error and rule expected
        "missing codebook": (km.to_gguf_tensors(name, kmt)[:1], km.metadata_items(name, kmt),
                             TensorInfoError, "KM3"),
        "wrong shape": (km.to_gguf_tensors(name, kmt), [
            (k, [8, 40] if k.endswith(".shape") else v, t, e)
            for k, v, t, e in km.metadata_items(name, kmt)], TensorInfoError, "KM4"),
        "bits 5": (km.to_gguf_tensors(name, kmt), [
            (k, 5 if k.endswith(".bits") else v, t, e)
            for k, v, t, e in km.metadata_items(name, kmt)], MetadataError, "KM2"),
        "missing group": (km.to_gguf_tensors(name, kmt), km.metadata_items(name, kmt)[:2],
                          MetadataError, "KM1"),
    }
    for label, (specs, items, error, rule) in cases.items():
        path = tmp_path / f"{label}.gguf"
        with GGUFWriter(path) as w:
            for tname, shape, ttype, data in specs:
                w.add_tensor(tname, shape=shape, type=ttype, data=data)
            w.add_items(items)
        with gguflite.open(path) as f, pytest.raises(error) as exc:
            km.from_gguf(f, name)
        assert exc.value.rule == rule, label
        assert name in str(exc.value)


def test_registry_row_codec():
    w = _matrix(6, 70)
    packed = q_quantize(w, "km4")
    assert packed.shape == (6, 2 * 16 + 35)
    kmt = km.quantize(w, 4)
    assert np.array_equal(q_dequantize(packed, "km4", w.shape), kmt.dequantize())
    w3 = _matrix(24, 40).reshape(2, 12, 40)  # leading dims are rows
    back = q_dequantize(q_quantize(w3, "km3"), "km3", w3.shape)
    assert back.shape == w3.shape
    with pytest.raises(QuantizationError, match="needs"):
        q_dequantize(packed[:, :-1], "km4", w.shape)


# -- edge cases (one line each says why) ------------------------------------------------------
def test_edge_cases():
    # constant rows are exact
    w = np.full((3, 50), 0.25, np.float32)
    assert np.array_equal(km.quantize(w, 2).dequantize(), w)
    # fewer distinct values than codes: exact, also sharing a codebook across rows
    w = np.tile(np.array([-2.0, 0.0, 0.5, 3.0], np.float32), (4, 9))
    for bits, gran in ((2, "row"), (3, "tensor"), (4, "rows2")):
        assert np.array_equal(km.quantize(w, bits, granularity=gran).dequantize(), w)
    # empty tensors: no rows, no columns
    for shape in ((0, 7), (5, 0), (0, 0)):
        kmt = km.quantize(np.zeros(shape, np.float32), 3)
        assert kmt.dequantize().shape == shape
        assert km.matvec(kmt, np.zeros(shape[1], np.float32)).shape == (shape[0],)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_names_the_index(value):
    w = _matrix(4, 10)
    w[2, 7] = value
    with pytest.raises(QuantizationError, match=r"index \(2, 7\)"):
        km.quantize(w, 4, name="blk.3.ffn_up.weight")


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=5), "bits must be"),
    (dict(granularity="blocks"), "granularity"),
    (dict(granularity="cols4"), "multiple of 8"),
    (dict(init="random"), "init must be"),
    (dict(importance=np.ones(3)), r"importance must have shape \(10,\)"),
    (dict(importance=-np.ones(10)), "importance"),
    (dict(codebook_type="bf16"), "codebook_type"),
])
def test_bad_arguments(kwargs, match):
    kw = dict(bits=4) | kwargs
    with pytest.raises(QuantizationError, match=match):
        km.quantize(_matrix(4, 10), kw.pop("bits"), **kw)


def test_f16_overflow_asks_for_f32():
    w = np.array([[1e5, -1e5, 0.0, 1.0, 2.0]], np.float32)
    with pytest.raises(QuantizationError, match="f32"):
        km.quantize(w, 2)
    assert np.array_equal(km.quantize(w, 4, codebook_type="f32").dequantize(), w)


def test_portable_simd_fallback(tmp_path):
    """The generic-IR lookup (no AVX2) gives the same products; fresh cache so it compiles."""
    script = """
import numpy as np
from gguflite.quants import _km_simd, km, km_numba
assert _km_simd.PORTABLE
rng = np.random.default_rng(0)
for bits in (2, 3, 4):
    q = rng.integers(0, 1 << bits, size=(9, 53))
    book = np.sort(rng.standard_normal((9, 1 << bits)), axis=1).astype(np.float32)
    x = rng.standard_normal(53).astype(np.float32)
    out = np.empty(9, np.float32)
    km_numba.km_matvec(km.pack_codes(q, bits), book, x, out, 1, 0)
    want = (np.take_along_axis(book, q, 1).astype(np.float64) @ x)
    assert np.allclose(out, want, rtol=1e-5, atol=1e-5), (bits, out, want)
print("ok")
"""
    env = dict(os.environ, GGUFLITE_PORTABLE_SIMD="1", NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
