"""gguflite: single-file language models.

The format core: ``open`` (a strict memory-mapped reader), ``GGUFWriter`` (a streaming atomic
writer), the codecs in ``gguflite.quants``, the validator in ``gguflite.validate``.
"""

from __future__ import annotations

from ._numba_cache import ensure_writable_cache, separate_lowering_overrides

# before the first Numba function with cache=True is defined:
separate_lowering_overrides()
ensure_writable_cache()

from .constants import GGMLType, GGUFValueType  # noqa: E402
from .errors import (  # noqa: E402
    ConversionError,
    FormatError,
    GGUFLiteError,
    ModelError,
    QuantizationError,
    UnsupportedTypeError,
    WriterError,
)
from .reader import GGUFFile, TensorInfo, open  # noqa: E402
from .writer import GGUFWriter  # noqa: E402

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
