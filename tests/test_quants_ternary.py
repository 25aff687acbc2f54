"""TQ1_0 / TQ2_0 against ggml and the gguf package, and BitNet b1.58 ternarization."""

from __future__ import annotations

import gguf
import gguf.quants
import numpy as np
import pytest
import torch
from ggml_ref import ggml_dequantize, ggml_quantize, ggml_quantize_ref
from quant_cases import CASES, assert_same_bytes, assert_same_floats

from gguflite.constants import GGMLType
from gguflite.errors import QuantizationError
from gguflite.quants import dequantize, get_codec, quantize, types
from gguflite.quants.ternary import is_ternary, ternarize

TERNARY = [GGMLType.TQ1_0, GGMLType.TQ2_0]
PATHS = ["reference", "fast"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("gtype", TERNARY, ids=lambda t: t.name)
def test_quantize_matches_ggml_and_gguf(gtype: GGMLType, case: str, path: str) -> None:
    x = CASES[case]
    codec = get_codec(gtype)
    got = quantize(x, gtype, reference=(path == "reference"))
    assert_same_bytes(got, ggml_quantize(gtype, x), codec.type_size,
                      f"{gtype.name} {case} {path} vs ggml_quantize_chunk", x)
    with np.errstate(all="ignore"):
        want = gguf.quants.quantize(x, gguf.GGMLQuantizationType(int(gtype)))
    assert_same_bytes(got, want, codec.type_size, f"{gtype.name} {case} vs gguf", x)


@pytest.mark.parametrize("gtype", TERNARY, ids=lambda t: t.name)
def test_fast_path_matches_reference_on_more_data(gtype: GGMLType) -> None:
    rng = np.random.default_rng(int(gtype))
    x = (rng.standard_normal((64, 1024)) * rng.lognormal(0, 3, (64, 1))).astype(np.float32)
    x[::3] = np.round(x[::3] / np.abs(x[::3]).max()) * 0.25  # already-ternary rows
    codec = get_codec(gtype)
    assert_same_bytes(quantize(x, gtype), quantize(x, gtype, reference=True), codec.type_size,
                      f"{gtype.name} Numba vs NumPy", x)
    assert np.array_equal(ggml_quantize(gtype, x).reshape(-1), ggml_quantize_ref(gtype, x))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("gtype", TERNARY, ids=lambda t: t.name)
def test_dequantize_matches_ggml_and_gguf(gtype: GGMLType, path: str) -> None:
    codec = get_codec(gtype)
    packed = [ggml_quantize(gtype, x).reshape(-1, codec.type_size) for x in CASES.values()]
    rng = np.random.default_rng(5)
    packed.append(rng.integers(0, 256, (512, codec.type_size), dtype=np.uint8))  # any byte
    blocks = np.concatenate(packed)
    n = blocks.shape[0] * 256
    got = dequantize(blocks, gtype, (n,), reference=(path == "reference"))
    assert_same_floats(got, ggml_dequantize(gtype, blocks, n), 256, f"{gtype.name} vs ggml")
    with np.errstate(all="ignore"):
        want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType(int(gtype)))
    assert_same_floats(got, want, 256, f"{gtype.name} vs gguf.quants.dequantize")


def test_bits_per_weight() -> None:
    bpw = {t.name: t.bits_per_weight for t in types()}
    assert bpw["tq1_0"] == 1.6875 and bpw["tq2_0"] == 2.0625


# -- BitNet b1.58 ------------------------------------------------------------------------------

