"""``gguflite validate FILE...``: check files against spec/gguflite-v1.md.

Exit codes: 0 every file is valid (warnings allowed); 1 a file has an error or cannot be
opened; 2 usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..validate import Report, validate
from ._common import default_option, echo_json, resolve_paths


@click.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=True))
@default_option
@click.option("--deep", is_flag=True, help="Also decode all tensor data and report NaN/Inf "
              "(rule V24); reads the whole file.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as a JSON list.")
@click.option("-q", "--quiet", is_flag=True, help="Only the one-line summary per file.")
def validate_cmd(files: tuple[str, ...], use_default: bool, deep: bool, as_json: bool,
                 quiet: bool) -> None:
    """Check FILE(s) against every rule of the gguflite v1 spec; errors and warnings are
    reported with their rule number (V1...). Exit 0 valid, 1 invalid, 2 usage."""
    paths = resolve_paths(files, use_default, many=True)
    reports: list[Report] = []
    for path in paths:
        try:
            reports.append(validate(path, deep=deep))
        except OSError as exc:  # missing, unreadable, a directory: report it, go on
            r = Report(str(path), deep=deep)
            r.error("IO", f"cannot open: {exc.strerror or exc}")
            reports.append(r)
    if as_json:
        echo_json([r.to_dict() for r in reports])
    else:
        for r in reports:
            click.echo(r.summary())
            if not quiet:
                for finding in r.findings:
                    click.echo(f"  {finding}")
    _note_stale_temp_files(paths)
    sys.exit(0 if all(r.ok for r in reports) else 1)


def _note_stale_temp_files(paths: list[Path]) -> None:
    """Temporary files left by writers that were killed outright (SIGKILL, power loss) next to
    the validated files: named on stderr (the next write in that folder removes them)."""
    from ..writer import stale_temp_files

    for folder in dict.fromkeys(p.resolve().parent for p in paths):
        stale = stale_temp_files(folder)
        if stale:
            names = ", ".join(p.name for p in stale[:3]) + (" ..." if len(stale) > 3 else "")
            click.echo(f"note: {folder} holds {len(stale)} temporary file(s) of killed gguflite "
                       f"writers ({names}); the next gguflite write there removes them",
                       err=True)
