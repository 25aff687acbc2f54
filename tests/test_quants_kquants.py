"""k-quants (Q2_K..Q6_K) against ggml itself, bit for bit.

Encoding of every k-quant is compared with ``ggml_quantize_chunk`` (no importance: the
``quantize_row_*_ref`` path; with importance: ``quantize_row_*_impl``), decoding with ggml's
``to_float`` and the gguf package. Both gguflite paths (NumPy reference and Numba) are checked,
and the Numba path against the reference on more data. A mismatch names the first bad block.
"""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
from ggml_ref import fp32_to_fp16_bits as ggml_fp32_to_fp16_bits
from ggml_ref import ggml_dequantize, ggml_quantize, ggml_quantize_ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from quant_cases import CASES

import gguflite
from gguflite.constants import QK_K, GGMLType
from gguflite.errors import QuantizationError
from gguflite.quants import dequantize, get_codec, kquants, kquants_numba, quantize

ENCODERS = [GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]
DECODERS = [GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]


def assert_same_blocks(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Bitwise equality of (n_blocks, k) arrays; on failure name the first and worst block.

    The worst block is the one with the most differing elements (bytes of an encoding, floats
    of a decoding); its first differing elements are shown.
    """
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    g = np.ascontiguousarray(got)
    w = np.ascontiguousarray(want)
    if g.dtype.itemsize == 4:  # compare float32 outputs as bits (NaN == NaN, -0 != +0)
        g, w = g.view(np.uint32), w.view(np.uint32)
    g, w = g.reshape(got.shape[0], -1), w.reshape(want.shape[0], -1)
    differ = g != w  # (n_blocks, k)
    n_bad = differ.sum(axis=1)
    if n_bad.any():
        first, worst = int(np.argmax(n_bad > 0)), int(np.argmax(n_bad))
        cols = np.nonzero(differ[worst])[0][:8]
        show = (lambda a: a.view(np.float32)) if g.dtype == np.uint32 else (lambda a: a)
        pytest.fail(f"{what}: {int((n_bad > 0).sum())} of {g.shape[0]} blocks differ; first "
                    f"is block {first}; worst is block {worst} ({int(n_bad[worst])} elements), "
                    f"at {cols.tolist()}: got {show(g[worst, cols]).tolist()}, "
                    f"want {show(w[worst, cols]).tolist()}")


def encode_all_ways(ttype: GGMLType, x: np.ndarray, importance: np.ndarray | None):
    """(reference, fast, ggml) encodings of rows ``x`` as (n_blocks, type_size) arrays."""
    codec = get_codec(ttype)
    want = ggml_quantize(ttype, x, importance).reshape(-1, codec.type_size)
    ref = quantize(x, ttype, importance=importance, reference=True).reshape(-1, codec.type_size)
    fast = quantize(x, ttype, importance=importance).reshape(-1, codec.type_size)
    return ref, fast, want


def check_encode(ttype: GGMLType, x: np.ndarray, importance: np.ndarray | None, what: str):
    ref, fast, want = encode_all_ways(ttype, x, importance)
    assert_same_blocks(ref, want, f"{ttype.name} reference vs ggml, {what}")
    assert_same_blocks(fast, want, f"{ttype.name} numba vs ggml, {what}")


# -- encoding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
@pytest.mark.parametrize("with_importance", [False, True], ids=["plain", "imatrix"])
def test_encode_random_matches_ggml(ttype, with_importance):
    rng = np.random.default_rng(int(ttype) * 10 + with_importance)
    x = (rng.standard_normal((6, 4 * QK_K)) * rng.uniform(0.01, 3, (6, 1))).astype(np.float32)
    x[1] += 0.5  # a row with an offset, so the min matters for Q4_K
    imp = rng.gamma(0.5, 1.0, 4 * QK_K).astype(np.float32) if with_importance else None
    check_encode(ttype, x, imp, "random rows")
    if not with_importance:  # the chunk path is quantize_row_*_ref itself
        assert np.array_equal(ggml_quantize_ref(ttype, x), quantize(x, ttype).reshape(-1))


def _adversarial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = QK_K
    small = rng.standard_normal((2, n)) * 0.01
    outlier = small.copy()
    outlier[0, 5], outlier[1, 200] = 1e4, -3e3
    return {
        "all_zero": np.zeros((2, n)),  # every group below GROUP_MAX_EPS
        "constant_pos": np.full((2, n), 0.37),  # max == x, min clamps to 0
        "constant_neg": np.full((2, n), -1.5),  # max == min < 0: the flat branch
        "one_outlier": outlier,  # one value sets the super-block scale
        "subnormal": rng.standard_normal((2, n)) * 1e-40,  # below GROUP_MAX_EPS, not zero
        "near_eps": rng.standard_normal((2, n)) * 1e-15,  # straddles GROUP_MAX_EPS
        "beyond_fp16": rng.standard_normal((2, n)) * 1e6,  # d overflows fp16 for Q6_K
        "far_beyond_fp16": rng.standard_normal((2, n)) * 1e20,  # inf/NaN inside ggml
        "float32_extremes": rng.uniform(-3e38, 3e38, (2, n)),  # sums overflow to inf
        "negative_only": -np.abs(rng.standard_normal((2, n))),
        "positive_only": np.abs(rng.standard_normal((2, n))) + 2.0,
        "half_integers": rng.integers(-20, 20, (2, n)) / 2,  # rounding ties everywhere
        "sparse": rng.standard_normal((2, n)) * (rng.random((2, n)) < 0.05),
        "one_hot": np.eye(2, n),
        "huge_dynamic_range": rng.standard_normal((2, n)) * np.logspace(-10, 10, n),
    }


ADVERSARIAL = _adversarial()


def _importances(n: int) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(11)
    return {
        "none": None,
        "random": rng.random(n).astype(np.float32),
        "all_zero": np.zeros(n, np.float32),  # every weight zero: degenerate fits
        "few_nonzero": ((rng.random(n) < 0.1) * 5.0).astype(np.float32),
        "huge": np.full(n, 1e30, np.float32),
    }


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_encode_adversarial_matches_ggml(ttype, case):
    x = ADVERSARIAL[case].astype(np.float32)
    for imp_name, imp in _importances(x.shape[1]).items():
        check_encode(ttype, x, imp, f"{case} with importance {imp_name}")


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(CASES))
def test_encode_shared_cases_match_ggml(ttype, case):
    # the codec suite's shared inputs: zeros, tiny scales, outliers, heavy tails, extremes ...
    x = CASES[case]
    imp = np.random.default_rng(13).gamma(0.5, 1.0, x.shape[1]).astype(np.float32)
    for importance in (None, imp):
        check_encode(ttype, x, importance, f"quant_cases {case}, importance "
                     f"{importance is not None}")


_finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
_block_values = st.one_of(
    _finite_f32,  # anything finite, 3e38 included
    st.floats(-4.0, 4.0, width=32),  # the usual weight range
    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1e-40, 65504.0, 1e-15]),  # ties, subnormal, limits
)


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_encode_property_matches_ggml(ttype, data):
    x = data.draw(hnp.arrays(np.float32, (1, QK_K), elements=_block_values), label="x")
    imp = data.draw(st.none() | hnp.arrays(np.float32, (QK_K,), elements=st.floats(
        0.0, 1e6, width=32)), label="importance")
    check_encode(ttype, x, imp, "hypothesis example")


@pytest.fixture(scope="module")
def smollm_ffn_down() -> np.ndarray:
    """A real weight matrix with 1536-value rows: SmolLM2's blk.0.ffn_down, decoded from Q4_1."""
    from gguflite.default_model import default_model_path

    with gguflite.open(default_model_path()) as f:
        ti = f.tensors["blk.0.ffn_down.weight"]
        raw = np.array(f.raw(ti.name)).reshape(ti.shape[0], -1)  # (576, row bytes)
    w = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(ti.type)))
    w = w.astype(np.float32)
    assert w.shape == (576, 1536)
    return w


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
def test_encode_real_weights_matches_ggml(ttype, smollm_ffn_down):
    w = smollm_ffn_down
    imp = np.mean(w * w, axis=0, dtype=np.float64).astype(np.float32)  # imatrix-like
    for importance in (None, imp):
        want = ggml_quantize(ttype, w, importance)
        fast = quantize(w, ttype, importance=importance)
        assert_same_blocks(fast.reshape(-1, get_codec(ttype).type_size),
                           want.reshape(-1, get_codec(ttype).type_size),
                           f"{ttype.name} numba on ffn_down, importance={importance is not None}")
        rows = slice(0, 48)  # the NumPy reference is slower; a slice of the rows suffices
        ref = quantize(w[rows], ttype, importance=importance, reference=True)
        assert_same_blocks(ref.reshape(-1, get_codec(ttype).type_size),
                           want[rows].reshape(-1, get_codec(ttype).type_size),
                           f"{ttype.name} reference on ffn_down rows {rows}")


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
def test_numba_encoder_equals_reference_on_many_blocks(ttype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 2 * QK_K)).astype(np.float32)
    x *= rng.lognormal(0, 2, (64, 1)).astype(np.float32)
    imp = rng.random(2 * QK_K).astype(np.float32)
    for importance in (None, imp):
        ref = quantize(x, ttype, importance=importance, reference=True)
        fast = quantize(x, ttype, importance=importance)
        size = get_codec(ttype).type_size
        assert_same_blocks(fast.reshape(-1, size), ref.reshape(-1, size),
                           f"{ttype.name} numba vs reference")


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
def test_encode_accepts_read_only_and_checks_rows(ttype):
    x = np.random.default_rng(5).standard_normal((2, QK_K)).astype(np.float32)
    x.flags.writeable = False
    imp = np.ones(QK_K, np.float32)
    imp.flags.writeable = False
    assert np.array_equal(quantize(x, ttype, importance=imp), ggml_quantize(ttype, x, imp))
    assert np.array_equal(quantize(x, ttype), ggml_quantize(ttype, x))
    with pytest.raises(QuantizationError, match="multiple of the .* block size 256"):
        quantize(np.zeros((2, 576), np.float32), ttype, name="blk.0.attn_q.weight")
    with pytest.raises(QuantizationError, match="importance must have shape"):
        quantize(x, ttype, importance=np.ones(16, np.float32))


