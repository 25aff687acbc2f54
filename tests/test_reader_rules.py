"""Every structural rule (V1-V15) has a malformed file, built here byte by byte.

Each case checks the exception class and the rule number the reader reports; the validator
must report the same rule (tests/test_validate_rules.py reuses CASES).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gguf_bytes import array, build, f32s, gstr, kv, one_f32_tensor, scalar, tensor_info, u32, u64

import gguflite
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.errors import (
    BadMagicError,
    EndiannessError,
    FormatError,
    LimitError,
    MetadataError,
    TensorInfoError,
    TruncatedError,
    UnsupportedVersionError,
)

F32 = GGMLType.F32
_ARCH = kv("general.architecture", T.STRING, gstr("test"))

# (id, rule, exception, bytes)
CASES: list[tuple[str, str, type[FormatError], Callable[[], bytes]]] = [
    # not GGUF at all
    ("bad_magic", "V1", BadMagicError, lambda: build(magic=b"GGUX")),
    # a GGUF file starts with 4 bytes of magic: an empty file is truncated
    ("empty_file", "V3", TruncatedError, lambda: b""),
    # GGUFv1 (32-bit counts) is obsolete
    ("version_1", "V2", UnsupportedVersionError, lambda: build(version=1)),
    # a future version
    ("version_4", "V2", UnsupportedVersionError, lambda: build(version=4)),
    # a big-endian v3 file reads as 0x03000000
    ("big_endian", "V2", EndiannessError, lambda: build(version=0x03000000)),
    # the file ends inside the header counts
    ("cut_in_header", "V3", TruncatedError, lambda: build()[:10]),
    # more keys declared than the bytes could hold
    ("huge_n_kv", "V3", TruncatedError, lambda: build(n_kv=1 << 63)),
    # more tensors declared than the bytes could hold
    ("huge_n_tensors", "V3", TruncatedError, lambda: build(n_tensors=(1 << 64) - 1)),
    # a key count larger than the keys present
    ("n_kv_too_large", "V3", TruncatedError, lambda: build([_ARCH], n_kv=2, alignment=1)),
    # a string value whose length runs past the end
    ("string_past_end", "V3", TruncatedError,
     lambda: build([kv("a.b", T.STRING, gstr("abc", length=100))])),
    # a numeric array whose count runs past the end
    ("array_past_end", "V3", TruncatedError,
     lambda: build([kv("a.b", T.ARRAY, array(T.UINT32, [1, 2], count=1000))])),
    # a string array whose last element runs past the end
    ("string_array_past_end", "V3", TruncatedError,
     lambda: build([kv("a.b", T.ARRAY, u32(T.STRING) + u64(2) + gstr("x") + gstr("y", 50))])),
    # a tensor info cut in the middle of its dims
    ("cut_in_tensor_info", "V3", TruncatedError,
     lambda: build([], [tensor_info("t", [4, 4], F32, 0)])[:24 + 8 + 1 + 4 + 8 + 3]),
    # an empty key
    ("empty_key", "V4", MetadataError, lambda: build([kv("", T.UINT8, scalar(T.UINT8, 1))])),
    # a key that is not UTF-8
    ("key_not_utf8", "V4", MetadataError,
     lambda: build([kv(b"a.\xff", T.UINT8, scalar(T.UINT8, 1))])),
    # the same key twice
    ("duplicate_key", "V4", MetadataError, lambda: build([_ARCH, _ARCH])),
    # a key longer than 65535 bytes
    ("key_too_long", "V4", LimitError,
     lambda: build([kv("k" * 65536, T.UINT8, scalar(T.UINT8, 1))])),
    # value type 13 does not exist
    ("unknown_value_type", "V5", MetadataError, lambda: build([kv("a.b", 13, u32(0))])),
    # arrays of arrays (llama.cpp refuses them)
    ("array_of_arrays", "V5", MetadataError,
     lambda: build([kv("a.b", T.ARRAY, u32(T.ARRAY) + u64(1) + array(T.UINT8, [1]))])),
    # an array whose element type does not exist
    ("unknown_element_type", "V5", MetadataError,
     lambda: build([kv("a.b", T.ARRAY, array(77, [], count=0))])),
    # a string value that is not UTF-8
    ("string_not_utf8", "V6", MetadataError,
     lambda: build([kv("a.b", T.STRING, gstr(b"ok\xc3("))])),
    # a string declared longer than the 1 GiB limit
    ("string_over_limit", "V6", LimitError,
     lambda: build([kv("a.b", T.STRING, u64(1 << 31) + b"x" * 8)])),
    # a bool byte of 2
    ("bool_2", "V7", MetadataError, lambda: build([kv("a.b", T.BOOL, b"\x02")])),
    # a bool array element of 255
    ("bool_array_255", "V7", MetadataError,
     lambda: build([kv("a.b", T.ARRAY, u32(T.BOOL) + u64(3) + b"\x01\x00\xff")])),
    # general.alignment must be UINT32
    ("alignment_u64", "V8", MetadataError,
     lambda: build([kv("general.alignment", T.UINT64, u64(32))])),
    # general.alignment 0
    ("alignment_0", "V8", MetadataError,
     lambda: build([kv("general.alignment", T.UINT32, u32(0))])),
    # general.alignment not a power of two
    ("alignment_48", "V8", MetadataError,
     lambda: build([kv("general.alignment", T.UINT32, u32(48))])),
    # an empty tensor name
    ("empty_tensor_name", "V9", TensorInfoError,
     lambda: build([], [tensor_info("", [4], F32, 0)], f32s(0, 1, 2, 3))),
    # a tensor name that is not UTF-8
    ("tensor_name_not_utf8", "V9", TensorInfoError,
     lambda: build([], [tensor_info(b"\xfe", [4], F32, 0)], f32s(0, 1, 2, 3))),
    # the same tensor name twice
    ("duplicate_tensor", "V9", TensorInfoError,
     lambda: build([], [tensor_info("t", [4], F32, 0), tensor_info("t", [4], F32, 32)],
                   f32s(0, 1, 2, 3) * 2 + bytes(32))),
    # a tensor name over the 65535-byte string limit
    ("tensor_name_over_limit", "V9", LimitError,
     lambda: build([], [tensor_info("n" * 65536, [4], F32, 0)], f32s(0, 1, 2, 3))),
    # five dimensions (GGML_MAX_DIMS is 4)
    ("five_dims", "V10", TensorInfoError,
     lambda: build([], [tensor_info("t", [1, 1, 1, 1, 4], F32, 0)], f32s(0, 1, 2, 3))),
    # a dimension of 2**63 (negative as llama.cpp's int64)
    ("dim_2_63", "V11", TensorInfoError,
     lambda: build([], [tensor_info("t", [1 << 63], F32, 0)], bytes(32))),
    # dims whose product overflows int64
    ("elements_overflow", "V11", TensorInfoError,
     lambda: build([], [tensor_info("t", [1 << 32, 1 << 32], F32, 0)], bytes(32))),
    # type 4 (Q4_2) was removed from ggml
    ("retired_type_4", "V12", TensorInfoError,
     lambda: build([], [tensor_info("t", [32], 4, 0)], bytes(32))),
    # type 1000 never existed
    ("unknown_type", "V12", TensorInfoError,
     lambda: build([], [tensor_info("t", [32], 1000, 0)], bytes(32))),
    # a Q4_0 row of 31 elements (block size 32)
    ("row_not_multiple_of_block", "V13", TensorInfoError,
     lambda: build([], [tensor_info("t", [31, 2], GGMLType.Q4_0, 0)], bytes(64))),
    # a Q4_K row of 32 elements (block size 256)
    ("q4_k_row_32", "V13", TensorInfoError,
     lambda: build([], [tensor_info("t", [32], GGMLType.Q4_K, 0)], bytes(160))),
    # offset 16 with the default alignment 32
    ("misaligned_offset", "V14", TensorInfoError,
     lambda: build([], [tensor_info("t", [4], F32, 16)], bytes(64))),
    # offset 8 with general.alignment 16... is aligned to 8 only
    ("misaligned_custom_alignment", "V14", TensorInfoError,
     lambda: build([kv("general.alignment", T.UINT32, u32(16))],
                   [tensor_info("t", [2], F32, 8)], bytes(32), alignment=16)),
    # the data of the only tensor is cut short
    ("data_truncated", "V15", TensorInfoError, lambda: one_f32_tensor(n=16)[:-40]),
    # an offset beyond the end of the file
    ("offset_past_end", "V15", TensorInfoError,
     lambda: build([], [tensor_info("t", [4], F32, 1 << 40)], f32s(0, 1, 2, 3))),
    # a tensor whose size in bytes runs past the end although its offset is inside
    ("size_past_end", "V15", TensorInfoError,
     lambda: build([], [tensor_info("t", [1 << 40], F32, 0)], bytes(64))),
    # tensors declared, but the file ends before the aligned start of the data section
    ("cut_in_data_padding", "V3", TruncatedError,
     lambda: build([], [tensor_info("t", [0], F32, 0)])[:-3]),
]


@pytest.mark.parametrize(("case", "rule", "exc", "make"), CASES, ids=[c[0] for c in CASES])
def test_reader_rule(tmp_path, case, rule, exc, make):
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(make())
    with pytest.raises(exc) as info:
        gguflite.open(path)
    assert info.value.rule == rule, str(info.value)
    assert f"[{rule}]" in str(info.value)
    assert isinstance(info.value, ValueError)  # FormatError is a ValueError


def test_valid_baseline_opens(tmp_path):
    """The builder's valid file opens: the cases above fail for their one defect only."""
    path = tmp_path / "ok.gguf"
    path.write_bytes(one_f32_tensor(kvs=[_ARCH]))
    with gguflite.open(path) as f:
        assert f.metadata["general.architecture"] == "test"
        assert f.array("t").tolist() == [0.0, 1.0, 2.0, 3.0]


def test_lazy_string_array_element_not_utf8(tmp_path):
    """String arrays decode lazily: a bad element raises V6 when read (validate reports it)."""
    path = tmp_path / "lazy.gguf"
    path.write_bytes(build([kv("a.b", T.ARRAY, u32(T.STRING) + u64(2) + gstr("ok") +
                               gstr(b"\xc3"))]))
    with gguflite.open(path) as f:
        arr = f.metadata["a.b"]
        assert arr[0] == "ok"
        with pytest.raises(MetadataError) as info:
            arr[1]
        assert info.value.rule == "V6"


def test_error_names_offset_and_key(tmp_path):
    path = tmp_path / "bool.gguf"
    path.write_bytes(build([kv("x.flag", T.BOOL, b"\x07")]))
    with pytest.raises(MetadataError) as info:
        gguflite.open(path)
    assert "'x.flag'" in str(info.value)
    assert info.value.offset == 24 + 8 + 6 + 4  # header, key length, key, value type
