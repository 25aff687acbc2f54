"""Interop both directions with the reference tools, compared key by key and byte by byte.

- files gguflite writes open in gguf-py's GGUFReader and in llama.cpp's own parser
  (``gguf_init_from_file`` in libggml-base) with identical metadata and tensor bytes;
- files written by gguf-py's GGUFWriter, by llama.cpp (the SmolLM2 default model) and
  quantized by llama.cpp (``llama_model_quantize``) open in gguflite identically, and
  validate without a single finding.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
from ggml_ref import LIB_PATH

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite import GGUFValueType as T
from gguflite.default_model import default_model_path
from gguflite.metadata import StringArray
from gguflite.validate import validate

VECTORS_DIR = Path(__file__).resolve().parents[1] / "spec" / "vectors"
VECTORS = sorted(VECTORS_DIR.glob("*.gguf"))


def _norm(value: object) -> object:
    """A comparable Python value: lists for arrays, 'nan' for NaN."""
    if isinstance(value, StringArray):
        return list(value)
    if isinstance(value, np.ndarray):
        return [_norm(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_norm(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _gguf_py_metadata(r: gguf.GGUFReader) -> dict[str, tuple[int, int | None, object]]:
    out = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue  # gguf-py's pseudo-fields for the header counts
        vtype = int(field.types[0])
        # parts: key length, key, value type, then for arrays the element type; read it
        # there because gguf-py leaves it out of ``types`` when the array is empty
        etype = int(field.parts[3][0]) if vtype == T.ARRAY else None
        value = field.contents()
        if vtype == T.BOOL:
            value = bool(value)
        elif etype == T.BOOL:
            value = [bool(v) for v in value]
        out[name] = (vtype, etype, _norm(value))
    return out


def _gguflite_metadata(f: gguflite.GGUFFile) -> dict[str, tuple[int, int | None, object]]:
    md = f.metadata
    out = {}
    for key in md:
        etype = md.element_type(key)
        out[key] = (int(md.value_type(key)), None if etype is None else int(etype),
                    _norm(md[key]))
    return out


def assert_same_file(path: Path) -> None:
    """gguflite and gguf-py agree on every key (value and type) and every tensor."""
    r = gguf.GGUFReader(path)
    with gguflite.open(path) as f:
        assert _gguflite_metadata(f) == _gguf_py_metadata(r)
        assert [t.name for t in r.tensors] == list(f.tensors)
        for t in r.tensors:
            ti = f.tensors[t.name]
            assert tuple(int(d) for d in t.shape) == ti.dims, t.name
            assert int(t.tensor_type) == int(ti.type), t.name
            assert int(t.n_bytes) == ti.nbytes, t.name
            assert int(t.data_offset) == ti.file_offset, t.name
            theirs = np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
            assert np.array_equal(theirs, f.raw(t.name)), t.name


# -- llama.cpp's own parser, through ctypes --------------------------------------------------
libggml = ctypes.CDLL(str(LIB_PATH))  # our own handle: argtypes set here stay here


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


_P, _I64, _SZ = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
_CTYPES = {T.UINT8: ctypes.c_uint8, T.INT8: ctypes.c_int8, T.UINT16: ctypes.c_uint16,
           T.INT16: ctypes.c_int16, T.UINT32: ctypes.c_uint32, T.INT32: ctypes.c_int32,
           T.FLOAT32: ctypes.c_float, T.BOOL: ctypes.c_bool, T.UINT64: ctypes.c_uint64,
           T.INT64: ctypes.c_int64, T.FLOAT64: ctypes.c_double}
_GETTERS = {T.UINT8: "u8", T.INT8: "i8", T.UINT16: "u16", T.INT16: "i16", T.UINT32: "u32",
            T.INT32: "i32", T.FLOAT32: "f32", T.BOOL: "bool", T.UINT64: "u64", T.INT64: "i64",
            T.FLOAT64: "f64"}
for _name, _args, _res in [
    ("gguf_init_from_file", [ctypes.c_char_p, _GGUFInitParams], _P),
    ("gguf_free", [_P], None),
    ("gguf_get_version", [_P], ctypes.c_uint32),
    ("gguf_get_alignment", [_P], _SZ),
    ("gguf_get_data_offset", [_P], _SZ),
    ("gguf_get_n_kv", [_P], _I64),
    ("gguf_get_key", [_P, _I64], ctypes.c_char_p),
    ("gguf_get_kv_type", [_P, _I64], ctypes.c_int),
    ("gguf_get_arr_type", [_P, _I64], ctypes.c_int),
    ("gguf_get_arr_n", [_P, _I64], _SZ),
    ("gguf_get_arr_data", [_P, _I64], _P),
    ("gguf_get_arr_str", [_P, _I64, _SZ], ctypes.c_char_p),
    ("gguf_get_val_str", [_P, _I64], ctypes.c_char_p),
    ("gguf_get_n_tensors", [_P], _I64),
    ("gguf_get_tensor_name", [_P, _I64], ctypes.c_char_p),
    ("gguf_get_tensor_type", [_P, _I64], ctypes.c_int),
    ("gguf_get_tensor_offset", [_P, _I64], _SZ),
    ("gguf_get_tensor_size", [_P, _I64], _SZ),
    ("gguf_get_tensor_ne", [_P, _I64], ctypes.POINTER(ctypes.c_int64)),
] + [(f"gguf_get_val_{g}", [_P, _I64], _CTYPES[t]) for t, g in _GETTERS.items()]:
    getattr(libggml, _name).argtypes = _args
    getattr(libggml, _name).restype = _res


def llama_cpp_parse(path: Path) -> tuple[int, int, int] | None:
    """(n_kv, n_tensors, data offset) as llama.cpp's gguf parser sees the file, or None."""
    ctx = libggml.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
    if not ctx:
        return None
    try:
        return (libggml.gguf_get_n_kv(ctx), libggml.gguf_get_n_tensors(ctx),
                libggml.gguf_get_data_offset(ctx))
    finally:
        libggml.gguf_free(ctx)


