"""What the fuzz harness does with one input; shared with the regression tests (no atheris).

Only ``FormatError`` may escape the reader, and the validator must turn every problem into a
finding (it raises nothing).
"""

from __future__ import annotations

from pathlib import Path

import gguflite
from gguflite.errors import FormatError
from gguflite.metadata import StringArray
from gguflite.validate import validate


def exercise(path: Path) -> None:
    """Read every key, every string, every tensor view; then validate (deep).

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
    except FormatError as exc:  # the one error the reader may raise on bad input
        raised = exc
    report = validate(path, deep=True)
    if raised is not None and report.ok:
        raise AssertionError(f"reading raised {raised!r} but validate(deep=True) reports no "
                             f"error: {report.summary()}")
    if raised is not None and not opened and validate(path).ok:
        raise AssertionError(f"open raised {raised!r} but validate() reports no error")
