"""Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the float types against ggml itself, bit for bit.

Encoding is compared with ``ggml_quantize_chunk`` (which runs ``quantize_row_<t>_ref`` for these
types) and with ``from_float_ref``; decoding with ggml's ``to_float`` and with
``gguf.quants.dequantize``, on real quantized data and on random bytes (NaN payloads included).
Both gguflite paths (NumPy reference and Numba) are checked; a mismatch names the worst block.
"""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
from ggml_ref import (
    fp32_to_fp16_bits,
    ggml_dequantize,
    ggml_quantize,
    ggml_quantize_ref,
    type_traits,
)
from numba import njit
from quant_cases import CASES, GGUF_SIGNED_ZERO_CASES, assert_same_bytes, assert_same_floats

import gguflite
from gguflite.constants import GGMLType
from gguflite.default_model import default_model_path
from gguflite.errors import QuantizationError
from gguflite.quants import _numba_common as nc
from gguflite.quants import dequantize, get_codec, quantize

LEGACY = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1]
PATHS = ["reference", "fast"]


# -- encoding ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_quantize_matches_ggml(gtype: GGMLType, case: str, path: str) -> None:
    x = CASES[case]
    codec = get_codec(gtype)
    got = quantize(x, gtype, reference=(path == "reference"))
    assert got.shape == (x.shape[0], x.shape[1] // 32 * codec.type_size)
    assert_same_bytes(got, ggml_quantize(gtype, x), codec.type_size,
                      f"{gtype.name} {case} {path} vs ggml_quantize_chunk", x)


@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_chunk_and_from_float_ref_agree(gtype: GGMLType) -> None:
    # ggml_quantize_chunk without an importance matrix is quantize_row_<t>_ref
    x = CASES["normal"]
    assert np.array_equal(ggml_quantize(gtype, x).reshape(-1), ggml_quantize_ref(gtype, x))


@pytest.mark.parametrize("case", sorted(set(CASES) - GGUF_SIGNED_ZERO_CASES))
@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_quantize_matches_gguf_package(gtype: GGMLType, case: str) -> None:
    x = CASES[case]
    with np.errstate(all="ignore"):
        want = gguf.quants.quantize(x, gguf.GGMLQuantizationType(int(gtype)))
    assert_same_bytes(quantize(x, gtype), want, get_codec(gtype).type_size,
                      f"{gtype.name} {case} vs gguf.quants.quantize", x)


@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_fast_path_matches_reference_on_more_data(gtype: GGMLType) -> None:
    rng = np.random.default_rng(int(gtype))
    x = (rng.standard_normal((256, 512)) * rng.lognormal(0, 3, (256, 1))).astype(np.float32)
    codec = get_codec(gtype)
    assert_same_bytes(quantize(x, gtype), quantize(x, gtype, reference=True), codec.type_size,
                      f"{gtype.name} Numba vs NumPy", x)


IMPORTANCE_CASES = ["normal", "offset", "heavy", "zeros", "mixed_zeros", "sign_ties", "tiny",
                    "huge", "outlier", "constant"]


@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_quantize_with_importance_matches_ggml(gtype: GGMLType) -> None:
    # with an importance vector ggml runs quantize_row_<t>_impl (Q8_0 ignores it, as ggml does)
    rng = np.random.default_rng(int(gtype))
    codec = get_codec(gtype)
    assert codec.uses_importance == (gtype != GGMLType.Q8_0)
    for case in IMPORTANCE_CASES:
        x = CASES[case]
        imp = rng.lognormal(0, 1, x.shape[1]).astype(np.float32)
        for ref in (True, False):
            got = quantize(x, gtype, importance=imp, reference=ref)
            assert_same_bytes(got, ggml_quantize(gtype, x, imp), codec.type_size,
                              f"{gtype.name} {case} importance vs ggml", x)
    # long rows: sigma2 is a sequential float32 sum over the whole row
    x = (rng.standard_t(3, (8, 4096)) * 0.02).astype(np.float32)
    imp = rng.lognormal(0, 1, 4096).astype(np.float32)
    assert_same_bytes(quantize(x, gtype, importance=imp), ggml_quantize(gtype, x, imp),
                      codec.type_size, f"{gtype.name} long rows importance vs ggml", x)


@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_importance_of_the_wrong_shape_is_refused(gtype: GGMLType) -> None:
    x = np.ones((2, 64), np.float32)
    with pytest.raises(QuantizationError, match=r"importance must have shape \(64,\)"):
        quantize(x, gtype, importance=np.ones(32, np.float32), name="blk.1.attn_v.weight")


# -- decoding ----------------------------------------------------------------------------------

def _decode_inputs(gtype: GGMLType) -> np.ndarray:
    """Packed bytes: every quantized case, then random bytes (any fp16 scale, NaN included)."""
    codec = get_codec(gtype)
    packed = [ggml_quantize(gtype, x).reshape(-1, codec.type_size) for x in CASES.values()]
    rng = np.random.default_rng(7 + int(gtype))
    packed.append(rng.integers(0, 256, (4096, codec.type_size), dtype=np.uint8))
    return np.concatenate(packed)  # (n_blocks, type_size)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_dequantize_matches_ggml_and_gguf(gtype: GGMLType, path: str) -> None:
    blocks = _decode_inputs(gtype)
    n = blocks.shape[0] * 32
    got = dequantize(blocks, gtype, (n,), reference=(path == "reference"))
    assert_same_floats(got, ggml_dequantize(gtype, blocks, n), 32, f"{gtype.name} {path} vs ggml")
    with np.errstate(all="ignore"):
        want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(int(gtype)))
    assert_same_floats(got, want, 32, f"{gtype.name} {path} vs gguf.quants.dequantize")


