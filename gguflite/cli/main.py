"""``gguflite``: one command, subcommands loaded lazily (``gguflite info`` never imports torch).

Exit codes: 0 success; 1 the input is invalid or the operation failed on it (one clear line on
stderr); 2 usage error (click's convention).
"""

from __future__ import annotations

import importlib
import logging
import sys

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


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"gguflite.cli.{module_name}")
        return getattr(module, attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GGUFLiteError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except FileNotFoundError as exc:
            click.echo(f"error: {exc.filename or exc}: no such file", err=True)
            sys.exit(1)
        except (IsADirectoryError, PermissionError) as exc:
            click.echo(f"error: {exc.filename or exc}: {exc.strerror}", err=True)
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="gguflite")
def cli(verbose: int) -> None:
    """gguflite: inspect, validate, convert and run single-file language models."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    cli()
