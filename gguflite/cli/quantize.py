"""``gguflite quantize IN OUT --type T``: requantize any readable file, keeping its metadata.

Exit codes: 0 written; 1 the input cannot be read or requantized (no output file); 2 usage.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import echo_json
from ._split import describe_written, echo_shard_plan, split_limits, split_options
from .convert import RECIPES


@click.command("quantize")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False), required=False)
@click.option("-t", "--type", "type_", type=click.Choice(RECIPES, case_sensitive=False),
              required=True, help="Tensor type recipe (as for convert); 1-D tensors are kept.")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PATTERN=TYPE",
              help="Type for tensors matching PATTERN (glob, or 're:' + regex). Repeatable.")
@click.option("--output-type", help="Type of output.weight (and of a tied token_embd).")
@click.option("--embedding-type", help="Type of token_embd.weight.")
@click.option("--fallback-type",
              help="Type for every tensor whose row length does not fit the chosen type's "
                   "block size (e.g. 576-wide rows and 256-element k-quant blocks); default: "
                   "llama.cpp's per type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, ...).")
@click.option("--imatrix", type=click.Path(dir_okay=False),
              help="Importance matrix (imatrix GGUF or .npz) for the types that use one.")
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@split_options
def quantize(src: str, out: str | None, type_: str, tensor_types: tuple[str, ...],
             output_type: str | None, embedding_type: str | None, fallback_type: str | None,
             imatrix: str | None, dry_run: bool, as_json: bool, no_progress: bool,
             split_max_size: int | None, split_max_tensors: int | None) -> None:
    """Requantize SRC into OUT. Tensors whose type does not change are copied byte for byte;
    the rest are decoded (any type gguflite reads, e.g. Q4_1, Q5_0, Q2_K) and encoded again.
    All metadata is kept; general.file_type is updated."""
    from gguflite.converters.requantize import requantize

    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run")
    if not dry_run and not out:
        raise click.UsageError("missing OUT")
    written: list[Path] = []
    entries = requantize(src, out or "", type=type_, tensor_types=tensor_types,
                         output_type=output_type, embedding_type=embedding_type,
                         fallback_type=fallback_type, imatrix=imatrix, dry_run=dry_run,
                         progress=not no_progress and not dry_run,
                         split=split_limits(split_max_size, split_max_tensors), outputs=written)
    if dry_run:
        if as_json:
            echo_json([e.to_dict() for e in entries])
            return
        w = max(len(e.name) for e in entries) if entries else 6
        for e in entries:
            click.echo(f"{e.name:<{w}}  {e.src_type:<6} -> {e.type:<6} {e.bytes_in:>12,} "
                       f"{e.bytes_out:>12,}  {'copy' if e.copied else e.reason}")
        click.echo(f"{len(entries)} tensors, {sum(e.bytes_in for e in entries):,} -> "
                   f"{sum(e.bytes_out for e in entries):,} bytes")
        echo_shard_plan(out, [e.bytes_out for e in entries], split_max_size, split_max_tensors)
        return
    click.echo(f"wrote {describe_written(written)}: {len(entries)} tensors", err=True)
