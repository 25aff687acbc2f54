"""``gguflite run``: generate text from a model file, streamed to stdout.

    gguflite run -p "Write a haiku about the sea." -n 48 --seed 0      # the default model
    gguflite run model.gguf -p "Once upon a time" --raw --temp 0

Timings (prefill and decode tokens/s) go to stderr at the end.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import GGUFLiteError


class FiniteFloat(click.ParamType):
    """A finite float (``nan``/``inf`` refused) in [lo, hi]; ``lo_open``: lo itself refused."""

    name = "float"

    def __init__(self, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low_bad = self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo))
        if low_bad or (self.hi is not None and x > self.hi):
            lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
            hi = "" if self.hi is None else f"<= {self.hi:g}"
            self.fail(f"{x:g} must be {' and '.join(p for p in (lo, hi) if p)}", param, ctx)
        return x


def utf8_text(what: str, text: str) -> str:
    """``text`` if it encodes as UTF-8; invalid bytes from argv or stdin arrive as lone
    surrogates (Python's surrogateescape) and are refused here, naming ``what``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GGUFLiteError(f"{what} is not valid UTF-8 (byte {exc.start} of the text); give "
                            "UTF-8 text") from None
    return text


def utf8_option(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback: the option's text (or each of its texts) must be valid, non-empty for --stop."""
    texts = value if isinstance(value, tuple) else (value,)
    for text in texts:
        if text is None:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise click.BadParameter("not valid UTF-8 text", ctx, param) from None
        if param.name == "stop" and not text:
            raise click.BadParameter("a stop string cannot be empty", ctx, param)
    return value


def sampling_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The sampler and context options shared by ``run`` and ``chat``."""
    options = [
        click.option("-n", "--max-tokens", "max_tokens", type=click.IntRange(min=0),
                     default=128, show_default=True, help="Most tokens to generate."),
        click.option("--temp", "temperature", type=FiniteFloat(), default=0.8,
                     show_default=True, help="Sampling temperature; <= 0 is greedy."),
        click.option("--top-k", type=int, default=40, show_default=True,
                     help="Keep the k most likely tokens (<= 0: all)."),
        click.option("--top-p", type=FiniteFloat(0.0, 1.0), default=0.95, show_default=True,
                     help="Nucleus sampling mass, 0..1 (1: off)."),
        click.option("--min-p", type=FiniteFloat(0.0, 1.0), default=0.05, show_default=True,
                     help="Drop tokens less likely than min_p times the best, 0..1 (0: off)."),
        click.option("--repeat-penalty", type=FiniteFloat(0.0, lo_open=True), default=1.0,
                     show_default=True, help="Penalty (> 0) for tokens among the last 64 "
                     "(1: off)."),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Random seed, >= 0 (default: a fresh one each run)."),
        click.option("--stop", multiple=True, callback=utf8_option,
                     help="Stop string, non-empty (repeatable)."),
        click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads (default: all cores)."),
        click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=1), default=None,
                     help="Context length (default: min(file's context, 4096))."),
        click.option("--default", "use_default", is_flag=True,
                     help="Use the embedded default model (also what no FILE means)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def backend_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The compute backend options shared by run, chat, perplexity and bench."""
    options = [
        click.option("--backend", type=click.Choice(["numba", "torch"]), default="numba",
                     show_default=True, help="Compute backend: Numba on the CPU, or torch "
                     "(needs the torch extra) on any torch device."),
        click.option("--device", default=None,
                     help="torch backend: cpu, cuda, cuda:1, mps (default: cpu). CUDA "
                          "requested but unavailable is an error, never a CPU fallback."),
        click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
                     default=None, help="torch backend: compute dtype (default: float32 on "
                     "the CPU, float16 on accelerators)."),
        click.option("--compile", "compile_", is_flag=True,
                     help="torch backend: torch.compile the forward pass."),
        click.option("--kv-type", type=click.Choice(["f16", "f32"]), default="f16",
                     show_default=True, help="numba backend: the KV cache's element type "
                     "(llama.cpp's --cache-type-k/v)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _parse_template_kwargs(ctx: click.Context, param: click.Parameter,
                           value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    import json

    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter('must be a JSON object, e.g. \'{"enable_thinking": false}\'')
    return parsed


# Extra chat template variables, as llama.cpp's --chat-template-kwargs (llama-server / llama-cli).
chat_template_kwargs_option = click.option(
    "--chat-template-kwargs", "chat_template_kwargs", default=None,
    callback=_parse_template_kwargs, metavar="JSON",
    help='Extra chat template variables as a JSON object, e.g. \'{"enable_thinking": false}\' '
         "(Qwen 3).")


def backend_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    return {"backend": kw["backend"], "device": kw["device"], "dtype": kw["dtype"],
            "compile": kw["compile_"], "kv_type": kw["kv_type"]}


def sampling_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: kw[k] for k in ("max_tokens", "temperature", "top_k", "top_p", "min_p",
                               "repeat_penalty", "seed")} | {"stop": list(kw["stop"])}


def load_model(file: str | None, kw: dict[str, Any]):  # -> Model
    from gguflite.runtime import load

    if kw.get("use_default") and file:
        raise click.UsageError("give FILE or --default, not both")
    if kw["backend"] == "numba":
        from gguflite.runtime.precompile import start_numba_target

        start_numba_target()  # without its scipy.linalg import
    with _small_pages():
        model = load(Path(file) if file else None, threads=kw["threads"], n_ctx=kw["n_ctx"],
                     **backend_kwargs(kw))
        if kw["backend"] == "numba":
            from gguflite.runtime.precompile import warm_up

            try:
                warm_up(model)  # a cold Numba cache: compile now, on two cores
            except BaseException:
                model.close()
                raise
    return model


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """Allocate without NumPy's transparent-huge-page hint.

    NumPy asks the kernel for 2 MB pages on every large array (madvise). The KV cache is
    written one row per layer and head at a time, so each first write faulted in a whole
    2 MB page: at the default context of 4096 the f32 cache of SmolLM2 became resident on the
    first token (peak RSS 490 MB instead of 316 MB, benchmarks/results/startup.md). With
    4 kB pages only the rows written are. (A private NumPy switch; skipped if it is gone.)
    """
    import numpy as np

    switch = getattr(getattr(getattr(np, "_core", None), "multiarray", None),
                     "_set_madvise_hugepage", None)
    if switch is None:
        yield
        return
    before = switch(False)
    try:
        yield
    finally:
        switch(before)


def print_stats(stats: Any, compile_seconds: float = 0.0, load_seconds: float = 0.0) -> None:
    """The stats line; ``compile_seconds``: compilation inside the generation's timings;
    ``load_seconds``: the wall time of a load that compiled (``precompile.warm_up``)."""
    click.echo(f"\n[prompt {stats.n_prompt} tok, prefill {stats.prefill_tps:.1f} tok/s | "
               f"generated {stats.n_generated} tok, decode {stats.decode_tps:.1f} tok/s | "
               f"stop: {stats.stop_reason}]", err=True)
    if load_seconds >= 0.5:
        click.echo(f"[loading took {load_seconds:.1f} s, most of it one-time Numba kernel "
                   "compilation; later runs load the compiled kernels from Numba's cache]",
                   err=True)
    if compile_seconds >= 0.5:
        click.echo(f"[these timings include {compile_seconds:.1f} s of one-time Numba kernel "
                   "compilation; later runs load the compiled kernels from Numba's cache]",
                   err=True)


class CompileTimer:
    """Wall seconds spent compiling Numba functions inside a ``with`` block (outermost
    ``numba:compile`` events only; a warm on-disk cache makes it 0).

    With ``notify``, one line on stderr says what is happening when the first compilation
    starts (a cold cache takes a while, and silence looks like a hang).
    """

    NOTICE = ("[compiling the Numba kernels this model needs; only the first run does this, "
              "later runs load them from the cache]")

    def __init__(self, notify: bool = False) -> None:
        self.seconds = 0.0
        self.count = 0  # outermost compilations
        self.notify = notify
        self._recorder: Any = None
        self._listener: Any = None

    def __enter__(self) -> CompileTimer:
        from numba.core import event

        self._recorder = event.install_recorder("numba:compile")
        self._buffer = self._recorder.__enter__().buffer
        if self.notify:
            self._listener = _notice_listener(self.NOTICE)
            event.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc: object) -> None:
        from numba.core import event

        if self._listener is not None:
            event.unregister("numba:compile", self._listener)
        self._recorder.__exit__(*exc)
        depth, start = 0, 0.0
        for t, ev in self._buffer:
            if ev.is_start:
                depth += 1
                if depth == 1:
                    start = t
                    self.count += 1
            else:
                depth -= 1
                if depth == 0:
                    self.seconds += t - start


