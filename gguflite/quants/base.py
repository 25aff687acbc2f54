"""The codec base class and registry.

A codec implements only ``quantize_blocks`` / ``dequantize_blocks`` on 2-D block arrays; the
base class does the reshaping, the checks and the error messages. Subclassing registers a codec
under its ``name`` (and its ``ggml_type`` when it has one).

Each codec has a plain NumPy reference path (``*_blocks``) and may add a Numba fast path
(``*_blocks_fast``); tests prove the two agree bit for bit.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..constants import GGML_TYPE_TRAITS, GGMLType
from ..errors import QuantizationError, UnsupportedTypeError

_REGISTRY: dict[str, type[Codec]] = {}


class Codec:
    """One tensor type. Subclasses set the class variables and the block functions."""

    name: ClassVar[str] = ""
    ggml_type: ClassVar[GGMLType | None] = None  # None for gguflite's own types
    block_size: ClassVar[int] = 1
    type_size: ClassVar[int] = 1
    can_quantize: ClassVar[bool] = True
    uses_importance: ClassVar[bool] = False
    # Does dequantize(quantize(x)) quantize back to the same bytes? True / False as documented
    # in the codec's docstring (with its conditions); None: not yet documented. Checked for
    # every quantizable codec in tests/test_quants_properties.py.
    requantize_stable: ClassVar[bool | None] = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return  # an abstract intermediate class
        if cls.ggml_type is not None:
            cls.block_size, cls.type_size = GGML_TYPE_TRAITS[cls.ggml_type]
        _REGISTRY[cls.name.lower()] = cls

    # -- what a codec implements -------------------------------------------------------------
    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        """(n_blocks, block_size) float32 [+ same-shape importance] -> (n_blocks, type_size) u8."""
        raise UnsupportedTypeError(f"quantizing to {cls.name} is not supported (decode only)")

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """(n_blocks, type_size) uint8 -> (n_blocks, block_size) float32."""
        raise NotImplementedError  # every registered codec overrides this

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        """The documented error bound: (n_blocks, block_size) float32 -> (n_blocks,) float64.

        No value of ``dequantize(quantize(block))`` is further than this from the input (inf
        where the type cannot hold the block, e.g. an fp16 scale that overflows). Every
        quantizable codec documents one; tests/test_quants_properties.py checks it.
        """
        raise NotImplementedError(f"{cls.name} documents no error bound (Codec.max_error)")

    # Fast paths default to the reference; codecs with Numba kernels override them.
    @classmethod
    def quantize_blocks_fast(cls, blocks: np.ndarray, importance: np.ndarray | None) -> np.ndarray:
        return cls.quantize_blocks(blocks, importance)

    @classmethod
    def dequantize_blocks_fast(cls, blocks: np.ndarray) -> np.ndarray:
        return cls.dequantize_blocks(blocks)

    # -- whole tensors (the base class does the reshaping) ------------------------------------
    @classmethod
    def row_nbytes(cls, n_per_row: int) -> int:
        cls._check_row_length(n_per_row)
        return n_per_row // cls.block_size * cls.type_size

    @classmethod
    def _check_row_length(cls, n_per_row: int, name: str = "tensor") -> None:
        if n_per_row % cls.block_size:
            raise QuantizationError(
                f"{name}: row length {n_per_row} is not a multiple of the {cls.name} block size "
                f"{cls.block_size}; pick another type for this tensor"
            )

    @classmethod
    def quantize(
        cls,
        array: np.ndarray,
        *,
        importance: np.ndarray | None = None,
        reference: bool = False,
        name: str = "tensor",
    ) -> np.ndarray:
        """float array of shape (..., n) -> uint8 array of shape (..., row_nbytes(n))."""
        if not cls.can_quantize:
            raise UnsupportedTypeError(f"{name}: quantizing to {cls.name} is not supported")
        x = np.asarray(array, dtype=np.float32)
        if x.ndim == 0:
            x = x.reshape(1)
        n = x.shape[-1]
        cls._check_row_length(n, name)
        if x.size:
            finite = np.isfinite(x)
            if not finite.all():
                bad = np.unravel_index(int(np.argmin(finite.reshape(-1))), x.shape)
                raise QuantizationError(
                    f"{name}: non-finite value {x[bad]!r} at index {tuple(int(i) for i in bad)}; "
                    "nothing was written"
                )
        blocks = np.ascontiguousarray(x).reshape(-1, cls.block_size)  # (n_blocks, block_size)
        imp = None
        if importance is not None:
            imp = np.asarray(importance, dtype=np.float32)
            if imp.shape != (n,):
                raise QuantizationError(
                    f"{name}: importance must have shape ({n},) (one weight per column), "
                    f"got {imp.shape}"
                )
            rows = blocks.shape[0] * cls.block_size // n if n else 0
            imp = np.broadcast_to(imp, (rows, n)).reshape(-1, cls.block_size)
        fn = cls.quantize_blocks if reference else cls.quantize_blocks_fast
        out = fn(blocks, imp) if blocks.shape[0] else np.zeros((0, cls.type_size), np.uint8)
        return out.reshape(*x.shape[:-1], n // cls.block_size * cls.type_size)

    @classmethod
    def dequantize(
        cls, packed: np.ndarray, shape: tuple[int, ...], *, reference: bool = False,
        name: str = "tensor",
    ) -> np.ndarray:
        """uint8 bytes of a tensor of numpy shape ``shape`` -> float32 array of that shape."""
        shape = tuple(int(s) for s in shape)
        n_el = int(np.prod(shape, dtype=object)) if shape else 1
        if shape:
            cls._check_row_length(shape[-1], name)
        raw = np.asarray(packed)
        if raw.dtype != np.uint8:
            raw = raw.view(np.uint8)
        raw = raw.reshape(-1)
        expected = n_el // cls.block_size * cls.type_size
        if raw.size != expected:
            raise QuantizationError(
                f"{name}: {cls.name} data of shape {shape} needs {expected} bytes, got {raw.size}"
            )
        blocks = raw.reshape(-1, cls.type_size)  # (n_blocks, type_size)
        fn = cls.dequantize_blocks if reference else cls.dequantize_blocks_fast
        out = fn(blocks) if blocks.shape[0] else np.zeros((0, cls.block_size), np.float32)
        return np.asarray(out, dtype=np.float32).reshape(shape)


def get_codec(type_: str | int | GGMLType) -> type[Codec]:
    """Look a codec up by name (``"q4_k"``, case-insensitive) or GGML type id."""
    if isinstance(type_, str):
        codec = _REGISTRY.get(type_.lower())
        if codec is None:
            known = ", ".join(sorted(_REGISTRY))
            raise UnsupportedTypeError(f"unsupported type {type_!r}; known types: {known}")
        return codec
    for codec in _REGISTRY.values():
        if codec.ggml_type is not None and int(codec.ggml_type) == int(type_):
            return codec
    try:
        label = GGMLType(int(type_)).name
    except ValueError:
        label = f"id {int(type_)}"
    raise UnsupportedTypeError(f"unsupported type {label}: gguflite cannot decode it")


def registered() -> dict[str, type[Codec]]:
    return dict(_REGISTRY)
