"""ctypes harness to libggml, the reference every gguflite codec is tested against.

libggml-base ships inside the llama-cpp-python wheel (``llama_cpp/lib/libggml-base.so``); .ci/run
installs it. ``GGUFLITE_LIBGGML_BASE=/path/libggml-base.so`` points at another build. This
module fails to import when the library is missing: a test that needs the reference must not
silently pass without it.

The functions used (all in libggml-base, compiled for baseline x86-64, so no FMA contraction):

- ``ggml_quantize_chunk(type, src, dst, start, nrows, n_per_row, imatrix)``: what llama-quantize
  calls. Without an importance matrix the legacy and ternary types run ``quantize_row_<t>_ref``.
- ``ggml_get_type_traits(type)->to_float`` / ``->from_float_ref``: the row dequantizer and the
  reference row quantizer of each type.
- ``ggml_fp32_to_fp16_row`` / ``ggml_fp16_to_fp32_row`` / ``ggml_fp32_to_bf16_row_ref`` /
  ``ggml_bf16_to_fp32_row``: the scalar float conversions.

API (stable; the k-quant tests use it too)::

    ggml_quantize(type_id, x, importance=None) -> uint8 (nrows, row_bytes)   # x (nrows, n) f32
    ggml_quantize_ref(type_id, x) -> uint8 (row_bytes * nrows,)            # from_float_ref
    ggml_dequantize(type_id, packed, n) -> float32 (n,)                      # to_float
    ggml_requires_imatrix(type_id) -> bool
    type_traits(type_id) -> TypeTraits(name, block_size, type_size, is_quantized, ...)
    fp32_to_fp16_bits(x) / fp16_bits_to_fp32(h) / fp32_to_bf16_bits(x) / bf16_bits_to_fp32(h)
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
from typing import NamedTuple

import numpy as np

__all__ = [
    "LIB_PATH",
    "GgmlTraits",
    "bf16_bits_to_f32",
    "fp16_bits_to_fp32",
    "fp32_to_bf16_bits",
    "fp32_to_fp16_bits",
    "ggml_dequantize",
    "ggml_quantize",
    "ggml_quantize_ref",
    "ggml_requires_imatrix",
    "lib",
    "type_traits",
]


def _find_library() -> pathlib.Path:
    override = os.environ.get("GGUFLITE_LIBGGML_BASE")  # a libggml-base.so built elsewhere
    if override:
        return pathlib.Path(override)
    try:
        import llama_cpp  # the wheel that ships libggml
    except ImportError as exc:  # re-raised with what to do
        raise ImportError(
            "tests/ggml_ref.py needs libggml from llama-cpp-python; install it with "
            "`pip install llama-cpp-python` (.ci/run does)"
        ) from exc
    root = pathlib.Path(llama_cpp.__file__).parent
    found = sorted(root.rglob("libggml-base.so*")) or sorted(root.rglob("libggml-base*.dylib"))
    if not found:
        raise ImportError(f"libggml-base not found under {root}; reinstall llama-cpp-python")
    return found[0]


LIB_PATH = _find_library()

# ggml.h: typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
# ggml.h: typedef void (*ggml_from_float_t)(const float * x, void * y, int64_t k);
_FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _CTypeTraits(ctypes.Structure):
    # struct ggml_type_traits (ggml.h), field for field
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", _TO_FLOAT),
        ("from_float_ref", _FROM_FLOAT),
    ]


class GgmlTraits(NamedTuple):
    name: str
    block_size: int
    type_size: int
    is_quantized: bool
    has_to_float: bool
    has_from_float_ref: bool


@functools.cache
def lib() -> ctypes.CDLL:
    """The loaded libggml-base with argument types declared."""
    so = ctypes.CDLL(str(LIB_PATH))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    so.ggml_quantize_chunk.argtypes = [ctypes.c_int, p, p, i64, i64, i64, p]
    so.ggml_quantize_chunk.restype = ctypes.c_size_t
    so.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    so.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    so.ggml_get_type_traits.argtypes = [ctypes.c_int]
    so.ggml_get_type_traits.restype = ctypes.POINTER(_CTypeTraits)
    so.ggml_row_size.argtypes = [ctypes.c_int, i64]
    so.ggml_row_size.restype = ctypes.c_size_t
    for fn in ("ggml_fp32_to_fp16_row", "ggml_fp16_to_fp32_row", "ggml_fp32_to_bf16_row_ref",
               "ggml_bf16_to_fp32_row"):
        getattr(so, fn).argtypes = [p, p, i64]
        getattr(so, fn).restype = None
    return so


def _traits_struct(type_id: int) -> _CTypeTraits:
    return lib().ggml_get_type_traits(int(type_id)).contents


def type_traits(type_id: int) -> GgmlTraits:
    """ggml's own (name, block size, bytes per block, ...) for ``type_id``."""
    t = _traits_struct(type_id)
    return GgmlTraits(
        (t.type_name or b"").decode(), int(t.blck_size), int(t.type_size), bool(t.is_quantized),
        bool(ctypes.cast(t.to_float, ctypes.c_void_p).value),
        bool(ctypes.cast(t.from_float_ref, ctypes.c_void_p).value),
    )


