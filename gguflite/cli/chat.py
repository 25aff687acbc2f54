"""``gguflite chat``: an interactive conversation using the file's chat template.

Each line read from stdin is a user turn; the reply streams to stdout. The conversation is
kept in the KV cache, so each turn only runs its new tokens. ``/reset`` starts over, ``/exit``
(or end of input) quits. Works with stdin piped: ``printf 'Hi\\n' | gguflite chat``.
``--chat-template-kwargs '{"enable_thinking": false}'`` passes template variables (Qwen 3).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from ..errors import GGUFLiteError
from .run import (
    CompileTimer,
    backend_options,
    chat_template_kwargs_option,
    load_model,
    print_stats,
    sampling_kwargs,
    sampling_options,
    utf8_option,
    utf8_text,
)


@click.command("chat")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--system", default=None, callback=utf8_option, help="System message.")
@click.option("--stats/--no-stats", default=False, help="Print tokens/s after each reply.")
@chat_template_kwargs_option
@sampling_options
@backend_options
def chat(file: str | None, system: str | None, stats: bool,
         chat_template_kwargs: dict[str, Any] | None, **kw: Any) -> None:
    """Chat with FILE (default: the embedded SmolLM2 model) on stdin/stdout.

    Exit codes: 0 done; 1 the file cannot be run (no chat template, context full); 2 usage.
    """
    from gguflite.runtime.chat import start_renderer

    with contextlib.suppress(GGUFLiteError):  # its start overlaps the load; errors come later
        start_renderer()
    with CompileTimer(notify=True):  # says so on stderr when a cold cache compiles
        model = load_model(file, kw)
        _chat_loop(model, system, stats, chat_template_kwargs, kw)
    from .main import skip_teardown

    skip_teardown()


def _chat_loop(model: Any, system: str | None, stats: bool,
               chat_template_kwargs: dict[str, Any] | None, kw: dict[str, Any]) -> None:
    from gguflite.runtime.chat import get_chat_template

    get_chat_template(model.file.metadata)  # fail now, not after the first line
    base: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    interactive = sys.stdin.isatty()
    n_line = 0
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        n_line += 1
        try:
            line = sys.stdin.readline()
        except UnicodeDecodeError:
            raise GGUFLiteError(f"stdin line {n_line} is not valid UTF-8; give UTF-8 "
                                "text") from None
        if not line:
            break
        text = utf8_text(f"stdin line {n_line}", line.rstrip("\n"))
        if text.strip() in ("/exit", "/quit"):
            break
        if text.strip() == "/reset":
            messages = list(base)
            model.reset()
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        reply = []
        for piece in model.chat(messages, stream=True, chat_template_kwargs=chat_template_kwargs,
                                **sampling_kwargs(kw)):
            reply.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})
        if stats:
            print_stats(model.last_stats)
