"""``gguflite bench``: prefill and decode throughput of a file, like llama-bench.

    gguflite bench model.gguf -p 128 -n 64 -r 5 --json
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from .run import backend_kwargs, backend_options


@click.command("bench")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("-p", "--n-prompt", type=click.IntRange(min=0), default=128, show_default=True,
              help="Prompt tokens for the prefill test (0: skip).")
@click.option("-n", "--n-gen", type=click.IntRange(min=0), default=64, show_default=True,
              help="Tokens for the decode test (0: skip).")
@click.option("-r", "--repetitions", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed repetitions of each test.")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: all cores).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--default", "use_default", is_flag=True,
              help="Use the embedded default model (also what no FILE means).")
@backend_options
def bench(file: str | None, n_prompt: int, n_gen: int, repetitions: int, threads: int | None,
          as_json: bool, use_default: bool, **kw: Any) -> None:
    """Measure pp (prefill) and tg (decode) tokens/s of FILE (default: the embedded model).

    Exit codes: 0 done; 1 the file cannot be run.
    """
    from gguflite.runtime import load
    from gguflite.runtime.bench import bench as run_bench

    if use_default and file:
        raise click.UsageError("give FILE or --default, not both")
    t0 = time.perf_counter()
    model = load(file, threads=threads, n_ctx=max(n_prompt, n_gen, 1), **backend_kwargs(kw))
    load_s = time.perf_counter() - t0
    results = run_bench(model, n_prompt=n_prompt, n_gen=n_gen, repetitions=repetitions)
    if as_json:
        click.echo(json.dumps({"file": str(model.path), "load_seconds": load_s,
                               "results": [r.as_dict() for r in results]}, indent=2))
        return
    click.echo(f"{model.path.name}: loaded in {load_s:.2f} s")
    click.echo(f"{'test':>8} {'t/s':>12}")
    for r in results:
        click.echo(f"{r.test:>8} {r.tps_mean:>8.2f} ± {r.tps_std:.2f}")
