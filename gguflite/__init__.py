"""gguflite: single-file language models.

The format core: ``open`` (a strict memory-mapped reader), ``GGUFWriter`` (a streaming atomic
writer), the codecs in ``gguflite.quants``, the validator in ``gguflite.validate``.
"""

from __future__ import annotations

from .constants import GGMLType, GGUFValueType
from .errors import (
    ConversionError,
    FormatError,
    GGUFLiteError,
    ModelError,
    QuantizationError,
    UnsupportedTypeError,
    WriterError,
)
from .reader import GGUFFile, TensorInfo, open
from .writer import GGUFWriter

__version__ = "0.1.0"

__all__ = [
    "ConversionError",
    "FormatError",
    "GGMLType",
    "GGUFFile",
    "GGUFLiteError",
    "GGUFValueType",
    "GGUFWriter",
    "ModelError",
    "QuantizationError",
    "TensorInfo",
    "UnsupportedTypeError",
    "WriterError",
    "__version__",
    "open",
]
