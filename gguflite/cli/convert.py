"""``gguflite convert SRC -o OUT --type T``: a Hugging Face checkpoint to one gguflite file.

Exit codes: 0 written (or planned, with --dry-run); 1 the checkpoint cannot be converted (one
line on stderr, no output file); 2 usage error.
"""

from __future__ import annotations

from pathlib import Path

import click

from gguflite.converters.recipe import RECIPES  # light: no NumPy, no codecs

from ._common import echo_json
from ._split import describe_written, echo_shard_plan, split_limits, split_options


@click.command("convert")
@click.argument("src")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False),
              help="Output file (required unless --dry-run).")
@click.option("-t", "--type", "type_", type=click.Choice(RECIPES, case_sensitive=False),
              default="f16", show_default=True,
              help="Tensor type recipe. q4_k_m is llama.cpp's mix (Q6_K output and some "
                   "attn_v/ffn_down); 1-D tensors always stay F32.")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PATTERN=TYPE",
              help="Type for the tensors whose llama.cpp name matches PATTERN: a glob "
                   "(blk.*.ffn_down.weight) or, prefixed with 're:', a regex searched in the "
                   "name. Repeatable; the first match wins.")
@click.option("--output-type", help="Type of output.weight (and of a tied token_embd).")
@click.option("--embedding-type", help="Type of token_embd.weight.")
@click.option("--fallback-type",
              help="Type for every tensor whose row length does not fit the chosen type's "
                   "block size (e.g. 576-wide rows and 256-element k-quant blocks); default: "
                   "llama.cpp's per type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, ...).")
@click.option("--imatrix", type=click.Path(dir_okay=False),
              help="Importance matrix (llama.cpp imatrix GGUF, or .npz of per-column mean "
                   "squared activations keyed by tensor name) for the types that use one.")
@click.option("--revision", help="Hub revision (branch, tag or commit) when SRC is a repo id.")
@click.option("--allow-pickle", is_flag=True,
              help="Allow pytorch_model.bin weights (loaded with torch.load(weights_only=True)).")
@click.option("--name", help="general.name (default: the repo or directory name).")
@click.option("--dry-run", is_flag=True, help="Print the plan (tensor -> type, bytes in/out) "
              "and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: the plan as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@split_options
def convert(src: str, out: str | None, type_: str, tensor_types: tuple[str, ...],
            output_type: str | None, embedding_type: str | None, fallback_type: str | None,
            imatrix: str | None, revision: str | None, allow_pickle: bool, name: str | None,
            dry_run: bool, as_json: bool, no_progress: bool, split_max_size: int | None,
            split_max_tensors: int | None) -> None:
    """Convert SRC (a Hugging Face checkpoint directory or hub repo id; Llama, Mistral,
    SmolLM, TinyLlama) to one file. Everything is checked before anything is written; the
    output appears only when complete."""
    from gguflite.converters.convert import convert as run_convert
    from gguflite.converters.convert import plan_conversion

    options = dict(type=type_, tensor_types=tensor_types, output_type=output_type,
                   embedding_type=embedding_type, fallback_type=fallback_type,
                   imatrix=imatrix, allow_pickle=allow_pickle, revision=revision, name=name)
    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run")
    if dry_run:
        plan = plan_conversion(src, **options)
        if as_json:
            echo_json(plan.to_dict())
        else:
            click.echo(plan.format_table())
            echo_shard_plan(out, [t.bytes_out for t in plan.tensors], split_max_size,
                            split_max_tensors)
        return
    if not out:
        raise click.UsageError("missing -o/--output")
    written: list[Path] = []
    plan = run_convert(src, out, progress=not no_progress,
                       split=split_limits(split_max_size, split_max_tensors), outputs=written,
                       **options)
    click.echo(f"wrote {describe_written(written)}: {len(plan.tensors)} tensors "
               f"({plan.recipe.base})", err=True)
    for note in plan.notes:
        click.echo(note, err=True)
