"""Tensor codecs: quantize float32 arrays to ggml (and gguflite) types and back.

    >>> packed = quantize(w, "q8_0")          # (rows, cols) f32 -> (rows, cols // 32 * 34) u8
    >>> w2 = dequantize(packed, "q8_0", w.shape)

ggml types are bit-exact with ggml's reference quantizers (``quantize_row_*_ref``) and
dequantizers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..constants import GGMLType
from ..errors import UnsupportedTypeError
from . import floats as _floats  # noqa: F401  (registers codecs)
from . import iq4 as _iq4  # noqa: F401  (registers codecs)
from . import km as _km  # noqa: F401  (registers the km2/km3/km4 row codecs)
from . import kquants as _kquants  # noqa: F401  (registers codecs)
from . import legacy as _legacy  # noqa: F401  (registers codecs)
from . import ternary as _ternary  # noqa: F401  (registers codecs)
from .base import Codec, get_codec, registered


class TypeInfo(NamedTuple):
    name: str
    ggml_type: GGMLType | None
    block_size: int
    type_size: int
    bits_per_weight: float
    can_quantize: bool


def quantize(
    array: np.ndarray,
    type: str | int | GGMLType,  # noqa: A002
    *,
    importance: np.ndarray | None = None,
    reference: bool = False,
    name: str = "tensor",
) -> np.ndarray:
    """Encode a float array of shape (..., n) as ``type``; returns uint8 (..., row bytes)."""
    return get_codec(type).quantize(array, importance=importance, reference=reference, name=name)


def dequantize(
    packed: np.ndarray,
    type: str | int | GGMLType,  # noqa: A002
    shape: tuple[int, ...],
    *,
    reference: bool = False,
    name: str = "tensor",
) -> np.ndarray:
    """Decode the bytes of a tensor of numpy shape ``shape`` to float32."""
    try:
        codec = get_codec(type)
    except UnsupportedTypeError as exc:  # say which tensor
        raise UnsupportedTypeError(f"{name}: {exc}") from None
    return codec.dequantize(packed, shape, reference=reference, name=name)


def types() -> list[TypeInfo]:
    """Every registered type with its block size, bytes per block and bits per weight."""
    return [
        TypeInfo(c.name, c.ggml_type, c.block_size, c.type_size,
                 8.0 * c.type_size / c.block_size, c.can_quantize)
        for c in registered().values()
    ]


__all__ = ["Codec", "TypeInfo", "dequantize", "get_codec", "quantize", "types"]
