"""Every CLI failure is one line on stderr with the documented exit code (issue 16, point 5):
bad sampler values and invalid UTF-8 are usage errors (2), input that cannot be read or run is
1, and nothing prints a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hardening_cli import assert_one_line_error, run_cli
from tiny_models import make_tiny_llama

from gguflite.cli.main import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("cli") / "tiny.gguf")
    return path


def _one_line(res, code: int, pattern: str) -> None:
    import re

    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == code, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("command", ["run", "chat"])
@pytest.mark.parametrize("option, value, pattern", [
    ("--temp", "nan", r"'--temp': 'nan' is not a finite number"),
    ("--temp", "inf", r"'--temp': 'inf' is not a finite number"),
    ("--repeat-penalty", "0", r"'--repeat-penalty': 0 must be > 0"),
    ("--repeat-penalty", "-1", r"'--repeat-penalty': -1 must be > 0"),
    ("--seed", "-1", r"'--seed': -1 is not in the range x>=0"),
    ("--stop", "", r"'--stop': a stop string cannot be empty"),
    ("--top-p", "2", r"'--top-p': 2 must be >= 0 and <= 1"),
    ("--min-p", "2", r"'--min-p': 2 must be >= 0 and <= 1"),
    ("--min-p", "nan", r"'--min-p': 'nan' is not a finite number"),
    ("--system", "a\udcffb", r"'--system': not valid UTF-8"),  # argv bytes 0xFF, as Python
])                                                             # decodes them
def test_bad_sampler_values_are_usage_errors(tiny, command, option, value, pattern):
    args = [command, str(tiny), option, value]
    if command == "run":
        args += ["-p", "hi"]
    _one_line(CliRunner().invoke(cli, args), 2, pattern)


def test_invalid_utf8_prompt_in_argv(tiny, tmp_path):
    proc = run_cli([b"run", str(tiny).encode(), b"-p", b"caf\xe9 \xff", b"-n", b"1"],
                   cwd=tmp_path)
    assert_one_line_error(proc, 2, r"'-p' / '--prompt': not valid UTF-8 text")


def test_invalid_utf8_on_chat_stdin(tiny, tmp_path):
    proc = run_cli(["chat", str(tiny), "-n", "1", "-t", "1"], cwd=tmp_path,
                   input=b"hello\n\xff\xfe broken\n")
    assert_one_line_error(proc, 1, r"stdin line 2 is not valid UTF-8")


@pytest.mark.parametrize("args", [
    ["info", "missing.gguf"],
    ["run", "missing.gguf", "-p", "hi"],
    ["quantize", "missing.gguf", "out.gguf", "--type", "q8_0"],
    ["set-metadata", "missing.gguf", "general.name=x"],
    ["quantize", "{tiny}", "out.gguf", "--type", "q4_k", "--imatrix", "missing.npz"],
])
def test_a_file_that_cannot_be_read_is_exit_1(tiny, tmp_path, args):
    args = [a.format(tiny=tiny) for a in args]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    _one_line(res, 1, r"missing\.(gguf|npz): no such file")
    assert not (tmp_path / "out.gguf").exists()


def test_an_internal_error_is_one_line_unless_verbose(tiny, monkeypatch):
    """A bug (here: an injected RuntimeError where info opens the file) is still one line."""
    from gguflite import reader

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(reader, "open", broken)
    res = CliRunner().invoke(cli, ["info", str(tiny)])
    _one_line(res, 1, r"internal error, please report it: RuntimeError: simulated bug; "
                      r"second line \(-vv shows the traceback\)")
    res = CliRunner().invoke(cli, ["-vv", "info", str(tiny)])
    assert isinstance(res.exception, RuntimeError)  # -vv: the traceback is shown