def _llama_cpp_value(ctx: int, i: int) -> tuple[int, int | None, object]:
    vtype = T(libggml.gguf_get_kv_type(ctx, i))
    if vtype == T.STRING:
        return vtype, None, libggml.gguf_get_val_str(ctx, i).decode("utf-8")
    if vtype != T.ARRAY:
        return vtype, None, _norm(getattr(libggml, f"gguf_get_val_{_GETTERS[vtype]}")(ctx, i))
    etype = T(libggml.gguf_get_arr_type(ctx, i))
    n = libggml.gguf_get_arr_n(ctx, i)
    if etype == T.STRING:
        return vtype, etype, [libggml.gguf_get_arr_str(ctx, i, j).decode("utf-8")
                              for j in range(n)]
    if n == 0:
        return vtype, etype, []
    c_array = ctypes.cast(libggml.gguf_get_arr_data(ctx, i), ctypes.POINTER(_CTYPES[etype] * n))
    values = np.ctypeslib.as_array(c_array.contents).copy()
    return vtype, etype, _norm(values.astype(bool) if etype == T.BOOL else values)


def assert_same_as_llama_cpp(path: Path) -> None:
    """gguflite and llama.cpp's parser agree on every key (value, type) and tensor (dims, type,
    offset, size); the bytes gguflite maps are the bytes at llama.cpp's offsets."""
    ctx = libggml.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
    assert ctx, f"llama.cpp refuses {path}"
    try:
        with gguflite.open(path) as f, open(path, "rb") as raw_file:
            assert libggml.gguf_get_version(ctx) == f.version
            assert libggml.gguf_get_alignment(ctx) == f.alignment
            theirs = {libggml.gguf_get_key(ctx, i).decode("utf-8"): _llama_cpp_value(ctx, i)
                      for i in range(libggml.gguf_get_n_kv(ctx))}
            assert _gguflite_metadata(f) == theirs
            n_tensors = libggml.gguf_get_n_tensors(ctx)
            assert n_tensors == len(f.tensors)
            data_offset = libggml.gguf_get_data_offset(ctx)
            for i, ti in enumerate(f.tensors.values()):
                assert libggml.gguf_get_tensor_name(ctx, i).decode("utf-8") == ti.name
                ne = libggml.gguf_get_tensor_ne(ctx, i)
                assert tuple(ne[j] for j in range(4)) == ti.dims + (1,) * (4 - len(ti.dims))
                assert libggml.gguf_get_tensor_type(ctx, i) == int(ti.type), ti.name
                assert data_offset + libggml.gguf_get_tensor_offset(ctx, i) == ti.file_offset
                assert libggml.gguf_get_tensor_size(ctx, i) == ti.nbytes, ti.name
                raw_file.seek(ti.file_offset)
                assert raw_file.read(ti.nbytes) == f.raw(ti.name).tobytes(), ti.name
    finally:
        libggml.gguf_free(ctx)


