"""Regenerate the golden test vectors of spec/gguflite-v1.md.

Run ``python spec/vectors/make_vectors.py``.

Each vector is a tiny file (a few hundred bytes) plus its expected dump
(``gguflite dump --json --full --hash``). The declarations below are the source of truth: the
tests write them again and require identical bytes, read the stored files and require the
stored dumps, and open them with gguf-py. They also seed the fuzzer (fuzz/corpus/).

All data is deterministic (no random numbers), so regenerating on any machine gives the same
bytes; a change in the bytes is a change of the format and belongs in spec/CHANGELOG.md.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gguflite import GGMLType, GGUFWriter
from gguflite import GGUFValueType as T
from gguflite import open as open_gguf

HERE = Path(__file__).resolve().parent


def _all_value_types(w: GGUFWriter) -> None:
    """One key of every value type, extremes included, and arrays of every element type."""
    w.add("general.architecture", "test", T.STRING)
    w.add("test.u8", 255, T.UINT8)
    w.add("test.i8", -128, T.INT8)
    w.add("test.u16", 65535, T.UINT16)
    w.add("test.i16", -32768, T.INT16)
    w.add("test.u32", 4294967295, T.UINT32)
    w.add("test.i32", -2147483648, T.INT32)
    w.add("test.f32", 1.5, T.FLOAT32)
    w.add("test.f32_neg_zero", -0.0, T.FLOAT32)
    w.add("test.f32_inf", float("inf"), T.FLOAT32)
    w.add("test.f32_nan", float("nan"), T.FLOAT32)
    w.add("test.bool_true", True, T.BOOL)
    w.add("test.bool_false", False, T.BOOL)
    w.add("test.str", "héllo, wörld ✓ 🦙", T.STRING)
    w.add("test.str_empty", "", T.STRING)
    w.add("test.u64", (1 << 64) - 1, T.UINT64)
    w.add("test.i64", -(1 << 63), T.INT64)
    w.add("test.f64", 1e308, T.FLOAT64)
    w.add("test.arr_u8", [0, 1, 255], T.ARRAY, T.UINT8)
    w.add("test.arr_i8", [-128, 0, 127], T.ARRAY, T.INT8)
    w.add("test.arr_u16", [0, 65535], T.ARRAY, T.UINT16)
    w.add("test.arr_i16", [-32768, 32767], T.ARRAY, T.INT16)
    w.add("test.arr_u32", [0, 4294967295], T.ARRAY, T.UINT32)
    w.add("test.arr_i32", [-2147483648, 2147483647], T.ARRAY, T.INT32)
    w.add("test.arr_f32", [0.25, -2.0], T.ARRAY, T.FLOAT32)
    w.add("test.arr_bool", [True, False, True], T.ARRAY, T.BOOL)
    w.add("test.arr_str", ["a", "", "ü✓"], T.ARRAY, T.STRING)
    w.add("test.arr_u64", [0, (1 << 64) - 1], T.ARRAY, T.UINT64)
    w.add("test.arr_i64", [-(1 << 63), (1 << 63) - 1], T.ARRAY, T.INT64)
    w.add("test.arr_f64", [0.1, -1e-300], T.ARRAY, T.FLOAT64)
    w.add("test.arr_empty", [], T.ARRAY, T.UINT32)
    w.add("test.arr_str_empty", [], T.ARRAY, T.STRING)


def _q8_0_block() -> np.ndarray:
    # Q8_0 block (34 bytes): d = 0.5 as float16 | qs = int8 -16..15, so values are -8.0..7.5
    d = np.array([0.5], dtype="<f2").view(np.uint8)  # (2,)
    qs = np.arange(-16, 16, dtype=np.int8).view(np.uint8)  # (32,)
    return np.concatenate([d, qs])  # (34,)


def _q4_0_block() -> np.ndarray:
    # Q4_0 block (18 bytes): d = 0.25 as float16 | qs[j] = (x[j + 16] << 4) | x[j], nibbles
    # x = 0..15, 15..0 are offset by 8: value = (x - 8) * d
    x = np.concatenate([np.arange(16), np.arange(15, -1, -1)]).astype(np.uint8)  # (32,)
    d = np.array([0.25], dtype="<f2").view(np.uint8)  # (2,)
    qs = (x[:16] | (x[16:] << 4)).astype(np.uint8)  # (16,)
    return np.concatenate([d, qs])  # (18,)


def _tensors(w: GGUFWriter) -> None:
    """Tensors of several types and ranks, default alignment."""
    w.add("general.architecture", "test", T.STRING)
    w.add("general.name", "tensors vector", T.STRING)
    w.add_tensor("f32.matrix", shape=(2, 3), type=GGMLType.F32,
                 data=np.arange(6, dtype="<f4").reshape(2, 3) - 2.5)
    w.add_tensor("f16.vector", shape=(5,), type=GGMLType.F16,
                 data=np.array([1, -1, 0.5, 65504, -0.0], dtype="<f2"))
    w.add_tensor("bf16.vector", shape=(3,), type=GGMLType.BF16,
                 data=np.array([0x3F80, 0xC000, 0x3F00], dtype="<u2"))  # 1.0, -2.0, 0.5
    w.add_tensor("i32.cube", shape=(2, 2, 2), type=GGMLType.I32,
                 data=np.arange(8, dtype="<i4") * -3)
    w.add_tensor("q8_0.row", shape=(1, 32), type=GGMLType.Q8_0, data=_q8_0_block())
    w.add_tensor("q4_0.rows", shape=(2, 32), type=GGMLType.Q4_0,
                 data=np.concatenate([_q4_0_block(), _q4_0_block()[::-1]]))


def _alignment_64(w: GGUFWriter) -> None:
    """general.alignment = 64: the data section and every tensor start on 64-byte boundaries."""
    w.add("general.architecture", "test", T.STRING)
    w.add_tensor("a", shape=(5,), type=GGMLType.F32, data=np.arange(5, dtype="<f4"))
    w.add_tensor("b", shape=(1, 32), type=GGMLType.Q4_0, data=_q4_0_block())
    w.add_tensor("c", shape=(3,), type=GGMLType.I8, data=np.array([-1, 0, 1], dtype="<i1"))


def _empty(w: GGUFWriter) -> None:
    """No metadata, no tensors: the 24-byte header alone."""


def _zero_elements(w: GGUFWriter) -> None:
    """A tensor with 0 elements occupies no bytes; the next tensor starts at the same offset."""
    w.add("general.architecture", "test", T.STRING)
    w.add_tensor("empty", shape=(0, 4), type=GGMLType.F32, data=np.zeros((0, 4), "<f4"))
    w.add_tensor("after", shape=(2,), type=GGMLType.F32, data=np.array([1, 2], "<f4"))


# name -> (alignment, declarations)
VECTORS: dict[str, tuple[int, Callable[[GGUFWriter], None]]] = {
    "all_value_types": (32, _all_value_types),
    "tensors": (32, _tensors),
    "alignment_64": (64, _alignment_64),
    "empty": (32, _empty),
    "zero_elements": (32, _zero_elements),
}


def write_vector(name: str, path: Path) -> Path:
    """Write vector ``name`` to ``path`` with gguflite's writer."""
    alignment, declare = VECTORS[name]
    with GGUFWriter(path, alignment=alignment) as w:
        declare(w)
    return path


def expected_dump(path: Path) -> dict:
    from gguflite.cli.dump import dump_dict

    with open_gguf(path) as f:
        return dump_dict(f, full=True, hashes=True)


def main() -> int:
    for name in VECTORS:
        gguf_path = write_vector(name, HERE / f"{name}.gguf")
        dump = expected_dump(gguf_path)
        (HERE / f"{name}.json").write_text(json.dumps(dump, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
        print(f"{gguf_path.name}: {gguf_path.stat().st_size} bytes")
    return 0


assert struct.calcsize("<f") == 4
if __name__ == "__main__":
    sys.exit(main())
