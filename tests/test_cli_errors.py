"""Every subcommand on a file that is not a model: one ``error:`` line naming the file, exit 1,
no traceback (tests/cli_helpers.py checks all of it). ``validate`` is the exception by design:
it reports each file it was given (tests/test_cli_inspect.py)."""

from __future__ import annotations

import pytest
from cli_helpers import assert_user_error

from gguflite.cli.main import COMMANDS

# subcommand -> its arguments after the garbage FILE ({out}: an output path, {text}: a text file)
ARGS = {
    "dump": [],
    "info": [],
    "convert": ["-o", "{out}"],  # a file where a checkpoint directory is expected
    "quantize": ["{out}", "--type", "q8_0", "--no-progress"],
    "set-metadata": ["general.name=x"],
    "run": ["-p", "hello", "-n", "2"],
    "chat": ["-n", "2"],  # the turns come from stdin
    "perplexity": ["--text", "{text}"],
    "imatrix": ["--text", "{text}", "-o", "{out}"],
    "bench": ["-p", "4", "-n", "2", "-r", "1"],
}


def test_every_subcommand_is_listed():
    assert set(ARGS) | {"validate"} == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(ARGS))
def test_garbage_file_is_one_error_line(tmp_path, command):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a model file at all\n" * 10)
    text = tmp_path / "text.txt"
    text.write_text("the sea is blue and the sky is far " * 40, encoding="utf-8")
    out = tmp_path / "out.gguf"
    args = [a.format(out=out, text=text) for a in ARGS[command]]
    words = ["checkpoint directory"] if command == "convert" else ["[V1]", "not a GGUF file"]
    assert_user_error(command, garbage, *args, input="hello\n", words=words)
    assert not out.exists()
