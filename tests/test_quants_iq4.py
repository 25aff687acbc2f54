"""IQ4_NL and IQ4_XS against ggml itself, bit for bit.

Encoding is compared with ``ggml_quantize_chunk`` (``quantize_iq4_nl`` / ``quantize_iq4_xs``,
``ntry = 7``) with and without an importance row, decoding with ggml's ``to_float`` and the
gguf package; both gguflite paths (NumPy reference and Numba) are checked.
"""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
from ggml_ref import ggml_dequantize, ggml_quantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from quant_cases import CASES, assert_same_bytes, assert_same_floats

import gguflite
from gguflite.constants import QK_K, GGMLType
from gguflite.errors import QuantizationError
from gguflite.quants import dequantize, get_codec, iq4, quantize

TYPES = [GGMLType.IQ4_NL, GGMLType.IQ4_XS]


def check_encode(ttype: GGMLType, x: np.ndarray, importance: np.ndarray | None, what: str):
    size = get_codec(ttype).type_size
    want = ggml_quantize(ttype, x, importance)
    for ref in (True, False):
        got = quantize(x, ttype, importance=importance, reference=ref)
        assert_same_bytes(got, want, size, f"{ttype.name} {'reference' if ref else 'numba'} "
                          f"vs ggml, {what}", x)


@pytest.mark.parametrize("ttype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("case", list(CASES))
def test_encode_shared_cases_match_ggml(ttype, case):
    # zeros, signed zeros, tiny and subnormal scales, fp16 overflow, outliers, heavy tails ...
    x = CASES[case]
    imp = np.random.default_rng(3).gamma(0.5, 1.0, x.shape[1]).astype(np.float32)
    for importance in (None, imp, np.zeros_like(imp)):
        check_encode(ttype, x, importance, f"{case}, importance "
                     f"{'none' if importance is None else importance[:2].tolist()}")


@pytest.mark.parametrize("ttype", TYPES, ids=lambda t: t.name)
def test_encode_random_rows_match_ggml(ttype):
    rng = np.random.default_rng(int(ttype))
    x = (rng.standard_normal((16, 2 * QK_K)) * rng.lognormal(0, 2, (16, 1))).astype(np.float32)
    x[1] += 0.5
    check_encode(ttype, x, None, "random rows")
    check_encode(ttype, x, rng.random(2 * QK_K).astype(np.float32), "random rows, importance")


_block_values = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(-4.0, 4.0, width=32),
    st.sampled_from([0.0, -0.0, 0.5, -0.5, 1e-40, 65504.0, 1e-15]),
)


@pytest.mark.parametrize("ttype", TYPES, ids=lambda t: t.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_encode_property_matches_ggml(ttype, data):
    x = data.draw(hnp.arrays(np.float32, (1, QK_K), elements=_block_values), label="x")
    imp = data.draw(st.none() | hnp.arrays(np.float32, (QK_K,), elements=st.floats(
        0.0, 1e6, width=32)), label="importance")
    check_encode(ttype, x, imp, "hypothesis example")


def test_best_index_is_ggml_nearest_table_entry():
    kv = iq4.KVALUES.astype(np.float32)
    mid = (kv[:-1] + kv[1:]) / 2  # exact ties go to the upper neighbour, as in C
    al = np.concatenate([kv, mid, [-1e9, 1e9, -127.5, 113.5, 0.0, -0.0, np.nan]]).astype(
        np.float32)
    want = [int(np.argmin(np.abs(kv - a))) for a in kv] + list(range(1, 16)) + [0, 15, 0, 15,
                                                                              8, 8, 15]
    assert iq4.best_index(al).tolist() == want


@pytest.mark.parametrize("ttype", TYPES, ids=lambda t: t.name)
def test_decode_matches_ggml_and_gguf(ttype):
    codec = get_codec(ttype)
    rng = np.random.default_rng(int(ttype))
    raw = rng.integers(0, 256, (300, codec.type_size), dtype=np.uint8)
    scale = rng.standard_normal(300) * 10.0 ** rng.integers(-6, 3, 300)
    raw[:, 0:2] = scale.astype("<f2").view(np.uint8).reshape(-1, 2)
    n = 300 * codec.block_size
    want = ggml_dequantize(ttype, raw, n)
    gg = gguf.quants.dequantize(raw.reshape(-1), gguf.GGMLQuantizationType(int(ttype)))
    assert_same_floats(gg.reshape(-1), want, codec.block_size, "gguf package vs ggml")
    for ref in (True, False):
        got = dequantize(raw, ttype, (n,), reference=ref)
        assert_same_floats(got, want, codec.block_size, f"{ttype.name} reference={ref}")


@pytest.mark.parametrize("ttype", TYPES, ids=lambda t: t.name)
def test_numba_decoder_equals_reference_on_garbage(ttype):
    codec = get_codec(ttype)
    raw = np.random.default_rng(5).integers(0, 256, (2000, codec.type_size), dtype=np.uint8)
    raw.flags.writeable = False  # as a memory-mapped file is
    shape = (2000, codec.block_size)
    assert_same_floats(dequantize(raw, ttype, shape), dequantize(raw, ttype, shape,
                                                                 reference=True),
                       codec.block_size, f"{ttype.name} numba vs reference")


@pytest.mark.parametrize("ttype", TYPES, ids=lambda t: t.name)
def test_round_trip_error_and_row_checks(ttype):
    x = np.random.default_rng(9).standard_normal((16, QK_K)).astype(np.float32)
    y = dequantize(quantize(x, ttype), ttype, x.shape)
    assert np.sqrt(np.mean((x - y) ** 2) / np.mean(x**2)) < 0.1
    block = get_codec(ttype).block_size
    with pytest.raises(QuantizationError, match=f"multiple of the .* block size {block}"):
        quantize(np.zeros((2, block + 16), np.float32), ttype, name="blk.0.attn_q.weight")


def test_types_table_lists_iq4():
    table = {t.name: t for t in gguflite.quants.types()}
    assert table["iq4_nl"].bits_per_weight == 4.5 and table["iq4_nl"].can_quantize
    assert table["iq4_xs"].bits_per_weight == 4.25 and table["iq4_xs"].can_quantize
