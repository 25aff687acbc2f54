"""``--split-max-size`` / ``--split-max-tensors`` for the commands that write a model file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._common import human_bytes


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    from ..split import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def split_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the two split options (parameters ``split_max_size``, ``split_max_tensors``)."""
    f = click.option("--split-max-tensors", type=click.IntRange(min=1), metavar="N",
                     help="Split the output into shards of at most N tensors each.")(f)
    return click.option(
        "--split-max-size", metavar="SIZE", callback=_size,
        help="Split the output into shards NAME-00001-of-0000N.gguf (llama.cpp's split "
             "format; load the first) of at most SIZE bytes of tensor data each: 2G, 500M, "
             "100K (powers of 1000, as llama-gguf-split). A single shard is written as a "
             "plain file.")(f)


def split_limits(max_size: int | None, max_tensors: int | None) -> Any:
    """The ``SplitLimits`` for the options (no limits: one plain file)."""
    from ..split import SplitLimits

    return SplitLimits(max_size=max_size, max_tensors=max_tensors)


def describe_written(paths: list[Path]) -> str:
    """``out.gguf (12.3 MiB)`` or ``3 shards m-00001-of-00003.gguf .. m-00003-of-00003.gguf``."""
    total = human_bytes(sum(p.stat().st_size for p in paths))
    if len(paths) == 1:
        return f"{paths[0]} ({total})"
    return f"{len(paths)} shards {paths[0]} .. {paths[-1].name} ({total})"


def echo_shard_plan(out: str | None, nbytes: list[int], max_size: int | None,
                    max_tensors: int | None) -> None:
    """``--dry-run``: the shards the limits give for tensors of ``nbytes`` (nothing if one)."""
    from ..split import SplitLimits, plan_shards, shard_path

    groups = plan_shards(nbytes, SplitLimits(max_size=max_size, max_tensors=max_tensors))
    n = len(groups)
    if n <= 1:
        return
    for k, g in enumerate(groups, 1):
        name = shard_path(out, k, n).name if out else f"shard {k}/{n}"
        click.echo(f"{name}: {len(g)} tensors, {sum(nbytes[i] for i in g):,} bytes")
