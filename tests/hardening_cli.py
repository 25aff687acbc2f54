"""Running ``gguflite`` as a real child process for the hardening tests (issue 16).

The child gets a hard time limit (``subprocess`` timeout: a hang fails the test), an optional
address-space cap (``RLIMIT_AS``) and file-size cap (``RLIMIT_FSIZE``, a full disk without a
tmpfs), and its stderr is checked to be exactly one ``error: ...`` line.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

GIB = 1 << 30
CHILD_TIMEOUT_S = 240  # generous: a loaded 2-core machine; a hang still fails


def _limits(memory: int | None, fsize: int | None):
    def apply() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        for sig in (signal.SIGINT, signal.SIGTERM):  # a background shell may ignore them
            signal.signal(sig, signal.SIG_DFL)

    return apply


def cli_command(args: Sequence[str | bytes]) -> list[str | bytes]:
    return [sys.executable, "-m", "gguflite.cli.main", *args]


def start_cli(args: Sequence[str | bytes], *, cwd: Path, memory: int | None = None,
              fsize: int | None = None, stdin: int | None = None) -> subprocess.Popen[bytes]:
    """Start ``gguflite ARGS`` in ``cwd`` (stdout/stderr piped)."""
    return subprocess.Popen(cli_command(args), cwd=cwd, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(),
                            preexec_fn=_limits(memory, fsize))


def run_cli(args: Sequence[str | bytes], *, cwd: Path, memory: int | None = None,
            fsize: int | None = None, input: bytes | None = None,
            timeout: float = CHILD_TIMEOUT_S) -> subprocess.CompletedProcess[bytes]:
    """``gguflite ARGS`` in ``cwd`` under the given limits; returns the finished process."""
    return subprocess.run(cli_command(args), cwd=cwd, input=input, capture_output=True,
                          timeout=timeout, env=_env(), preexec_fn=_limits(memory, fsize))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          env.get("PYTHONPATH", "")])
    env["NUMBA_NUM_THREADS"] = "1"
    return env


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], code: int,
                          pattern: str) -> str:
    """stderr is exactly one ``error: ...`` line matching ``pattern``, the exit code ``code``,
    and no traceback; returns the line."""
    err = proc.stderr.decode("utf-8", "replace")
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == code, (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files of gguflite's writer in ``folder`` (there must be none)."""
    return sorted(p.name for p in folder.iterdir() if ".gguflite-" in p.name
                  or p.name.endswith(".tmp"))
