"""``gguflite perplexity``: perplexity of a text with llama.cpp's definition, optionally KL
divergence and top-1 agreement against a reference file (``--kl-base``).

    gguflite perplexity model-q4.gguf --text wiki.test.raw --ctx 512
    gguflite perplexity model-q4.gguf --text wiki.test.raw --kl-base model-f16.gguf --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import GGUFLiteError
from .run import backend_kwargs, backend_options


@click.command("perplexity")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--text", "text_file", required=True, type=click.Path(dir_okay=False),
              help="UTF-8 text file to score.")
@click.option("-c", "--ctx", type=click.IntRange(min=4), default=512, show_default=True,
              help="Chunk length; the second half of each chunk is scored.")
@click.option("--chunks", type=click.IntRange(min=1), default=None,
              help="Score at most this many chunks (default: all).")
@click.option("--kl-base", type=click.Path(dir_okay=False), default=None,
              help="Reference model file: also report KL divergence and top-1 agreement.")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@backend_options
def perplexity(file: str, text_file: str, ctx: int, chunks: int | None, kl_base: str | None,
               threads: int | None, as_json: bool, **kw: Any) -> None:
    """Perplexity of FILE on the text in --text (llama.cpp's chunked definition).

    Exit codes: 0 done; 1 bad file, text too short for 2 chunks, or a vocabulary mismatch.
    """
    from gguflite.runtime import load
    from gguflite.runtime.perplexity import perplexity as run_ppl

    try:
        text = Path(text_file).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise GGUFLiteError(f"{text_file}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from None
    model = load(file, threads=threads, n_ctx=ctx, **backend_kwargs(kw))
    base = load(kl_base, threads=threads, n_ctx=ctx, **backend_kwargs(kw)) if kl_base else None

    def progress(done: int, total: int, ppl: float) -> None:
        if not as_json:
            click.echo(f"[{done}/{total}] {ppl:.4f}", err=True)

    r = run_ppl(model, text, ctx=ctx, n_chunks=chunks, base=base, progress=progress)
    if as_json:
        click.echo(json.dumps({"file": file, "text": text_file, "kl_base": kl_base}
                              | r.as_dict(), indent=2))
        return
    click.echo(f"PPL = {r.ppl:.4f} +/- {r.ppl_stderr:.5f}  ({r.n_chunks} chunks of {ctx}, "
               f"{r.n_scored} tokens scored, {r.tokens_per_second:.1f} tok/s)")
    if base is not None:
        click.echo(f"PPL(base) = {r.ppl_base:.4f}  KLD = {r.kld_mean:.6f} +/- "
                   f"{r.kld_stderr:.6f} (max {r.kld_max:.4f})  same top = "
                   f"{100 * r.same_top:.2f} %")