# -- decoding ------------------------------------------------------------------------------------
def random_blocks(ttype: GGMLType, n_blocks: int, seed: int, *, finite: bool) -> np.ndarray:
    """Random bytes for ``n_blocks`` blocks; with ``finite`` the fp16 scales are finite."""
    size = get_codec(ttype).type_size
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    if finite:
        fp16_at = {GGMLType.Q2_K: (80, 82), GGMLType.Q3_K: (108,), GGMLType.Q4_K: (0, 2),
                   GGMLType.Q5_K: (0, 2), GGMLType.Q6_K: (208,)}[ttype]
        for off in fp16_at:
            scale = rng.standard_normal(n_blocks) * 10.0 ** rng.integers(-6, 3, n_blocks)
            raw[:, off:off + 2] = scale.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    return raw


@pytest.mark.parametrize("ttype", DECODERS, ids=lambda t: t.name)
def test_decode_matches_ggml_and_gguf(ttype):
    raw = random_blocks(ttype, 200, int(ttype), finite=True)
    n = raw.shape[0] * QK_K
    want = ggml_dequantize(ttype, raw, n).reshape(-1, QK_K)
    with np.errstate(all="ignore"):
        gg = gguf.quants.dequantize(raw.reshape(-1), gguf.GGMLQuantizationType(int(ttype)))
    assert_same_blocks(gg.reshape(-1, QK_K).astype(np.float32), want, "gguf package vs ggml")
    ref = dequantize(raw, ttype, (n,), reference=True).reshape(-1, QK_K)
    fast = dequantize(raw, ttype, (n,)).reshape(-1, QK_K)
    assert_same_blocks(ref, want, f"{ttype.name} reference decode vs ggml")
    assert_same_blocks(fast, want, f"{ttype.name} numba decode vs ggml")


