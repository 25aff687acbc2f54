"""The writer: golden bytes, atomicity, explicit types, determinism."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

import gguflite
from gguflite import GGMLType, GGUFWriter, WriterError
from gguflite import GGUFValueType as T
from gguflite.cli.dump import dump_dict

VECTORS_DIR = Path(__file__).resolve().parents[1] / "spec" / "vectors"


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_vectors", module)
    spec.loader.exec_module(module)
    return module


make_vectors = _load_make_vectors()
VECTOR_NAMES = sorted(make_vectors.VECTORS)


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_golden_bytes(tmp_path, name):
    """Writing a vector's declarations again yields the committed bytes exactly."""
    out = make_vectors.write_vector(name, tmp_path / f"{name}.gguf")
    golden = (VECTORS_DIR / f"{name}.gguf").read_bytes()
    got = out.read_bytes()
    if got != golden:
        first = next((i for i, (a, b) in enumerate(zip(got, golden, strict=False)) if a != b),
                     min(len(got), len(golden)))
        pytest.fail(f"{name}: differs from the golden file at byte {first} "
                    f"(sizes {len(got)} vs {len(golden)})")


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_golden_dump(name):
    """Reading a vector yields its committed JSON dump (every key, type, tensor and hash)."""
    expected = json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    with gguflite.open(VECTORS_DIR / f"{name}.gguf") as f:
        got = json.loads(json.dumps(dump_dict(f, full=True, hashes=True)))
    assert got == expected


def _declare(w: GGUFWriter) -> None:
    w.add("general.architecture", "llama", T.STRING)
    w.add("x.vals", [1.5, 2.5], T.ARRAY, T.FLOAT32)
    w.add_tensor("a", shape=(3, 32), type=GGMLType.F16, data=np.ones((3, 32), np.float16))


