"""Hypothesis properties over every registered quantizable codec (``gguflite.quants.types()``).

A codec registered later (the k-quants, gguflite's own types) is covered without editing this
file; it must document ``max_error`` and ``requantize_stable`` (see ``Codec``).

- the round-trip error stays within the codec's documented ``max_error``;
- quantization is deterministic, and the Numba path equals the NumPy reference bit for bit;
- for codecs documented ``requantize_stable``, dequantized values re-quantize to the same bytes
  (for blocks whose scales are nonzero finite fp16 numbers); for those documented unstable, a
  pinned counterexample shows ggml behaves the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from ggml_ref import ggml_dequantize, ggml_quantize
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from gguflite.constants import GGMLType
from gguflite.errors import QuantizationError
from gguflite.quants import dequantize, get_codec, quantize, types

CODECS = [t.name for t in types() if t.can_quantize]
# No shrinking: a failure is reported as drawn (shrinking slow codecs takes minutes).
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


KINDS = ["normal", "uniform", "sparse", "heavy", "constant", "ternary"]


@st.composite
def tensors(draw, name: str, *, well_scaled: bool = False) -> np.ndarray:
    """(rows, blocks * block_size) float32 of a drawn kind, times 2**e, plus an offset.

    Hypothesis draws the structure (kind, shape, exponent, offset, seed); NumPy draws the values,
    which keeps an example to a few milliseconds. ``well_scaled``: no offset, |e| <= 8 and every
    block reaches 1/16 of its scale, so every type's scales are nonzero finite fp16 numbers.
    """
    bs = get_codec(name).block_size
    rows = draw(st.integers(1, 3))
    width = bs * draw(st.integers(1, 2)) if bs > 1 else draw(st.integers(1, 64))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (rows, width)
    if kind == "normal":
        u = rng.standard_normal(shape) / 4
    elif kind == "uniform":
        u = rng.uniform(-1, 1, shape)
    elif kind == "sparse":  # mostly zeros (and some -0.0)
        u = rng.uniform(-1, 1, shape) * (rng.random(shape) < 0.1)
        u[rng.random(shape) < 0.1] = -0.0
    elif kind == "heavy":
        u = rng.standard_t(1.5, shape) / 50
    elif kind == "constant":
        u = np.full(shape, rng.uniform(-1, 1))
    else:  # trits
        u = rng.integers(-1, 2, shape).astype(np.float64)
    u = np.clip(u, -1, 1).astype(np.float32)
    if well_scaled:
        e = draw(st.integers(-8, 8))
        assume((np.abs(u.reshape(-1, bs)).max(axis=1) >= 1 / 16).all())
        return (u * np.float32(2.0**e)).astype(np.float32)
    e = draw(st.integers(-40, 14))  # up to 2**14 + 1000: every scale fits fp16
    offset = draw(st.sampled_from([0.0, 0.0, 1.5, -1000.0]))
    return (u * np.float32(2.0**e) + np.float32(offset)).astype(np.float32)


def _importance(name: str, x: np.ndarray) -> np.ndarray | None:
    if not get_codec(name).uses_importance:
        return None
    return np.random.default_rng(x.shape[1]).uniform(0.1, 2.0, x.shape[1]).astype(np.float32)


def require_documented(name: str):
    """The codec, after checking it documents its bound and stability (fails fast if not)."""
    codec = get_codec(name)
    if codec.requantize_stable is None:
        pytest.fail(f"{name}: document requantize_stable (see gguflite.quants.base.Codec)")
    try:
        bound = codec.max_error(np.zeros((2, codec.block_size), np.float32))
    except NotImplementedError as exc:
        pytest.fail(str(exc))
    assert np.shape(bound) == (2,), f"{name}: max_error must return one bound per block"
    return codec


@pytest.mark.parametrize("name", CODECS)
def test_codec_documents_its_properties(name: str) -> None:
    require_documented(name)


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_error_within_documented_bound(name: str) -> None:
    codec = require_documented(name)

    @SETTINGS
    @given(data=st.data())
    def check(data) -> None:
        _check_round_trip(name, codec, data.draw(tensors(name)))

    check()


def _check_round_trip(name: str, codec, x: np.ndarray) -> None:
    packed = quantize(x, name)
    y = dequantize(packed, name, x.shape)
    blocks = x.reshape(-1, codec.block_size)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(y.astype(np.float64) - x).reshape(blocks.shape).max(axis=1)
    bounds = {"documented": (err, codec.max_error(blocks))}
    if name in INDEPENDENT_BOUNDS:  # the documented bound is circular or loose: check both
        with np.errstate(invalid="ignore", over="ignore"):
            each = np.abs(y.astype(np.float64) - x)  # (rows, width): value by value
        bounds["independent"] = (each, INDEPENDENT_BOUNDS[name](name, x, packed))
    for which, (e, bound) in bounds.items():
        bad = ~(e <= bound) & np.isfinite(bound)  # a NaN error with a finite bound fails
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            b = i // codec.block_size if which == "independent" else i
            pytest.fail(f"{name}: block {b} error {e.flat[i]} > {which} bound {bound.flat[i]}; "
                        f"block {blocks[b][:8].tolist()}...")


# -- bounds that do not come from the code under test -------------------------------------------
# Value by value, (rows, width) float64. Q4_K / Q6_K document a per-block bound computed from
# their own encoder's scales; here each value's sub-block grid comes from libggml's bytes for
# the same input (the encoders are bit-exact, so gguflite's value must sit within half a step
# of ggml's grid). KM documents only twice the tensor's span (a decoder returning zeros would
# pass); here every value must decode to the nearest point of its own block's grid, read from
# the stored row by the spec (spec/extensions-km.md), not by km.py.
def _grid_error(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Per value: dist(x, [lo, hi]) + step / 2 of its sub-block, plus float32 rounding of the
    decoded value. x (nb, n_sub, k) float64; lo, hi, step (nb, n_sub). Returns x's shape, inf
    in blocks whose grid is not finite."""
    with np.errstate(invalid="ignore", over="ignore"):
        lo3, hi3, st3 = lo[..., None], hi[..., None], step[..., None]
        dist = np.maximum(lo3 - x, 0) + np.maximum(x - hi3, 0)
        e = dist + st3 / 2 + 2.0**-21 * (np.abs(x) + np.abs(lo3) + np.abs(hi3))
        finite = np.isfinite(lo).all(axis=1) & np.isfinite(hi).all(axis=1)
        return np.where(finite[:, None, None], e, np.inf)