@pytest.mark.parametrize("ttype", DECODERS, ids=lambda t: t.name)
def test_decoders_equal_ggml_on_garbage(ttype):
    # any bytes at all, inf and NaN scales included: both paths decode as ggml does, bit for bit
    raw = random_blocks(ttype, 3000, 100 + int(ttype), finite=False)
    raw.flags.writeable = False  # as a memory-mapped file is
    shape = (raw.shape[0], QK_K)
    want = ggml_dequantize(ttype, raw, raw.shape[0] * QK_K).reshape(shape)
    ref = dequantize(raw, ttype, shape, reference=True)
    fast = dequantize(raw, ttype, shape)
    assert_same_blocks(ref, want, f"{ttype.name} reference vs ggml")
    assert_same_blocks(fast, want, f"{ttype.name} numba vs ggml")


@pytest.mark.parametrize("ttype", ENCODERS, ids=lambda t: t.name)
def test_round_trip_error_is_small(ttype):
    x = np.random.default_rng(9).standard_normal((16, QK_K)).astype(np.float32)
    y = dequantize(quantize(x, ttype), ttype, x.shape)
    rel = np.sqrt(np.mean((x - y) ** 2) / np.mean(x**2))
    limit = {GGMLType.Q2_K: 0.45, GGMLType.Q3_K: 0.25, GGMLType.Q4_K: 0.12,
             GGMLType.Q5_K: 0.06, GGMLType.Q6_K: 0.03}
    assert rel < limit[ttype], rel