# -- gguflite -> reference readers -----------------------------------------------------------
@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vectors_read_identically_by_gguf_py_and_llama_cpp(path):
    assert_same_file(path)
    assert_same_as_llama_cpp(path)


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vectors_parse_in_llama_cpp(path):
    with gguflite.open(path) as f:
        expected = (len(f.metadata), len(f.tensors), f.data_offset)
    got = llama_cpp_parse(path)
    if not expected[1]:
        got = got and got[:2] + (expected[2],)  # no tensors: llama.cpp does not seek the data
    assert got == expected


# gguf-py sizes Q8_1 blocks 4 + 4 + 32 bytes; ggml (and gguflite) 2 + 2 + 32.
_GGUF_PY_TYPES = {int(t) for t in gguf.GGMLQuantizationType} - {int(GGMLType.Q8_1)}


def _types_file(path: Path, types: list[GGMLType]) -> Path:
    """A tensor of each type in ``types`` (random bytes), alignment 64, assorted metadata."""
    rng = np.random.default_rng(0)
    with GGUFWriter(path, alignment=64) as w:
        w.add("general.architecture", "test", T.STRING)
        w.add("test.tokens", ["ä", "", "b c", "\n"], T.ARRAY, T.STRING)
        w.add("test.ids", np.arange(-3, 3, dtype=np.int64), T.ARRAY, T.INT64)
        w.add("test.flags", [True, False], T.ARRAY, T.BOOL)
        w.add("test.eps", 1e-5, T.FLOAT32)
        w.add("test.f64", -2.5e-300, T.FLOAT64)
        for ttype in types:
            block, size = gguflite.constants.GGML_TYPE_TRAITS[ttype]
            shape = (2, block * 2)
            raw = rng.integers(0, 256, 2 * 2 * size, dtype=np.uint8)
            w.add_tensor(f"t.{ttype.name.lower()}", shape=shape, type=ttype, data=raw)
    return path


def test_every_tensor_type_reads_identically(tmp_path):
    """Every type gguflite knows: sizes and offsets agree with llama.cpp (and gguf-py)."""
    shared = [t for t in GGMLType if int(t) in _GGUF_PY_TYPES]
    path = _types_file(tmp_path / "shared.gguf", shared)
    assert_same_file(path)
    assert_same_as_llama_cpp(path)
    rest = [t for t in GGMLType if int(t) not in _GGUF_PY_TYPES]
    assert_same_as_llama_cpp(_types_file(tmp_path / "rest.gguf", rest))


