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
    """Read every key, every string, every tensor view; then validate (deep)."""
    try:
        with gguflite.open(path) as f:
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
    except FormatError:
        pass  # the one error the reader may raise on bad input
    validate(path, deep=True)
