"""atheris harness: arbitrary bytes -> gguflite.open + full read + validate.

Only ``FormatError`` may escape the reader, and the validator must turn every problem into a
finding (it raises nothing). Anything else — IndexError, struct.error, UnicodeDecodeError, a
NumPy error, RecursionError, MemoryError, a hang — is a bug, and atheris stops with the input
saved as ``crash-<sha1>``.

    python fuzz/fuzz_open.py fuzz/corpus                       # run until stopped
    python fuzz/fuzz_open.py -runs=20000 fuzz/corpus           # bounded
    python fuzz/fuzz_open.py -max_total_time=20 -timeout=10 fuzz/corpus

Every gguflite module the harness reaches is instrumented for coverage (reader, metadata,
validator, finite check, key registry, the codecs' NumPy code), except the modules of Numba
kernels: their bytecode is compiled by Numba, which cannot compile atheris' coverage hooks
(and the kernels run as machine code, where Python coverage sees nothing anyway).

See fuzz/README.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

# Modules holding @njit kernels: not instrumented (see the docstring).
NUMBA_MODULES = [
    "gguflite._scan",
    "gguflite.quants._legacy_kernels",
    "gguflite.quants._numba_common",
    "gguflite.quants.km_numba",
    "gguflite.quants.kquants_numba",
    "gguflite.quants.ternary",
]

with atheris.instrument_imports(include=["gguflite"], exclude=NUMBA_MODULES):
    import gguflite  # noqa: F401  (instrumented before exercise imports it)
    import gguflite.finite  # noqa: F401
    import gguflite.keys  # noqa: F401
    import gguflite.quants  # noqa: F401
    import gguflite.quants.km  # noqa: F401
    import gguflite.validate  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from exercise import exercise  # noqa: E402

# One scratch file, rewritten for every input: the reader works on files (it memory-maps).
_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
_SCRATCH = Path(tempfile.mkdtemp(prefix="gguflite-fuzz-", dir=_DIR)) / "input.gguf"


def test_one_input(data: bytes) -> None:
    _SCRATCH.write_bytes(data)
    exercise(_SCRATCH)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
