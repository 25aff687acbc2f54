"""atheris harness: fuzz-built tokenizer metadata + chat template -> the runtime's tokenizer
and template rendering (fuzz/tokenizer_exercise.py says what it checks).

    mkdir -p /tmp/tok-corpus
    python fuzz/fuzz_tokenizer.py -max_total_time=60 -max_len=4096 -timeout=30 /tmp/tok-corpus

See fuzz/README.md. The -timeout must exceed the renderer's 5 s time limit.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gguflite"]):
    import gguflite  # noqa: F401
    import gguflite.runtime.chat  # noqa: F401
    import gguflite.runtime.tokenizer  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_exercise import exercise_tokenizer  # noqa: E402

_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
_SCRATCH = Path(tempfile.mkdtemp(prefix="gguflite-fuzz-tok-", dir=_DIR)) / "tokenizer.gguf"


def test_one_input(data: bytes) -> None:
    exercise_tokenizer(data, _SCRATCH)


def main() -> None:
    logging.disable(logging.WARNING)  # "renamed empty tokens" warnings, thousands of them
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
