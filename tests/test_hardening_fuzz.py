"""The tokenizer/chat-template fuzz harness (issue 16, point 8): a bounded atheris run, and the
same per-input work replayed on fixed inputs (no atheris process, so a failure shows a
traceback)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _exercise():
    spec = importlib.util.spec_from_file_location("gguflite_fuzz_tokenizer_exercise",
                                                  ROOT / "fuzz" / "tokenizer_exercise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("data", [
    b"",
    bytes(range(256)) * 4,
    bytes(range(255, -1, -1)) * 4,
    b"\x01" * 600 + b"{% for m in messages %}{{ m.content }}{% endfor %}" * 3,
    b"\x00\xff" * 700,
])
def test_tokenizer_exercise_replays(tmp_path, data):
    module = _exercise()
    module.exercise_tokenizer(data, tmp_path / "tok.gguf")


def test_a_written_tokenizer_file_loads(tmp_path):
    """The input decoding really produces tokenizer files (the harness is not a no-op)."""
    import gguflite

    module = _exercise()
    made = module.write_tokenizer_file(bytes(range(256)) * 4, tmp_path / "tok.gguf")
    assert made is not None
    with gguflite.open(tmp_path / "tok.gguf") as f:
        assert f.metadata["tokenizer.ggml.model"] in ("llama", "gpt2")
        assert len(f.metadata["tokenizer.ggml.tokens"]) >= 1


def test_tokenizer_fuzz_harness_bounded_run(tmp_path):
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_tokenizer.py"), "-max_total_time=8", "-seed=1",
         "-timeout=30", "-rss_limit_mb=3000", "-print_final_stats=1", str(scratch)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    runs = re.search(r"Done (\d+) runs", proc.stderr)
    assert runs and int(runs.group(1)) > 100, tail
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))


def test_tokenizer_fuzz_regression_rust_panic(tmp_path):
    """A vocabulary the fuzzer found whose merges make the ``tokenizers`` library panic in Rust
    (pyo3's PanicException, a BaseException): loading it is a ModelError naming the merges,
    and the harness's exercise runs through it."""
    import gguflite
    from gguflite.errors import ModelError
    from gguflite.runtime.tokenizer import Tokenizer

    data = bytes.fromhex("ff06000230ff0230fffffffffd0606060606060600")
    module = _exercise()
    assert module.write_tokenizer_file(data, tmp_path / "tok.gguf") is not None
    with gguflite.open(tmp_path / "tok.gguf") as f, pytest.raises(ModelError,
                                                                   match="merges"):
        Tokenizer.from_metadata(f.metadata)
    module.exercise_tokenizer(data, tmp_path / "again.gguf")