_noticed = False  # the notice is printed once per process


def _notice_listener(text: str) -> Any:
    """A numba event listener that prints ``text`` to stderr when one of gguflite's own
    (cached) functions starts compiling; Numba's internals that compile in every process
    (typed containers) stay silent."""
    from numba.core import event

    class Notice(event.Listener):
        def on_start(self, ev: Any) -> None:
            global _noticed
            func = getattr(ev.data.get("dispatcher"), "py_func", None)
            if not _noticed and getattr(func, "__module__", "").startswith("gguflite."):
                _noticed = True
                click.echo(text, err=True)

        def on_end(self, ev: Any) -> None:
            pass

    return Notice()


@click.command("run")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("-p", "--prompt", required=True, callback=utf8_option,
              help="The prompt text (UTF-8).")
@click.option("--chat-template/--raw", "use_template", default=None,
              help="Wrap the prompt as a user message with the file's chat template "
                   "(default when the file has one), or feed it as raw text.")
@click.option("--system", default=None, callback=utf8_option,
              help="System message (with the chat template).")
@chat_template_kwargs_option
@sampling_options
@backend_options
def run(file: str | None, prompt: str, use_template: bool | None, system: str | None,
        chat_template_kwargs: dict[str, Any] | None, **kw: Any) -> None:
    """Generate a continuation of PROMPT with FILE (default: the embedded SmolLM2 model).

    Exit codes: 0 done; 1 the file cannot be run or the prompt does not fit; 2 usage error.
    """
    if use_template is not False:  # start the chat template renderer during the model load
        from gguflite.runtime.chat import start_renderer

        with contextlib.suppress(GGUFLiteError):  # the render reports it, if one is needed
            start_renderer()
    t0 = time.perf_counter()
    with CompileTimer(notify=True) as loading:
        model = load_model(file, kw)  # on a cold cache: compiles, on two cores
    load_seconds = time.perf_counter() - t0 if loading.seconds >= 0.5 else 0.0
    if use_template is None:
        use_template = bool(model.tokenizer.chat_template)
    if use_template:
        messages = ([{"role": "system", "content": system}] if system else [])
        messages.append({"role": "user", "content": prompt})
        pieces = model.chat(messages, stream=True, chat_template_kwargs=chat_template_kwargs,
                            **sampling_kwargs(kw))
    else:
        if system or chat_template_kwargs:
            raise click.UsageError("--system and --chat-template-kwargs need the chat template "
                                   "(drop --raw)")
        pieces = model.generate(prompt, stream=True, **sampling_kwargs(kw))
    with CompileTimer(notify=True) as compiling:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
    print_stats(model.last_stats, compiling.seconds, load_seconds)
    from .main import skip_teardown

    skip_teardown()
