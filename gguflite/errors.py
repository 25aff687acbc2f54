"""One exception hierarchy for everything gguflite raises on bad input.

    GGUFLiteError
    ├── FormatError(ValueError)          the bytes are not a valid file
    │   ├── TruncatedError               a read would run past the end of the file
    │   ├── BadMagicError                not a GGUF file at all
    │   ├── UnsupportedVersionError      a GGUF version we do not read
    │   ├── EndiannessError              a big-endian file
    │   ├── LimitError                   a count or size over a spec limit
    │   ├── MetadataError                a bad key, value type or value
    │   ├── TensorInfoError              a bad tensor name, shape, type or offset
    │   └── SplitError                   a split set with a missing, extra, reordered or
    │                                    inconsistent shard (rules S1-S9)
    ├── UnsupportedTypeError(ValueError) a tensor type we know but cannot encode/decode
    ├── QuantizationError(ValueError)    input a codec cannot encode (NaN, bad row length)
    ├── WriterError(ValueError)          a value or tensor the writer refuses
    ├── ConversionError(ValueError)      a checkpoint the converter refuses
    ├── ModelError(ValueError)           a file the runtime cannot run
    ├── NotRegularFileError(OSError)     a FIFO, device or socket given as a model file
    └── ClosedFileError(ValueError)      tensor data asked of a closed GGUFFile

Every message names the key, tensor, byte offset and/or the spec rule (``V12``), and, where
there is one, says what to do.
"""

from __future__ import annotations


class GGUFLiteError(Exception):
    """Base class of every error gguflite raises on purpose."""


class FormatError(GGUFLiteError, ValueError):
    """The bytes do not form a valid gguflite/GGUF file.

    Attributes
    ----------
    rule:
        The spec rule violated (``"V7"``), or ``None``.
    offset:
        Absolute byte offset in the file where the problem was found, or ``None``.
    """

    def __init__(self, message: str, *, rule: str | None = None, offset: int | None = None):
        self.rule = rule
        self.offset = offset
        self.detail = message
        prefix = f"[{rule}] " if rule else ""
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(f"{prefix}{message}{where}")


class TruncatedError(FormatError):
    """A read would run past the end of the file."""


class BadMagicError(FormatError):
    """The file does not start with the GGUF magic."""


class UnsupportedVersionError(FormatError):
    """The GGUF version is not one we read."""


class EndiannessError(FormatError):
    """The file is big-endian; gguflite reads little-endian files only."""


class LimitError(FormatError):
    """A declared count or size exceeds a limit of the spec."""


class MetadataError(FormatError):
    """A metadata key, value type or value is invalid."""


class TensorInfoError(FormatError):
    """A tensor's name, shape, type, size or offset is invalid."""


class SplitError(FormatError):
    """A split set (``name-00001-of-0000N.gguf``) whose shards do not form one file."""


class UnsupportedTypeError(GGUFLiteError, ValueError):
    """A tensor type that exists but that this operation does not support."""


class QuantizationError(GGUFLiteError, ValueError):
    """Input that a codec refuses to encode: NaN/Inf, a bad row length, a bad shape."""


class WriterError(GGUFLiteError, ValueError):
    """A metadata value or tensor the writer refuses; nothing is written."""


class ConversionError(GGUFLiteError, ValueError):
    """A checkpoint the converter cannot convert; nothing is written."""


class ModelError(GGUFLiteError, ValueError):
    """A file the runtime cannot run: unknown architecture, missing tensor, wrong shape."""


class NotRegularFileError(GGUFLiteError, OSError):
    """A path that is not a regular file (a FIFO, a device, a socket): refused at once, since
    reading it could block forever or never end. An OSError, like IsADirectoryError."""


class ClosedFileError(GGUFLiteError, ValueError):
    """Tensor data asked of a ``GGUFFile`` after ``close()``."""