def bitnet_weight_quant(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58's weight_quant (1bitLLM/bitnet_b1_58 utils), returning (trits, 1/scale)."""
    scale = 1.0 / w.abs().mean().clamp_(min=1e-5)
    return (w * scale).round().clamp_(-1, 1), 1.0 / scale


def test_ternarize_matches_bitnet_reference() -> None:
    w = np.random.default_rng(2).standard_normal((96, 256)).astype(np.float32) * 0.02
    trits, scale = ternarize(w)
    want, want_scale = bitnet_weight_quant(torch.from_numpy(w))
    assert trits.dtype == np.int8 and trits.shape == w.shape
    assert set(np.unique(trits).tolist()) == {-1, 0, 1}
    assert np.array_equal(trits, want.numpy().astype(np.int8))
    assert scale == pytest.approx(float(want_scale), rel=1e-6)


@pytest.mark.parametrize(
    ("w", "want"),
    [
        (np.array([0.5, -0.5, 0.0, 0.5], np.float32), 0.5),  # trits times an fp16 scale
        (np.array([0.5, -0.25, 0.0], np.float32), None),  # two magnitudes: not ternary
        (np.zeros(8, np.float32), 0.0),  # all zero: ternary with any scale, reported as 0.0
        (np.zeros(0, np.float32), 0.0),  # empty likewise
        (np.array([0.1, -0.1], np.float32), None),  # 0.1 is not an fp16 number: TQ would lose it
        (np.array([np.inf, -np.inf], np.float32), None),  # non-finite is never ternary
    ],
)
def test_is_ternary(w: np.ndarray, want: float | None) -> None:
    assert is_ternary(w) == want


def test_is_ternary_without_fp16_requirement() -> None:
    w = np.array([0.1, -0.1, 0.0], np.float32)
    assert is_ternary(w, fp16_exact=False) == pytest.approx(0.1)


@pytest.mark.parametrize("gtype", TERNARY, ids=lambda t: t.name)
@pytest.mark.parametrize("scale", [0.0234375, 1.0, 3.0517578125e-05, 6.0e-08, 1024.0])
def test_ternary_weights_round_trip_exactly(gtype: GGMLType, scale: float) -> None:
    # trits * an fp16 scale (normal, subnormal fp16, large) decode to exactly the same floats
    rng = np.random.default_rng(9)
    s = float(np.float32(np.float16(scale)))
    w = (rng.integers(-1, 2, (4, 512)) * s).astype(np.float32)
    w[0, :256] = 0.0  # an all-zero block
    w[1, :256] = -w[1, :256]
    assert is_ternary(w) == s
    for ref in (True, False):
        back = dequantize(quantize(w, gtype, reference=ref), gtype, w.shape, reference=ref)
        assert np.array_equal(back, w)  # -0.0 comes back as +0.0, which == accepts


def test_ternarize_then_encode_is_lossless_after_fp16_scale() -> None:
    w = np.random.default_rng(4).standard_normal((8, 256)).astype(np.float32)
    trits, scale = ternarize(w)
    assert scale == np.float32(np.abs(w.astype(np.float64)).mean())  # BitNet's absmean
    assert set(np.unique(trits).tolist()) == {-1, 0, 1}
    w3 = trits.astype(np.float32) * np.float32(np.float16(scale))
    assert is_ternary(w3) == float(np.float32(np.float16(scale)))
    for gtype in TERNARY:
        assert np.array_equal(dequantize(quantize(w3, gtype), gtype, w3.shape), w3)


# -- edge cases ------------------------------------------------------------------------------

@pytest.mark.parametrize("gtype", TERNARY, ids=lambda t: t.name)
def test_edge_cases(gtype: GGMLType) -> None:
    codec = get_codec(gtype)
    x = np.ones((2, 512), np.float32)
    x[1, 300] = np.nan
    # a NaN is refused, naming its index, on both paths
    for ref in (True, False):
        with pytest.raises(QuantizationError, match=r"index \(1, 300\)"):
            quantize(x, gtype, reference=ref)
    # row length must be a multiple of 256
    with pytest.raises(QuantizationError, match="row length 128"):
        quantize(np.zeros((4, 128), np.float32), gtype)
    # empty tensors
    assert quantize(np.zeros((0, 256), np.float32), gtype).shape == (0, codec.type_size)
    assert dequantize(np.zeros(0, np.uint8), gtype, (0, 256)).shape == (0, 256)
    # read-only input
    ro = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    ro.flags.writeable = False
    assert np.array_equal(quantize(ro, gtype), ggml_quantize(gtype, ro))


def test_ternarize_refuses_non_finite() -> None:
    w = np.zeros((3, 4), np.float32)
    w[2, 1] = np.inf
    with pytest.raises(QuantizationError, match=r"index \(2, 1\)"):
        ternarize(w, name="blk.3.ffn_down.weight")
