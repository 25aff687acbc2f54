"""The Python and compiled string-array scans are twins: same offsets, same failures."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from fuzz_harness import FUZZ, exercise

import gguflite
from gguflite import GGUFValueType as T
from gguflite import GGUFWriter, reader
from gguflite._scan import scan_string_array
from gguflite.errors import TruncatedError

STRINGS = ["", "a", "héllo", "🙂" * 5, "x" * 300, "\n\t "]


def _encoded(strings: list[str]) -> bytes:
    return b"".join(struct.pack("<Q", len(s.encode())) + s.encode() for s in strings)


@pytest.mark.parametrize("cut", [None, 0, 3, 8, 9, 20, -1])  # None: whole; else truncated
def test_python_and_compiled_scans_agree(cut):
    data = b"PAD" + _encoded(STRINGS)
    if cut is not None:
        data = data[:cut if cut >= 0 else len(data) + cut]
    buf = memoryview(data)
    py = reader._scan_string_array_py(buf, len(data), 3, len(STRINGS))
    nb = scan_string_array(np.frombuffer(data, np.uint8), 3, len(STRINGS))
    assert (py[1], py[2]) == (nb[1], nb[2])  # failed element and its offset
    if py[1] < 0:
        np.testing.assert_array_equal(py[0], nb[0])


@pytest.mark.parametrize("first_length", [1 << 63, (1 << 64) - 1, 1 << 40])
def test_huge_length_prefix_is_a_truncation_not_an_overflow(first_length):
    # regression (found by fuzz/fuzz_open.py): a huge length made the unchecked Python loop
    # overflow the int64 offset array instead of reporting rule V3
    data = b"PAD" + struct.pack("<Q", first_length) + _encoded(STRINGS)
    py = reader._scan_string_array_py(memoryview(data), len(data), 3, 4)
    nb = scan_string_array(np.frombuffer(data, np.uint8), 3, 4)
    assert (py[1], py[2]) == (nb[1], nb[2]) == (0, 3)


@pytest.mark.parametrize("threshold", [1, 1 << 30])  # compiled scan always / never
def test_both_paths_read_the_same_file(tmp_path, monkeypatch, threshold):
    monkeypatch.setattr(reader, "COMPILED_SCAN_MIN_COUNT", threshold)
    path = tmp_path / "s.gguf"
    with GGUFWriter(path) as w:
        w.add("x.strings", STRINGS, T.ARRAY, T.STRING)
        w.add("x.after", 7, T.UINT32)
    with gguflite.open(path) as f:
        assert f.metadata["x.strings"].tolist() == STRINGS
        assert f.metadata["x.after"] == 7
    raw = path.read_bytes()
    (tmp_path / "t.gguf").write_bytes(raw[:raw.index(b"x" * 300) + 10])
    with pytest.raises(TruncatedError, match="string element 4"):
        gguflite.open(tmp_path / "t.gguf")


REGRESSIONS = sorted((FUZZ / "regressions").iterdir())


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_fuzz_regressions_raise_only_format_errors(path):
    # each of these inputs once crashed the harness (fuzz/README.md says how); replay exactly
    # what the harness does: every key, string and tensor view, then a deep validation
    exercise(path)  # ends with validate(path, deep=True): findings, never an exception