# -- float types -------------------------------------------------------------------------------

def _special_floats() -> np.ndarray:
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 1 << 32, 1 << 16, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    edges = np.array([0.0, -0.0, 65504.0, 65519.99, 65520.0, -65520.0, 6.1e-5, 5.96e-8, 2.98e-8,
                      1e-45, 3.4e38, 1.0 + 2**-11, 1.0 + 3 * 2**-11, 1.0 + 2**-8], np.float32)
    return np.concatenate([edges, x])


@pytest.mark.parametrize("gtype", [GGMLType.F16, GGMLType.BF16, GGMLType.F32],
                         ids=lambda t: t.name)
def test_float_types_encode_like_ggml(gtype: GGMLType) -> None:
    x = _special_floats()
    want = ggml_quantize(gtype, x)
    for ref in (True, False):
        got = quantize(x, gtype, reference=ref)
        assert_same_bytes(got, want, type_traits(gtype).type_size, f"{gtype.name} encode")


@pytest.mark.parametrize("gtype", [GGMLType.F16, GGMLType.BF16], ids=lambda t: t.name)
def test_float_types_decode_every_bit_pattern_like_ggml(gtype: GGMLType) -> None:
    # all 65536 patterns, NaNs included (ggml's fp16 decode quiets signalling NaNs)
    bits = np.arange(1 << 16, dtype=np.uint32).astype("<u2")
    got = dequantize(bits.view(np.uint8), gtype, (bits.size,))
    assert_same_floats(got, ggml_dequantize(gtype, bits, bits.size), 1, f"{gtype.name} decode")


def test_fp16_helpers_match_ggml() -> None:
    x = _special_floats()
    assert np.array_equal(nc.f32_to_fp16_bits(x), fp32_to_fp16_bits(x))
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = ggml_dequantize(GGMLType.F16, bits, bits.size)
    assert np.array_equal(nc.FP16_TO_F32.view(np.uint32), want.view(np.uint32))


@njit(cache=True)
def _run_scalar_helpers(x, r, i8, lr, h, small):
    for k in range(x.size):
        r[k] = nc.nb_c_roundf(x[k])
        i8[k] = nc.nb_c_f32_to_i8(x[k])
        lr[k] = nc.nb_c_lroundf(x[k])
        h[k] = nc.nb_f32_to_fp16(x[k])
        if abs(x[k]) < 1e9:
            small[k] = nc.nb_roundf_small(x[k])


