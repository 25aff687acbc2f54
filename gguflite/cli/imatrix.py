"""``gguflite imatrix FILE --text F -o OUT``: an importance matrix from a calibration text.

    gguflite imatrix model-f16.gguf --text calibration.txt -o imatrix.gguf --ctx 512
    gguflite quantize model-f16.gguf model-q4_k_m.gguf --type q4_k_m --imatrix imatrix.gguf

The output is llama.cpp's imatrix GGUF (converters/imatrix.py), so llama.cpp's tools read it
and ``gguflite quantize/convert --imatrix`` take it. Statistics: runtime/imatrix.py.

Exit codes: 0 written; 1 bad model file, text too short for 2 chunks, or not UTF-8.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import GGUFLiteError


@click.command("imatrix")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--text", "text_file", required=True, type=click.Path(dir_okay=False),
              help="UTF-8 calibration text.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the imatrix GGUF.")
@click.option("-c", "--ctx", type=click.IntRange(min=4), default=512, show_default=True,
              help="Chunk length in tokens (each chunk starts from an empty cache).")
@click.option("--chunks", type=click.IntRange(min=1), default=None,
              help="Use at most this many chunks (default: all).")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: all cores).")
def imatrix(file: str, text_file: str, output: str, ctx: int, chunks: int | None,
            threads: int | None) -> None:
    """Collect per-column mean squared activations of every block weight of FILE over the
    text in --text, and write them to --output."""
    from gguflite.runtime import load
    from gguflite.runtime.imatrix import collect_imatrix

    try:
        text = Path(text_file).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GGUFLiteError(f"{text_file}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from None
    with load(file, threads=threads, n_ctx=ctx) as model:
        def progress(done: int, total: int) -> None:
            click.echo(f"[{done}/{total}]", err=True)

        stats = collect_imatrix(model, text, ctx=ctx, n_chunks=chunks,
                                dataset=Path(text_file).name, progress=progress)
    stats.save(output)
    click.echo(f"wrote {output}: {len(stats.tensor_stats())} tensors, {stats.chunk_count} "
               f"chunks of {ctx} tokens, {stats.seconds:.1f} s", err=True)