def _f16(raw: np.ndarray) -> np.ndarray:
    """(n, 2) uint8 little-endian fp16 -> (n,) float64."""
    return np.ascontiguousarray(raw).view("<f2")[:, 0].astype(np.float64)


def _q4_k_ggml_bound(_name: str, x: np.ndarray, _packed: np.ndarray) -> np.ndarray:
    # block_q4_K (144 bytes): d fp16 | dmin fp16 | scales[12] (6-bit sc, m) | qs[128]
    # sub-block j of 32: y = d * sc_j * q - dmin * m_j, q in 0..15 (ggml's get_scale_min_k4)
    g = ggml_quantize(int(GGMLType.Q4_K), x).reshape(-1, 144).astype(np.int64)
    q = g[:, 4:16]
    sc = np.concatenate([q[:, 0:4] & 63, (q[:, 8:12] & 15) | ((q[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([q[:, 4:8] & 63, (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)], axis=1)
    d, dmin = _f16(g[:, 0:2].astype(np.uint8)), _f16(g[:, 2:4].astype(np.uint8))
    step = d[:, None] * sc  # (nb, 8)
    lo = -dmin[:, None] * mn
    bound = _grid_error(x.astype(np.float64).reshape(-1, 8, 32), lo, lo + 15 * step, step)
    return bound.reshape(x.shape)


def _q6_k_ggml_bound(_name: str, x: np.ndarray, _packed: np.ndarray) -> np.ndarray:
    # block_q6_K (210 bytes): ql[128] | qh[64] | scales int8[16] | d fp16
    # sub-block j of 16: y = d * sc_j * (q - 32), q in 0..63
    g = ggml_quantize(int(GGMLType.Q6_K), x).reshape(-1, 210)
    sc = np.ascontiguousarray(g[:, 192:208]).view(np.int8).astype(np.float64)  # (nb, 16)
    step = _f16(g[:, 208:210])[:, None] * sc  # signed
    lo, hi = np.minimum(-32 * step, 31 * step), np.maximum(-32 * step, 31 * step)
    return _grid_error(x.astype(np.float64).reshape(-1, 16, 16), lo, hi, np.abs(step)).reshape(
        x.shape)


def _km_nearest_bound(name: str, x: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """Per value: the distance to the nearest point of its block's grid
    ``(d * s_b) * cb[k] - dmin * m_b``, plus float32 rounding."""
    rows, cols = x.shape
    bits = {"km2": 2, "km3": 3, "km4": 4}[name]
    k, nc = 1 << bits, -(-cols // 64)
    raw = packed.reshape(rows, -1)
    d, dmin = _f16(raw[:, 0:2]), _f16(raw[:, 2:4])  # (rows,)
    cb = raw[:, 4:4 + k].astype(np.float64)  # (rows, K)
    chunks = raw[:, 4 + k:].reshape(rows, nc, 3 + 8 * bits).astype(np.int64)
    v = chunks[..., 0] | chunks[..., 1] << 8 | chunks[..., 2] << 16  # s0 | m0 | s1 | m1 (6 bits)
    blk = np.arange(cols) // 32  # (cols,): each column's block
    s = np.stack([v & 63, v >> 12 & 63], axis=2).reshape(rows, 2 * nc)[:, blk]  # (rows, cols)
    m = np.stack([v >> 6 & 63, v >> 18 & 63], axis=2).reshape(rows, 2 * nc)[:, blk]
    a, b = d[:, None] * s, dmin[:, None] * m  # (rows, cols)
    grid = a[..., None] * cb[:, None, :] - b[..., None]  # (rows, cols, K)
    xd = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.abs(grid - xd[..., None]).min(axis=2)
        return e + 2.0**-21 * (np.abs(xd) + np.abs(a) * 127 + np.abs(b))


INDEPENDENT_BOUNDS = {"q4_k": _q4_k_ggml_bound, "q6_k": _q6_k_ggml_bound,
                      "km2": _km_nearest_bound, "km3": _km_nearest_bound,
                      "km4": _km_nearest_bound}


@pytest.mark.parametrize("name", CODECS)
def test_deterministic_and_fast_equals_reference(name: str) -> None:
    @SETTINGS
    @given(data=st.data())
    def check(data) -> None:
        _check_deterministic(name, data.draw(tensors(name)))

    check()


def _units(name: str, packed: np.ndarray, n_per_row: int) -> np.ndarray:
    """Packed bytes as (units, bytes): blocks, or whole rows for row codecs (KM: a codebook per
    row, so a row's bytes are not a whole number of blocks)."""
    codec = get_codec(name)
    per_row = codec.row_nbytes(n_per_row)
    if per_row != n_per_row // codec.block_size * codec.type_size:
        return packed.reshape(-1, per_row)
    return packed.reshape(-1, codec.type_size)


def _check_deterministic(name: str, x: np.ndarray) -> None:
    imp = _importance(name, x)
    a = quantize(x, name, importance=imp)
    assert np.array_equal(a, quantize(x.copy(), name, importance=imp))
    ref = quantize(x, name, importance=imp, reference=True)
    n = x.shape[-1]
    bad = np.flatnonzero((_units(name, a, n) != _units(name, ref, n)).any(axis=1))
    assert bad.size == 0, f"{name}: Numba and NumPy differ in block {bad[0]}"
    y_fast = dequantize(a, name, x.shape)
    y_ref = dequantize(a, name, x.shape, reference=True)
    assert np.array_equal(y_fast.view(np.uint32), y_ref.view(np.uint32))


STABLE = [n for n in CODECS if get_codec(n).requantize_stable]
UNSTABLE = [n for n in CODECS if get_codec(n).requantize_stable is False]


@pytest.mark.parametrize("name", STABLE)
def test_grid_values_requantize_to_the_same_bytes(name: str) -> None:
    @SETTINGS
    @given(data=st.data())
    def check(data) -> None:
        _check_requantize(name, data.draw(tensors(name, well_scaled=True)))

    check()


def _check_requantize(name: str, x: np.ndarray) -> None:
    packed = quantize(x, name)
    again = quantize(dequantize(packed, name, x.shape), name)
    n = x.shape[-1]
    bad = np.flatnonzero((_units(name, packed, n) != _units(name, again, n)).any(axis=1))
    assert bad.size == 0, f"{name}: block {bad[0]} changes when re-quantized"


# Pinned counterexamples for the types documented unstable: blocks whose range (~1e-6) is tiny
# next to their magnitude (up to 8). ggml itself gives different bytes when re-quantizing its
# own output; so does KM (gguflite's own type: its start on decoded values is a uniform grid).
def near_constant_blocks(n_values: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.uniform(-8, 8, (n_values // 32, 1))
    return (base + rng.standard_normal((n_values // 32, 32)) * 1e-6).astype(np.float32)


# Q3_K's symmetric levels keep near-constant blocks stable; about half of Gaussian blocks change.
GAUSSIAN_COUNTEREXAMPLE = {"q3_k"}


@pytest.mark.parametrize("name", UNSTABLE)
def test_documented_instability_is_ggml_behaviour(name: str) -> None:
    codec = get_codec(name)
    n = codec.block_size * -(-2048 // codec.block_size)  # whole blocks, at least 2048 values
    x = near_constant_blocks(n).reshape(1, n)
    if name in GAUSSIAN_COUNTEREXAMPLE:
        x = np.random.default_rng(0).standard_normal((1, n)).astype(np.float32)
    packed = quantize(x, name)
    again = quantize(dequantize(packed, name, x.shape), name)
    assert not np.array_equal(packed, again), f"{name} is stable here: update requantize_stable"
    if codec.ggml_type is not None:
        g1 = ggml_quantize(codec.ggml_type, x)
        g2 = ggml_quantize(codec.ggml_type, ggml_dequantize(codec.ggml_type, g1, x.size))
        assert np.array_equal(g1, packed) and np.array_equal(g2, again)


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_naming_its_index(name: str, bad: float) -> None:
    # every codec, both paths: the error names the tensor and the first bad index
    bs = get_codec(name).block_size
    x = np.linspace(-1, 1, 2 * 4 * bs, dtype=np.float32).reshape(2, 4 * bs)
    x[1, bs + 1] = bad
    for ref in (False, True):
        with pytest.raises(QuantizationError, match=rf"blk\.7\.attn_k\.weight.*\(1, {bs + 1}\)"):
            quantize(x, name, reference=ref, name="blk.7.attn_k.weight")
