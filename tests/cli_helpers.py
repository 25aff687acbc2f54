"""One way to run the CLI in a test and to check a user error.

A user error (house style, CLI): a non-zero exit, exactly one line on stderr that starts with
``error: ``, and never a traceback. :func:`assert_user_error` checks all of it, for every
subcommand, so a test cannot pass on a substring of a traceback or on a second line of noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from click.testing import CliRunner, Result

from gguflite.cli.main import cli


def invoke(*args: str | Path, input: str | None = None) -> Result:
    """Run ``gguflite ARGS`` in-process; stdout and stderr are kept apart (click >= 8.2)."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def assert_ok(*args: str | Path, input: str | None = None) -> Result:
    """Run ``gguflite ARGS`` and assert exit 0; the failure shows stdout, stderr and the
    exception (an uncaught one included)."""
    res = invoke(*args, input=input)
    assert res.exit_code == 0 and res.exception is None, _describe(args, res)
    return res


def assert_user_error(*args: str | Path, words: Iterable[str] = (), code: int = 1,
                      input: str | None = None) -> str:
    """Run ``gguflite ARGS`` and assert it fails as a user error.

    Checks: exit ``code`` (1: the input is invalid; 2: usage, click's convention), the process
    ended by ``sys.exit`` (an uncaught exception is a bug even when the exit code is 1),
    stderr is exactly one line and it starts with ``error: `` (usage errors too: the CLI
    turns click's several lines into one), no ``Traceback`` anywhere, and each of ``words``
    appears in that line (case-insensitive).

    Returns
    -------
    str
        The error line, without the ``error: `` prefix.
    """
    res = invoke(*args, input=input)
    why = _describe(args, res)
    assert res.exit_code == code, why
    assert isinstance(res.exception, SystemExit), why  # not an uncaught exception
    assert "Traceback" not in res.stdout + res.stderr, why
    lines = res.stderr.strip("\n").splitlines()
    assert len(lines) == 1, why
    assert lines[0].startswith("error: "), why
    line = lines[0][len("error: "):]
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in the error line\n{why}"
    return line


def _describe(args: tuple, res: Result) -> str:
    return (f"gguflite {' '.join(str(a) for a in args)}\nexit {res.exit_code}, "
            f"exception {res.exception!r}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}")
