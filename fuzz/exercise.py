"""What the fuzz harness does with one input; shared with the regression tests (no atheris).

Only ``FormatError`` may escape the reader, and the validator must turn every problem into a
finding (it raises nothing). For every tensor of a type gguflite decodes, the first blocks are
decoded by the codec's NumPy reference and by its fast (Numba) path: they must agree bit for
bit (NaN where NaN), whatever the bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import gguflite
from gguflite import quants
from gguflite.constants import GGML_TYPE_TRAITS
from gguflite.errors import FormatError, UnsupportedTypeError
from gguflite.metadata import StringArray
from gguflite.validate import validate

_BLOCKS = 4  # blocks per tensor compared reference vs fast (the validator decodes them all)


def _compare_codecs(f: gguflite.GGUFFile, name: str) -> None:
    ti = f.tensors[name]
    try:
        codec = quants.get_codec(ti.type)
    except UnsupportedTypeError:
        return
    _, type_size = GGML_TYPE_TRAITS[ti.type]
    n = min(ti.nbytes // type_size, _BLOCKS)
    if n == 0:
        return
    blocks = f.raw(name)[: n * type_size].reshape(n, type_size)  # (n, type_size) uint8
    ref = np.asarray(codec.dequantize_blocks(blocks), dtype=np.float32)  # (n, block_size)
    fast = np.asarray(codec.dequantize_blocks_fast(blocks), dtype=np.float32)
    if not np.array_equal(ref, fast, equal_nan=True):
        bad = int(np.flatnonzero(~((ref == fast) | (np.isnan(ref) & np.isnan(fast))))[0])
        raise AssertionError(f"{ti.type.name} tensor {name!r}: reference and fast decode "
                             f"differ at value {bad}: {ref.reshape(-1)[bad]!r} vs "
                             f"{fast.reshape(-1)[bad]!r}")


def exercise(path: Path) -> None:
    """Read every key, every string, every tensor view; compare codecs; validate (deep).

    A validator that reports nothing would pass a crash-only check, so the reader and the
    validator must also agree: when reading raises a FormatError, ``validate(deep=True)``
    reports an error for the same bytes, and when ``open`` itself raises, so does the shallow
    ``validate``. Raises AssertionError naming both otherwise.
    """
    raised: FormatError | None = None
    opened = False
    try:
        with gguflite.open(path) as f:
            opened = True
            for key in f.metadata:
                value = f.metadata[key]
                if isinstance(value, StringArray):
                    for s in value:
                        len(s)
                elif hasattr(value, "tolist"):
                    value.tolist()
            for name in f.tensors:
                f.raw(name).sum()
                f.array(name)
                _compare_codecs(f, name)
    except FormatError as exc:  # the one error the reader may raise on bad input
        raised = exc
    report = validate(path, deep=True)
    if raised is not None and report.ok:
        raise AssertionError(f"reading raised {raised!r} but validate(deep=True) reports no "
                             f"error: {report.summary()}")
    if raised is not None and not opened and validate(path).ok:
        raise AssertionError(f"open raised {raised!r} but validate() reports no error")