# -- helpers -------------------------------------------------------------------------------------
def test_fp16_conversion_matches_ggml():
    rng = np.random.default_rng(1)
    special = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e9, -1e9, 6e-8, 2.9e-8,
                        3.0e-8, 6.1e-5, 1e-45, np.inf, -np.inf], np.float32)
    bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([special, bits.view(np.float32),
                        (rng.standard_normal(100_000) * 1e3).astype(np.float32)])
    x = x[~np.isnan(x)]  # NaN payloads are not compared; NaN never reaches a scale here
    want = ggml_fp32_to_fp16_bits(x)
    assert np.array_equal(kquants.fp32_to_fp16_bits(x), want)
    fast = np.array([kquants_numba.fp32_to_fp16(v) for v in x[:3000]], dtype=np.uint16)
    assert np.array_equal(fast, want[:3000])


def test_nearest_int_is_ggml_rounding():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998, 4194303.0, -4194303.5], np.float32)
    assert kquants.nearest_int(x).tolist() == [0, 2, 2, 0, -2, 2, 4194303, -4194304]
    assert [kquants_numba.nearest_int(v) for v in x] == kquants.nearest_int(x).tolist()
    # beyond 2**22 ggml's trick returns garbage; both implementations return the same garbage
    big = np.array([5e6, -5e6, 1e10, 3e38], np.float32)
    assert [kquants_numba.nearest_int(v) for v in big] == kquants.nearest_int(big).tolist()


def test_scale_min_k4_pack_round_trip():
    rng = np.random.default_rng(2)
    ls = rng.integers(0, 64, (500, 8))
    lm = rng.integers(0, 64, (500, 8))
    sc, mn = kquants.unpack_scale_min_k4(kquants.pack_scale_min_k4(ls, lm))
    assert np.array_equal(sc, ls) and np.array_equal(mn, lm)


def test_types_table_lists_k_quants():
    table = {t.name: t for t in gguflite.quants.types()}
    assert table["q4_k"].bits_per_weight == 4.5 and table["q4_k"].can_quantize
    assert table["q6_k"].bits_per_weight == 6.5625 and table["q6_k"].can_quantize
    assert table["q2_k"].type_size == 84 and table["q2_k"].can_quantize
    assert table["q5_k"].bits_per_weight == 5.5 and table["q3_k"].bits_per_weight == 3.4375