def test_llama_cpp_refuses_what_validate_calls_an_error(tmp_path):
    """V16 (tensors not packed in order) is an error because llama.cpp refuses it."""
    from gguf_bytes import build, f32s, gstr, kv, tensor_info

    path = tmp_path / "hole.gguf"
    path.write_bytes(build([kv("general.architecture", T.STRING, gstr("test"))],
                           [tensor_info("a", [4], GGMLType.F32, 0),
                            tensor_info("b", [4], GGMLType.F32, 64)],
                           f32s(0, 1, 2, 3) + bytes(16 + 32) + f32s(4, 5, 6, 7) + bytes(16)))
    with gguflite.open(path) as f:  # the reader accepts any aligned, in-bounds offsets
        assert f.array("b").tolist() == [4, 5, 6, 7]
    assert validate(path).rules == {"V16"}
    assert llama_cpp_parse(path) is None


# -- reference writers -> gguflite -----------------------------------------------------------
def test_gguf_py_writer_file_reads_identically(tmp_path):
    path = tmp_path / "ref.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_key_value("test.u8", 200, gguf.GGUFValueType.UINT8)
    w.add_key_value("test.i16", -300, gguf.GGUFValueType.INT16)
    w.add_key_value("test.u64", (1 << 64) - 1, gguf.GGUFValueType.UINT64)
    w.add_key_value("test.f64", 0.1, gguf.GGUFValueType.FLOAT64)
    w.add_key_value("test.flag", True, gguf.GGUFValueType.BOOL)
    w.add_key_value("test.text", "ünïcode ✓", gguf.GGUFValueType.STRING)
    w.add_key_value("test.words", ["x", "", "yz"], gguf.GGUFValueType.ARRAY,
                    gguf.GGUFValueType.STRING)
    w.add_key_value("test.f32s", [0.5, -1.0], gguf.GGUFValueType.ARRAY,
                    gguf.GGUFValueType.FLOAT32)
    w.add_key_value("test.ids", [7, -1], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)
    w.add_tensor("a", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.add_tensor("b", np.arange(64, dtype=np.float16).reshape(2, 32))
    w.add_tensor("q", np.arange(68, dtype=np.uint8).reshape(2, 34), raw_shape=(2, 34),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("i", np.arange(5, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_same_file(path)
    assert_same_as_llama_cpp(path)
    with gguflite.open(path) as f:
        assert f.metadata["general.architecture"] == "llama"
        assert f.tensors["q"].type == GGMLType.Q8_0 and f.tensors["q"].shape == (2, 32)
        assert np.array_equal(f.array("a"), np.arange(12, dtype=np.float32).reshape(3, 4))
    assert validate(path).findings == []


def test_default_model_reads_identically():
    """SmolLM2-135M-Instruct as llama.cpp wrote it: every key, type, tensor and byte."""
    path = default_model_path()
    assert_same_as_llama_cpp(path)
    report = validate(path)
    assert report.findings == [], [str(f) for f in report.findings]


def test_smollm2_q4_k_m_file_reads_identically(smollm2_q4_k_m):
    assert_same_as_llama_cpp(smollm2_q4_k_m)
    with gguflite.open(smollm2_q4_k_m) as f:
        types = {ti.type for ti in f.tensors.values()}
    assert {GGMLType.Q4_K, GGMLType.Q6_K} <= types
    report = validate(smollm2_q4_k_m)
    assert report.findings == [], [str(f) for f in report.findings]


def test_gguflite_rewrite_of_default_model_is_byte_identical(tmp_path):
    """Copying every key (with its type) and tensor through gguflite reproduces llama.cpp's
    bytes exactly: same layout rules, same padding."""
    src = default_model_path()
    out = tmp_path / "copy.gguf"
    with gguflite.open(src) as f, GGUFWriter(out, alignment=f.alignment) as w:
        for key in f.metadata:
            if key != "general.alignment":
                w.add_from(f, key)
        for name, ti in f.tensors.items():
            w.add_tensor(name, shape=ti.shape, type=ti.type, data=f.raw(name))
    assert out.stat().st_size == src.stat().st_size
    with open(src, "rb") as a, open(out, "rb") as b:
        while True:
            x, y = a.read(1 << 24), b.read(1 << 24)
            assert x == y
            if not x:
                break
