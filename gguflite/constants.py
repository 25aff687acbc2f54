"""Constants of the gguflite v1 format (a strict profile of GGUF v3).

This module mirrors spec/gguflite-v1.md one-to-one: magic, versions, value types, tensor types
and the (block size, bytes per block) table. Byte counts are written as arithmetic so the table
documents each block layout.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

GGUF_MAGIC = b"GGUF"  # bytes 0..3 of every file; read as a little-endian uint32 it is 0x46554747
GGUF_MAGIC_BIG_ENDIAN_VERSION_HINT = 0x03000000  # version 3 read from a big-endian file

GGUF_VERSION = 3  # the version gguflite writes
GGUF_READABLE_VERSIONS = (2, 3)  # v1 (32-bit counts) is obsolete and refused

GGUF_DEFAULT_ALIGNMENT = 32
KEY_ALIGNMENT = "general.alignment"

# Spec limits (rule V6, V9, V15). They bound what an untrusted file can make us allocate.
MAX_KEY_LENGTH = 65535  # GGUF: keys are at most 2**16 - 1 bytes
MAX_STRING_LENGTH = 1 << 30  # one metadata string
MAX_ARRAY_LENGTH = 1 << 31  # elements in one metadata array
MAX_ARRAY_NESTING = 8  # arrays of arrays, depth
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_LENGTH = 63  # GGML_MAX_NAME - 1 bytes: longer names do not load in llama.cpp
MAX_ALIGNMENT = 1 << 16

QK_K = 256  # super-block size of the k-quants and ternary types


class GGUFValueType(IntEnum):
    """Metadata value types (uint32 on disk)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Scalar value types: struct format (little-endian) and numpy dtype.
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
SCALAR_DTYPES: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}
INTEGER_RANGES: dict[GGUFValueType, tuple[int, int]] = {
    GGUFValueType.UINT8: (0, (1 << 8) - 1),
    GGUFValueType.INT8: (-(1 << 7), (1 << 7) - 1),
    GGUFValueType.UINT16: (0, (1 << 16) - 1),
    GGUFValueType.INT16: (-(1 << 15), (1 << 15) - 1),
    GGUFValueType.UINT32: (0, (1 << 32) - 1),
    GGUFValueType.INT32: (-(1 << 31), (1 << 31) - 1),
    GGUFValueType.UINT64: (0, (1 << 64) - 1),
    GGUFValueType.INT64: (-(1 << 63), (1 << 63) - 1),
}


