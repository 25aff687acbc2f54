"""``gguflite``: one command, subcommands loaded lazily (``gguflite info`` never imports torch).

Exit codes: 0 success; 1 the input is invalid, a file cannot be read or written (missing,
unreadable, not a regular file, disk full) or the operation failed on it; 2 usage error
(click's convention); 128 + the signal number when interrupted (130 Ctrl-C / SIGINT, 143
SIGTERM, 129 SIGHUP), after removing any partly written output. Every failure is one line on
stderr, never a traceback (``-vv`` adds the traceback of an internal error).
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import click

from ..errors import GGUFLiteError

# command name -> "module:function", relative to gguflite.cli. Add one line per subcommand.
COMMANDS: dict[str, str] = {
    "dump": "dump:dump",
    "info": "info:info",
    "validate": "validate:validate_cmd",
    "convert": "convert:convert",
    "quantize": "quantize:quantize",
    "set-metadata": "set_metadata:set_metadata",
    "run": "run:run",
    "chat": "chat:chat",
    "perplexity": "perplexity:perplexity",
    "imatrix": "imatrix:imatrix",
    "bench": "bench:bench",
    "serve": "serve:serve",
}
_CAUGHT_SIGNALS = ("SIGTERM", "SIGHUP")  # SIGINT already raises KeyboardInterrupt
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class Terminated(BaseException):
    """SIGTERM/SIGHUP as an exception, so ``finally`` blocks and the writer's cleanup run."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signum)


def _catch_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for name in _CAUGHT_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_terminated)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (lines joined by "; ")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the file, what went wrong, and for a full disk what it means."""
    where = f"{exc.filename}: " if exc.filename else ""
    what = exc.strerror or str(exc)
    if isinstance(exc, FileNotFoundError):
        what = "no such file"
    if exc.errno in _FULL:
        what += " (the disk or the file size limit is full; nothing was written)"
    return f"{where}{what}"


_skip_teardown = False  # set by skip_teardown()


def skip_teardown() -> None:
    """Let this process end without the interpreter's teardown once the command returns.

    For ``run`` and ``chat``: freeing a loaded model, its tokenizer and Numba's registries
    object by object takes ~0.3 s of CPU, longer than generating 16 tokens. The console script
    (``LazyGroup.__call__``, never ``main`` as CliRunner calls it) then flushes stdout and
    stderr, runs the ``atexit`` handlers (the chat template renderer, a temporary Numba cache
    directory, logging) and calls ``os._exit`` with the command's exit code.
    """
    global _skip_teardown
    _skip_teardown = True


def _exit_now(code: Any) -> None:
    """``sys.exit(code)`` without the interpreter's teardown (see skip_teardown)."""
    import atexit

    if code is None:
        code = 0
    elif not isinstance(code, int):
        sys.stderr.write(f"{code}\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


class LazyGroup(click.Group):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The console script's entry: ``main``, then skip_teardown's fast exit if a command
        asked for it (only in a process of our own: no other Python thread is running)."""
        global _skip_teardown
        _skip_teardown = False  # only a command run by this very call may ask
        try:
            return self.main(*args, **kwargs)
        except SystemExit as exc:
            if (not _skip_teardown or not kwargs.get("standalone_mode", True)
                    or threading.active_count() > 1):
                raise
            _exit_now(exc.code)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"gguflite.cli.{module_name}")
        return getattr(module, attr)

    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """click's main, with its usage errors as one ``error: ...`` line too (exit 2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.ClickException as exc:
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            _fail(one_line(exc.format_message()) + hint, exc.exit_code)
        except (click.exceptions.Abort, EOFError, KeyboardInterrupt):
            _fail("interrupted", 128 + signal.SIGINT)
        sys.exit(rv if type(rv) is int else 0)  # an int only from click's Exit (--help: 0)

    def invoke(self, ctx: click.Context):
        _catch_signals()
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                SystemExit):
            raise
        except GGUFLiteError as exc:
            _fail(one_line(exc))
        except BrokenPipeError:  # `gguflite dump ... | head`: the reader left; say nothing
            try:  # so that the interpreter's final flush does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(128 + signal.SIGPIPE)
        except OSError as exc:
            _fail(os_error_line(exc))
        except MemoryError:
            _fail("out of memory (the file or the request is too large for this machine)")
        except KeyboardInterrupt:
            _fail("interrupted (SIGINT); no partly written output was left",
                  128 + signal.SIGINT)
        except Terminated as exc:
            name = signal.Signals(exc.signum).name
            _fail(f"terminated ({name}); no partly written output was left", 128 + exc.signum)
        except Exception as exc:  # noqa: BLE001 - a bug: still one line unless -vv
            if ctx.params.get("verbose", 0) >= 2:
                raise
            _fail(f"internal error, please report it: {type(exc).__name__}: {one_line(exc)} "
                  "(-vv shows the traceback)")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="gguflite")
def cli(verbose: int) -> None:
    """gguflite: inspect, validate, convert and run single-file language models."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # the package's module, not this __main__ copy (skip_teardown)
    from gguflite.cli.main import cli as _cli

    _cli()