def ggml_requires_imatrix(type_id: int) -> bool:
    return bool(lib().ggml_quantize_requires_imatrix(int(type_id)))


def _row_bytes(type_id: int, n_per_row: int) -> int:
    t = type_traits(type_id)
    if n_per_row % t.block_size:
        raise ValueError(f"{t.name}: row length {n_per_row} not a multiple of {t.block_size}")
    return n_per_row // t.block_size * t.type_size


def ggml_quantize(
    type_id: int, x: np.ndarray, importance: np.ndarray | None = None
) -> np.ndarray:
    """Quantize with ``ggml_quantize_chunk`` (single-threaded, as llama-quantize per chunk).

    Parameters
    ----------
    type_id:
        ggml type id (``GGMLType.Q4_0``).
    x:
        (nrows, n_per_row) float32; a 1-D array is one row.
    importance:
        (n_per_row,) float32 importance matrix row, or None.

    Returns
    -------
    np.ndarray
        (nrows, row_bytes) uint8.
    """
    src = np.ascontiguousarray(x, dtype=np.float32)
    if src.ndim == 1:
        src = src.reshape(1, -1)
    nrows, n_per_row = src.shape
    row_bytes = _row_bytes(type_id, n_per_row)
    out = np.zeros((nrows, row_bytes), dtype=np.uint8)  # (nrows, row_bytes)
    imp_ptr = None
    if importance is not None:
        imp = np.ascontiguousarray(importance, dtype=np.float32)
        if imp.shape != (n_per_row,):
            raise ValueError(f"importance must have shape ({n_per_row},), got {imp.shape}")
        imp_ptr = imp.ctypes.data
    elif ggml_requires_imatrix(type_id):
        raise ValueError(f"{type_traits(type_id).name} requires an importance matrix")
    if nrows and n_per_row:
        written = lib().ggml_quantize_chunk(
            int(type_id), src.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, imp_ptr
        )
        if written != out.nbytes:
            raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}")
    return out


def ggml_quantize_ref(type_id: int, x: np.ndarray) -> np.ndarray:
    """Quantize with the type's ``from_float_ref`` (``quantize_row_<t>_ref``) over all of ``x``.

    Returns a flat uint8 array of ``x.size // block_size * type_size`` bytes.
    """
    t = _traits_struct(type_id)
    if not ctypes.cast(t.from_float_ref, ctypes.c_void_p).value:
        raise ValueError(f"{type_traits(type_id).name} has no from_float_ref in ggml")
    src = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)  # (n,)
    out = np.zeros(_row_bytes(type_id, src.size), dtype=np.uint8)
    if src.size:
        t.from_float_ref(src.ctypes.data, out.ctypes.data, src.size)
    return out


def ggml_dequantize(type_id: int, packed: np.ndarray, n: int) -> np.ndarray:
    """Decode ``n`` values of type ``type_id`` with ggml's ``to_float``; returns float32 (n,)."""
    t = _traits_struct(type_id)
    if not ctypes.cast(t.to_float, ctypes.c_void_p).value:
        raise ValueError(f"{type_traits(type_id).name} has no to_float in ggml")
    raw = np.ascontiguousarray(packed).view(np.uint8).reshape(-1)
    need = _row_bytes(type_id, n)
    if raw.size != need:
        raise ValueError(f"{n} values of {type_traits(type_id).name} need {need} bytes, got "
                         f"{raw.size}")
    out = np.zeros(n, dtype=np.float32)  # (n,)
    if n:
        t.to_float(raw.ctypes.data, out.ctypes.data, n)
    return out


def _convert(fn_name: str, x: np.ndarray, in_dtype: str, out_dtype: str) -> np.ndarray:
    src = np.ascontiguousarray(x, dtype=in_dtype)
    out = np.zeros(src.shape, dtype=out_dtype)
    if src.size:
        getattr(lib(), fn_name)(src.ctypes.data, out.ctypes.data, src.size)
    return out


def fp32_to_fp16_bits(x: np.ndarray) -> np.ndarray:
    """ggml_fp32_to_fp16_row: float32 -> uint16 fp16 bits, same shape."""
    return _convert("ggml_fp32_to_fp16_row", x, "<f4", "<u2")


def fp16_bits_to_fp32(h: np.ndarray) -> np.ndarray:
    """ggml_fp16_to_fp32_row: uint16 fp16 bits -> float32, same shape."""
    return _convert("ggml_fp16_to_fp32_row", h, "<u2", "<f4")


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """ggml_fp32_to_bf16_row_ref: float32 -> uint16 bf16 bits (round to nearest even)."""
    return _convert("ggml_fp32_to_bf16_row_ref", x, "<f4", "<u2")


def bf16_bits_to_f32(h: np.ndarray) -> np.ndarray:
    """ggml_bf16_to_fp32_row: uint16 bf16 bits -> float32."""
    return _convert("ggml_bf16_to_fp32_row", h, "<u2", "<f4")