class GGMLType(IntEnum):
    """Tensor types (uint32 on disk). Gaps are ids ggml has retired; they are invalid."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


class TypeTraits(NamedTuple):
    block_size: int  # elements per block
    type_size: int  # bytes per block


# fmt: off
GGML_TYPE_TRAITS: dict[GGMLType, TypeTraits] = {
    GGMLType.F32:     TypeTraits(1, 4),
    GGMLType.F16:     TypeTraits(1, 2),
    GGMLType.BF16:    TypeTraits(1, 2),
    GGMLType.F64:     TypeTraits(1, 8),
    GGMLType.I8:      TypeTraits(1, 1),
    GGMLType.I16:     TypeTraits(1, 2),
    GGMLType.I32:     TypeTraits(1, 4),
    GGMLType.I64:     TypeTraits(1, 8),
    # d: f16 | qs: 16 bytes of nibbles
    GGMLType.Q4_0:    TypeTraits(32, 2 + 16),
    # d, m: f16 | qs: 16 bytes of nibbles
    GGMLType.Q4_1:    TypeTraits(32, 2 + 2 + 16),
    # d: f16 | qh: 4 bytes of fifth bits | qs: 16 bytes of nibbles
    GGMLType.Q5_0:    TypeTraits(32, 2 + 4 + 16),
    GGMLType.Q5_1:    TypeTraits(32, 2 + 2 + 4 + 16),
    # d: f16 | qs: 32 x int8
    GGMLType.Q8_0:    TypeTraits(32, 2 + 32),
    # d, s: f16 (s = d * sum(qs)) | qs: 32 x int8  (gguf-py's table says 4 + 4 + 32: wrong)
    GGMLType.Q8_1:    TypeTraits(32, 2 + 2 + 32),
    # scales: 16 bytes (4-bit scale | 4-bit min) | qs: 2-bit quants | d, dmin: f16
    GGMLType.Q2_K:    TypeTraits(QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    # hmask: high bits | qs: low 2 bits | scales: 12 bytes of 6-bit scales | d: f16
    GGMLType.Q3_K:    TypeTraits(QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    # d, dmin: f16 | scales: 12 bytes of 6-bit scales and mins | qs: nibbles
    GGMLType.Q4_K:    TypeTraits(QK_K, 2 + 2 + 12 + QK_K // 2),
    # d, dmin: f16 | scales: 12 bytes | qh: fifth bits | qs: nibbles
    GGMLType.Q5_K:    TypeTraits(QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    # ql: low nibbles | qh: high 2 bits | scales: 16 x int8 | d: f16
    GGMLType.Q6_K:    TypeTraits(QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    # d: f32 | qs: 256 x int8 | bsums: 16 x int16
    GGMLType.Q8_K:    TypeTraits(QK_K, 4 + QK_K + QK_K // 16 * 2),
    GGMLType.IQ2_XXS: TypeTraits(QK_K, 2 + QK_K // 4),
    GGMLType.IQ2_XS:  TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 8),
    GGMLType.IQ1_S:   TypeTraits(QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL:  TypeTraits(32, 2 + 16),
    GGMLType.IQ3_S:   TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S:   TypeTraits(QK_K, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS:  TypeTraits(QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    GGMLType.IQ1_M:   TypeTraits(QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    # qs: 5 trits per byte (48 bytes = 240 values) + 4 bytes (16 values) | d: f16
    GGMLType.TQ1_0:   TypeTraits(QK_K, (QK_K - 4 * QK_K // 64) // 5 + QK_K // 64 + 2),
    # qs: 4 x 2-bit values per byte | d: f16
    GGMLType.TQ2_0:   TypeTraits(QK_K, QK_K // 4 + 2),
    # e: e8m0 scale | qs: 16 bytes of fp4 nibbles
    GGMLType.MXFP4:   TypeTraits(32, 1 + 16),
    GGMLType.NVFP4:   TypeTraits(64, 4 + 32),
    GGMLType.Q1_0:    TypeTraits(128, 2 + 128 // 8),
}
# fmt: on

assert set(GGML_TYPE_TRAITS) == set(GGMLType)

# ggml-common.h kvalues_iq4nl: the signed values the 4-bit indices of IQ4_NL / IQ4_XS select.
IQ4NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def bits_per_weight(ggml_type: GGMLType) -> float:
    block_size, type_size = GGML_TYPE_TRAITS[ggml_type]
    return 8.0 * type_size / block_size


def row_nbytes(ggml_type: GGMLType, n_per_row: int) -> int:
    """Bytes of one row of ``n_per_row`` elements; the caller checks divisibility (rule V13)."""
    block_size, type_size = GGML_TYPE_TRAITS[ggml_type]
    return n_per_row // block_size * type_size


# general.file_type values (llama.cpp's llama_ftype), used in general.file_type.
class LlamaFileType(IntEnum):
    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q4_0 = 2
    MOSTLY_Q4_1 = 3
    MOSTLY_Q8_0 = 7
    MOSTLY_Q5_0 = 8
    MOSTLY_Q5_1 = 9
    MOSTLY_Q2_K = 10
    MOSTLY_Q3_K_S = 11
    MOSTLY_Q3_K_M = 12
    MOSTLY_Q3_K_L = 13
    MOSTLY_Q4_K_S = 14
    MOSTLY_Q4_K_M = 15
    MOSTLY_Q5_K_S = 16
    MOSTLY_Q5_K_M = 17
    MOSTLY_Q6_K = 18
    MOSTLY_IQ4_NL = 25
    MOSTLY_IQ4_XS = 30
    MOSTLY_BF16 = 32
    MOSTLY_TQ1_0 = 36
    MOSTLY_TQ2_0 = 37
    GUESSED = 1024


# Version of the quantization formats (general.quantization_version), as llama.cpp writes it.
GGML_QUANTIZATION_VERSION = 2