def test_numba_scalar_helpers_match_c_semantics() -> None:
    # roundf near halves, casts of huge values / inf / NaN, fp16 rounding of random bit patterns
    rng = np.random.default_rng(11)
    halves = (np.arange(-600, 600) / 2).astype(np.float32)
    near = np.concatenate([np.nextafter(halves, np.float32(np.inf)),
                           np.nextafter(halves, np.float32(-np.inf))])
    bits = rng.integers(0, 1 << 32, 1 << 15, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([halves, near, bits, np.float32([np.inf, -np.inf, np.nan, 3e9, -3e9,
                                                        0.49999997, -0.49999997, 8388609.0])])
    r = np.zeros_like(x)
    i8, lr, small = (np.zeros(x.size, np.int64) for _ in range(3))
    h = np.zeros(x.size, np.uint16)
    _run_scalar_helpers(x, r, i8, lr, h, small)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(r, nc.c_roundf(x), equal_nan=True)
        assert np.array_equal(i8, nc.c_f32_to_i8(x))
        assert np.array_equal(lr, nc.c_lroundf(x))
        ok = np.abs(x) < 1e9
        assert np.array_equal(small[ok], nc.c_roundf(x[ok]).astype(np.int64))
    assert np.array_equal(h, fp32_to_fp16_bits(x))  # NaN -> 0x7E00 | sign, as ggml


# -- edge cases --------------------------------------------------------------------------------

@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
@pytest.mark.parametrize(
    ("values", "index"),
    [
        ({(0, 5): np.nan}, (0, 5)),  # a NaN is refused and its index named
        ({(1, 31): np.inf}, (1, 31)),  # +inf likewise
        ({(1, 0): -np.inf, (1, 3): np.nan}, (1, 0)),  # the first bad value is the one named
    ],
)
def test_non_finite_input_raises_naming_the_index(gtype, values, index) -> None:
    x = np.ones((2, 64), np.float32)
    for at, v in values.items():
        x[at] = v
    for ref in (True, False):
        with pytest.raises(QuantizationError, match=rf"index {index}".replace("(", r"\(")
                           .replace(")", r"\)")):
            quantize(x, gtype, reference=ref, name="blk.0.ffn_up.weight")


@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_edge_shapes(gtype: GGMLType) -> None:
    codec = get_codec(gtype)
    # empty tensors: no rows, and rows of length 0, encode to empty byte arrays and back
    for shape in [(0, 64), (3, 0), (0,)]:
        packed = quantize(np.zeros(shape, np.float32), gtype)
        assert packed.shape == (*shape[:-1], shape[-1] // 32 * codec.type_size)
        assert dequantize(packed, gtype, shape).shape == shape
    # a row length that is not a multiple of 32 is refused with the tensor's name
    with pytest.raises(QuantizationError, match=r"output\.weight: row length 48"):
        quantize(np.zeros((2, 48), np.float32), gtype, name="output.weight")
    # packed data of the wrong size is refused on decode
    with pytest.raises(QuantizationError, match="needs"):
        dequantize(np.zeros(codec.type_size + 1, np.uint8), gtype, (32,))
    # 1-D and 3-D inputs keep their leading shape
    x = np.random.default_rng(0).standard_normal((2, 3, 64)).astype(np.float32)
    assert quantize(x, gtype).shape == (2, 3, 2 * codec.type_size)
    assert np.array_equal(quantize(x[0, 0], gtype), quantize(x, gtype)[0, 0])


@pytest.mark.parametrize("gtype", LEGACY, ids=lambda t: t.name)
def test_read_only_and_strided_inputs(gtype: GGMLType) -> None:
    # memory-mapped weights are read-only; slices are not contiguous
    x = np.random.default_rng(1).standard_normal((8, 128)).astype(np.float32)
    want = quantize(x, gtype)
    ro = x.copy()
    ro.flags.writeable = False
    assert np.array_equal(quantize(ro, gtype), want)
    wide = np.zeros((8, 256), np.float32)
    wide[:, ::2] = x
    assert np.array_equal(quantize(wide[:, ::2], gtype), want)
    assert np.array_equal(quantize(np.asfortranarray(x), gtype), want)
    assert np.array_equal(quantize(x.astype(np.float64), gtype), want)
    packed = want.copy()
    packed.flags.writeable = False
    assert np.array_equal(dequantize(packed, gtype, x.shape), dequantize(want, gtype, x.shape))


# -- real weights ------------------------------------------------------------------------------

def test_real_file_tensors_requantize_to_llama_cpp_bytes() -> None:
    # SmolLM2-135M as shipped (written by llama.cpp): decoding a Q4_1 / Q8_0 tensor and encoding
    # it again gives llama.cpp's bytes back, so real weights sit in the stable regime
    checked: dict[str, int] = {}
    with gguflite.open(default_model_path()) as f:
        for name, ti in f.tensors.items():
            if ti.type not in (GGMLType.Q4_1, GGMLType.Q8_0):
                continue
            if ti.type == GGMLType.Q4_1 and not name.startswith(("blk.0.", "blk.29.")):
                continue  # two layers keep the test fast; all 210 tensors pass the same way
            codec = get_codec(ti.type)
            again = quantize(f.dequantize(name), ti.type)
            assert_same_bytes(again, f.array(name), codec.type_size, f"{name} requantized")
            checked[ti.type.name] = checked.get(ti.type.name, 0) + 1
    assert checked.get("Q4_1", 0) >= 10 and checked.get("Q8_0", 0) >= 1, checked
