"""Hypothesis round-trips: whatever the writer accepts, the reader returns unchanged, with its
declared type, for every value type (arrays, unicode, empty arrays, extreme ints and floats)
and random tensors of several types."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite import GGUFValueType as T
from gguflite.constants import GGML_TYPE_TRAITS, INTEGER_RANGES

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

_texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


def _ints(vtype: T) -> st.SearchStrategy[int]:
    lo, hi = INTEGER_RANGES[vtype]
    return st.one_of(st.sampled_from([lo, hi, 0]), st.integers(lo, hi))


_f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
_f64 = st.floats(allow_nan=True, allow_infinity=True)


def _scalar_values(vtype: T) -> st.SearchStrategy:
    if vtype in INTEGER_RANGES:
        return _ints(vtype)
    return {T.FLOAT32: _f32, T.FLOAT64: _f64, T.BOOL: st.booleans(), T.STRING: _texts}[vtype]


_SCALARS = [t for t in T if t != T.ARRAY]


@st.composite
def metadata_items(draw) -> tuple[T, object, T | None]:
    vtype = draw(st.sampled_from(list(T)))
    if vtype != T.ARRAY:
        return vtype, draw(_scalar_values(vtype)), None
    etype = draw(st.sampled_from(_SCALARS))
    values = draw(st.lists(_scalar_values(etype), max_size=12))
    return vtype, values, etype


def _same(a: object, b: object) -> bool:
    """Equality where NaN equals NaN and -0.0 differs from 0.0."""
    if isinstance(a, float) or isinstance(b, float):
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return fa == fb and math.copysign(1, fa) == math.copysign(1, fb)
    return a == b and type(a) is type(b)


def _check_value(got: object, vtype: T, want: object, etype: T | None) -> None:
    if vtype == T.ARRAY:
        got_list = list(got)
        assert len(got_list) == len(want)
        for g, w in zip(got_list, want, strict=True):
            if etype == T.FLOAT32:
                w = float(np.float32(w))
            g = g.item() if isinstance(g, np.generic) else g
            assert _same(g, w), (g, w)
    else:
        if vtype == T.FLOAT32:
            want = float(np.float32(want))
        assert _same(got, want), (got, want)


@SETTINGS
@given(items=st.lists(metadata_items(), max_size=8), alignment=st.sampled_from([1, 8, 32, 64]))
def test_metadata_round_trip(items, alignment):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.gguf"
        with GGUFWriter(path, alignment=alignment) as w:
            for i, (vtype, value, etype) in enumerate(items):
                w.add(f"k.{i}", value, vtype, etype)
        with gguflite.open(path) as f:
            n_extra = 1 if alignment != 32 else 0  # general.alignment
            assert len(f.metadata) == len(items) + n_extra
            assert f.alignment == alignment
            for i, (vtype, value, etype) in enumerate(items):
                key = f"k.{i}"
                assert f.metadata.value_type(key) == vtype
                assert f.metadata.element_type(key) == etype
                _check_value(f.metadata[key], vtype, value, etype)


_TENSOR_TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.I8, GGMLType.I32,
                 GGMLType.F64, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.IQ4_NL]


@st.composite
def tensors(draw) -> tuple[GGMLType, tuple[int, ...], np.ndarray]:
    ttype = draw(st.sampled_from(_TENSOR_TYPES))
    block, size = GGML_TYPE_TRAITS[ttype]
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(0, 3), min_size=ndim - 1, max_size=ndim - 1)))
    shape += (block * draw(st.integers(0 if ndim > 1 else 1, 3)),)
    nbytes = math.prod(shape) // block * size
    raw = np.frombuffer(draw(st.binary(min_size=nbytes, max_size=nbytes)), np.uint8)
    return ttype, shape, raw


@SETTINGS
@given(specs=st.lists(tensors(), min_size=1, max_size=5), alignment=st.sampled_from([8, 32, 256]))
def test_tensor_round_trip(specs, alignment):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.gguf"
        with GGUFWriter(path, alignment=alignment) as w:
            w.add("general.architecture", "test", T.STRING)
            for i, (ttype, shape, raw) in enumerate(specs):
                w.add_tensor(f"t{i}", shape=shape, type=ttype, data=raw)
        with gguflite.open(path) as f:
            assert list(f.tensors) == [f"t{i}" for i in range(len(specs))]
            for i, (ttype, shape, raw) in enumerate(specs):
                ti = f.tensors[f"t{i}"]
                assert (ti.type, ti.shape, ti.nbytes) == (ttype, shape, raw.size)
                assert ti.file_offset % alignment == 0
                assert f.raw(ti.name).tobytes() == raw.tobytes()
                view = f.array(ti.name)
                assert not view.flags.writeable
                assert view.tobytes() == raw.tobytes()
        from gguflite.validate import validate

        assert validate(path).findings == []


def test_native_arrays_have_the_declared_dtype(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with GGUFWriter(tmp_path / "a.gguf") as w:
        w.add_tensor("x", shape=x.shape, type=GGMLType.F32, data=x)
        w.add_tensor("h", shape=(4,), type=GGMLType.F16, data=x[0].astype(np.float16))
        w.add_tensor("b", shape=(2,), type=GGMLType.BF16, data=np.array([1, 2], np.uint16))
    with gguflite.open(tmp_path / "a.gguf") as f:
        assert f.array("x").dtype == np.float32 and np.array_equal(f.array("x"), x)
        assert f.array("h").dtype == np.float16
        assert f.array("b").dtype == np.uint16
        assert np.array_equal(f.dequantize("x"), x)