def test_deterministic(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    for p in (a, b):
        with GGUFWriter(p) as w:
            _declare(w)
    assert a.read_bytes() == b.read_bytes()


def test_file_mode_follows_umask(tmp_path):
    path = tmp_path / "m.gguf"
    with GGUFWriter(path) as w:
        _declare(w)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


class Boom(RuntimeError):
    pass


def _failing_producer():
    raise Boom("producer failed mid-write")


def test_exception_in_producer_leaves_no_file(tmp_path):
    path = tmp_path / "out.gguf"
    with pytest.raises(Boom):
        with GGUFWriter(path) as w:
            _declare(w)
            w.add_tensor("b", shape=(4,), type=GGMLType.F32, data=_failing_producer)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind


def test_exception_keeps_existing_file(tmp_path):
    path = tmp_path / "out.gguf"
    with GGUFWriter(path) as w:
        _declare(w)
    before = path.read_bytes()
    with pytest.raises(Boom):
        with GGUFWriter(path) as w:
            w.add("general.architecture", "other", T.STRING)
            w.add_tensor("big", shape=(1024,), type=GGMLType.F32,
                         data=lambda: np.zeros(1024, np.float32))
            w.add_tensor("bad", shape=(4,), type=GGMLType.F32, data=_failing_producer)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.gguf"]


def test_exception_in_with_body_writes_nothing(tmp_path):
    path = tmp_path / "out.gguf"
    with pytest.raises(Boom):
        with GGUFWriter(path) as w:
            _declare(w)
            raise Boom("user code failed")
    assert list(tmp_path.iterdir()) == []


def test_producer_returning_wrong_size_is_a_writer_error(tmp_path):
    path = tmp_path / "out.gguf"
    with pytest.raises(WriterError, match="needs 16 bytes"):
        with GGUFWriter(path) as w:
            w.add_tensor("t", shape=(4,), type=GGMLType.F32,
                         data=lambda: np.zeros(5, np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_producers_called_one_at_a_time_in_order(tmp_path):
    calls: list[str] = []

    def producer(name):
        def make():
            calls.append(name)
            return np.zeros(8, np.float32)
        return make

    with GGUFWriter(tmp_path / "o.gguf") as w:
        for name in ("c", "a", "b"):
            w.add_tensor(name, shape=(8,), type=GGMLType.F32, data=producer(name))
        assert calls == []  # nothing produced before the write
    assert calls == ["c", "a", "b"]


# (id, key, value, type, element type): each must be refused with a WriterError
BAD_VALUES = [
    # 256 does not fit UINT8
    ("u8_overflow", 256, T.UINT8, None),
    # -1 does not fit UINT32
    ("u32_negative", -1, T.UINT32, None),
    # 2**63 does not fit INT64
    ("i64_overflow", 1 << 63, T.INT64, None),
    # bool is not an integer here (no guessing)
    ("bool_as_int", True, T.UINT32, None),
    # a float for an integer type
    ("float_as_int", 1.0, T.INT32, None),
    # an int for a bool
    ("int_as_bool", 1, T.BOOL, None),
    # a number for a string
    ("int_as_string", 5, T.STRING, None),
    # a value beyond FLOAT32's range
    ("f32_overflow", 1e39, T.FLOAT32, None),
    # a string for a float
    ("str_as_float", "1.0", T.FLOAT32, None),
    # an array without an element type
    ("array_no_etype", [1, 2], T.ARRAY, None),
    # arrays of arrays
    ("array_of_arrays", [[1]], T.ARRAY, T.ARRAY),
    # an array element out of range
    ("array_u8_overflow", [1, 300], T.ARRAY, T.UINT8),
    # huge Python ints in an INT64 array
    ("array_i64_overflow", [0, 1 << 63], T.ARRAY, T.INT64),
    # bools in an integer array
    ("array_bool_in_ints", [True, 2], T.ARRAY, T.UINT32),
    # a non-string in a string array
    ("array_int_in_strings", ["a", 1], T.ARRAY, T.STRING),
    # a string is not an array
    ("string_as_array", "abc", T.ARRAY, T.STRING),
    # a 2-D array
    ("array_2d", np.zeros((2, 2), np.int32), T.ARRAY, T.INT32),
    # element_type on a scalar
    ("etype_on_scalar", 1, T.UINT32, T.UINT32),
    # an unpaired surrogate cannot be UTF-8
    ("surrogate", "\ud800", T.STRING, None),
]


@pytest.mark.parametrize(("case", "value", "vtype", "etype"), BAD_VALUES,
                         ids=[c[0] for c in BAD_VALUES])
def test_value_that_does_not_fit_is_refused(tmp_path, case, value, vtype, etype):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(WriterError):
        w.add("a.key", value, vtype, etype)
    assert w.keys == []


BAD_TENSORS = [
    # a name longer than llama.cpp's 63 bytes
    ("long_name", "n" * 64, (4,), GGMLType.F32, np.zeros(4, np.float32)),
    # a row that is not a whole number of Q8_0 blocks
    ("partial_block", "t", (2, 33), GGMLType.Q8_0, np.zeros(2 * 34, np.uint8)),
    # five dimensions
    ("five_dims", "t", (1, 1, 1, 1, 4), GGMLType.F32, np.zeros(4, np.float32)),
    # float64 data declared F32: no silent conversion
    ("f64_as_f32", "t", (4,), GGMLType.F32, np.zeros(4, np.float64)),
    # big-endian float32
    ("big_endian", "t", (4,), GGMLType.F32, np.zeros(4, ">f4")),
    # too few bytes for a Q4_0 block
    ("short_bytes", "t", (32,), GGMLType.Q4_0, np.zeros(17, np.uint8)),
    # float data for a block type
    ("float_for_q4_0", "t", (32,), GGMLType.Q4_0, np.zeros(32, np.float32)),
    # an unknown type id
    ("unknown_type", "t", (4,), 4, np.zeros(16, np.uint8)),
    # a list is not an array
    ("list_data", "t", (2,), GGMLType.F32, [1.0, 2.0]),
]


@pytest.mark.parametrize(("case", "name", "shape", "ttype", "data"), BAD_TENSORS,
                         ids=[c[0] for c in BAD_TENSORS])
def test_bad_tensor_is_refused(tmp_path, case, name, shape, ttype, data):
    w = GGUFWriter(tmp_path / "x.gguf")
    with pytest.raises(WriterError):
        w.add_tensor(name, shape=shape, type=ttype, data=data)


def test_duplicates_are_refused(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf")
    w.add("a.b", 1, T.UINT8)
    with pytest.raises(WriterError, match="duplicate key"):
        w.add("a.b", 2, T.UINT8)
    w.add_tensor("t", shape=(1,), type=GGMLType.F32, data=np.zeros(1, np.float32))
    with pytest.raises(WriterError, match="duplicate tensor"):
        w.add_tensor("t", shape=(1,), type=GGMLType.F32, data=np.zeros(1, np.float32))


def test_alignment_key_is_owned_by_the_writer(tmp_path):
    w = GGUFWriter(tmp_path / "x.gguf", alignment=64)
    with pytest.raises(WriterError):
        w.add("general.alignment", 32, T.UINT32)
    with pytest.raises(WriterError):
        GGUFWriter(tmp_path / "y.gguf", alignment=48)


def test_writing_over_a_directory_fails_cleanly(tmp_path):
    target = tmp_path / "d.gguf"
    target.mkdir()
    with pytest.raises(WriterError, match="directory"):
        with GGUFWriter(target) as w:
            _declare(w)
    assert [p.name for p in tmp_path.iterdir()] == ["d.gguf"]


def test_add_from_copies_value_and_type(tmp_path):
    src = VECTORS_DIR / "all_value_types.gguf"
    out = tmp_path / "copy.gguf"
    with gguflite.open(src) as f, GGUFWriter(out) as w:
        for key in f.metadata:
            w.add_from(f, key)
    with gguflite.open(src) as f:
        expected = dump_dict(f, full=True)["metadata"]
    with gguflite.open(out) as g:
        assert dump_dict(g, full=True)["metadata"] == expected
    assert out.read_bytes() == src.read_bytes()
