"""Mutation property: any byte mutation or truncation of a valid file either reads back or
raises FormatError — never IndexError, struct.error, UnicodeDecodeError, a NumPy error,
RecursionError or MemoryError — and never hangs; and when it raises FormatError, the validator
reports an error for the same bytes (a validator that reported nothing would fail here).

``exercise`` (fuzz/exercise.py, the fuzz harness's own) touches everything a user can reach:
every metadata value (string arrays decoded element by element), every tensor's raw bytes and
typed view, and the validator.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from fuzz_harness import exercise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gguflite
from gguflite.validate import validate

VECTORS_DIR = Path(__file__).resolve().parents[1] / "spec" / "vectors"
SEEDS = {name: (VECTORS_DIR / f"{name}.gguf").read_bytes()
         for name in ("all_value_types", "tensors", "alignment_64", "zero_elements")}


# One scratch file, rewritten for each case (creating files is slow on some filesystems);
# in memory where the system has a tmpfs.
_SCRATCH_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
    else None
_SCRATCH = Path(tempfile.mkdtemp(prefix="gguflite-mutation-", dir=_SCRATCH_DIR)) / "m.gguf"

atexit.register(shutil.rmtree, _SCRATCH.parent, True)


def _run(data: bytes) -> None:
    _SCRATCH.write_bytes(data)
    exercise(_SCRATCH)  # the fuzz harness's work: everything readable, then a deep validation
    validate(_SCRATCH)  # the shallow validation too: it reports problems instead of raising


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_truncation(name):
    data = SEEDS[name]
    for n in range(len(data)):
        _run(data[:n])


@pytest.mark.parametrize("name", ["all_value_types", "tensors"])
def test_header_bytes_set_to_ff(name):
    """Every header byte of ``tensors``; every third of the longer ``all_value_types``."""
    data = SEEDS[name]
    with gguflite.open(VECTORS_DIR / f"{name}.gguf") as f:
        header_end = f.data_offset
    for i in range(0, header_end, 3 if name == "all_value_types" else 1):
        _run(data[:i] + b"\xff" + data[i + 1:])


# Values that make interesting counts, lengths, offsets and type ids.
_INTERESTING_U64 = [0, 1, 2, 3, 4, 8, 13, 31, 32, 63, 64, 255, 256, 65535, 65536, 1 << 30,
                    (1 << 31) - 1, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["byte", "u64", "u32", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op in ("u64", "u32"):
            v = draw(st.sampled_from(_INTERESTING_U64))
            raw = struct.pack("<Q", v)[: 8 if op == "u64" else 4]
            data[pos:pos + len(raw)] = raw
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=150, deadline=timedelta(seconds=5),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated())
def test_random_mutations(data):
    _run(data)
