"""``gguflite set-metadata FILE KEY=VALUE...``: typed, validated metadata edits.

Exit codes: 0 written; 1 an edit is invalid or the file cannot be read (nothing written);
2 usage error.
"""

from __future__ import annotations

from pathlib import Path

import click


def _split(spec: str, option: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise click.UsageError(f"{option} {spec!r}: expected KEY=VALUE")
    return key, value


@click.command("set-metadata")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--type", "type_specs", multiple=True, metavar="KEY=TYPE",
              help="Type of KEY: u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool str, or [T] for an "
                   "array given as a JSON list. Default: the key's existing type, else the "
                   "key registry's type; new unknown keys need it.")
@click.option("--metadata-file", "file_specs", multiple=True, metavar="KEY=PATH",
              help="Read KEY's value from the UTF-8 text file PATH (e.g. a chat template).")
@click.option("--remove", "remove", multiple=True, metavar="KEY", help="Remove KEY.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False),
              help="Write a new file instead of replacing FILE (in place is atomic too).")
def set_metadata(file: str, assignments: tuple[str, ...], type_specs: tuple[str, ...],
                 file_specs: tuple[str, ...], remove: tuple[str, ...], out: str | None) -> None:
    """Set metadata KEY=VALUE pairs in FILE (or remove keys), typed and validated, written
    atomically; tensor bytes are copied, never decoded."""
    from gguflite.converters.edit import set_metadata as run

    values: dict[str, str] = {}
    for spec in assignments:
        key, value = _split(spec, "KEY=VALUE")
        values[key] = value
    for spec in file_specs:
        key, path = _split(spec, "--metadata-file")
        try:
            values[key] = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise click.UsageError(f"--metadata-file {path}: not UTF-8 text") from None
    if not values and not remove:
        raise click.UsageError("nothing to do: give KEY=VALUE, --metadata-file or --remove")
    types = dict(_split(s, "--type") for s in type_specs)
    done = run(file, values, types=types, remove=remove, out=out)
    for key, what in done.items():
        click.echo(f"set {key}: {what}", err=True)
    for key in remove:
        click.echo(f"removed {key}", err=True)
