"""``gguflite serve``: an OpenAI-compatible HTTP server with continuous batching and a chat page.

    gguflite serve                                   # the embedded model on 127.0.0.1:8080
    gguflite serve model.gguf --parallel 4 --ctx 2048 --api-key secret

Needs the ``serve`` extra (``pip install 'gguflite[serve]'``). Once the socket listens, one
line ``gguflite serve: listening on http://HOST:PORT`` goes to stderr (``--port 0`` picks a
free port and that line names it). SIGTERM or Ctrl-C stops accepting connections, lets
in-flight requests finish for up to ``--shutdown-timeout`` seconds, cancels the rest, exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
from typing import Any

import click

from ..errors import GGUFLiteError


@click.command("serve")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--default", "use_default", is_flag=True,
              help="Use the embedded default model (also what no FILE means).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the model to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="TCP port (0: a free one, named on stderr).")
@click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=16), default=None,
              help="Context length of each slot (default: min(file's context, 4096)).")
@click.option("-np", "--parallel", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Sequences decoded together (slots, each with its own KV cache).")
@click.option("--queue", "max_queue", type=click.IntRange(min=0), default=16,
              show_default=True, help="Requests that may wait for a slot; more get 503.")
@click.option("--api-key", default=None, envvar="GGUFLITE_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1/* (env GGUFLITE_API_KEY).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None,
              help="Most tokens one request may generate (default: the context).")
@click.option("--max-body", type=click.IntRange(min=1024), default=1 << 20, show_default=True,
              help="Largest request body in bytes (413 beyond).")
@click.option("--max-connections", type=click.IntRange(min=1), default=64, show_default=True,
              help="Open connections at most; more get 503.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=10.0,
              show_default=True, help="Seconds in-flight requests get to finish on SIGTERM.")
@click.option("--engine", type=click.Choice(["auto", "batched", "sequential"]),
              default="auto", show_default=True,
              help="Decode step: batched reads each weight once for all slots; sequential "
                   "steps the slots one after another (the fused one-token step); auto: batched "
                   "with --parallel > 1.")
@click.option("--alias", default=None, help="Model name for /v1/models (default: file name).")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: all cores).")
def serve(file: str | None, use_default: bool, host: str, port: int, n_ctx: int | None,
          parallel: int, max_queue: int, api_key: str | None, max_tokens: int | None,
          max_body: int, max_connections: int, shutdown_timeout: float, engine: str,
          alias: str | None, threads: int | None) -> None:
    """Serve FILE (default: the embedded SmolLM2 model) over the OpenAI API.

    Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
    GET /health, and a chat page at GET /.

    Exit codes: 0 stopped by SIGTERM/Ctrl-C; 1 the file cannot be served, the serve extra is
    missing or the address is taken; 2 usage error.
    """
    try:
        import uvicorn

        from ..serve.app import Server, ServerConfig
    except ImportError as exc:
        raise GGUFLiteError(f"gguflite serve needs the serve extra ({exc.name} is missing): "
                            "pip install 'gguflite[serve]'") from None
    from pathlib import Path

    from gguflite.runtime import load

    if use_default and file:
        raise click.UsageError("give FILE or --default, not both")
    model = load(Path(file) if file else None, threads=threads, n_ctx=n_ctx)
    server = Server(model, ServerConfig(
        n_slots=parallel, max_queue=max_queue, max_body=max_body, max_tokens=max_tokens,
        api_key=api_key, model_id=alias or model.path.name, threads=threads, engine=engine))
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        click.echo(f"gguflite serve: warning: --host {host} without --api-key lets anyone who "
                   "can reach this address use the model", err=True)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"gguflite serve: listening on http://{shown}:{bound} ({parallel} slot(s) of "
               f"{server.n_ctx} tokens, {type(server.engine).__name__})", err=True)
    config = uvicorn.Config(server.app, limit_concurrency=max_connections,
                            timeout_graceful_shutdown=shutdown_timeout, log_level=_log_level(),
                            access_log=logging.getLogger().level <= logging.INFO)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, restores the handlers it found and
    # raises the signal again; these no-op handlers make that end in exit code 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    uvicorn.Server(config).run(sockets=[sock])
    model.close()


def _ignore(signum: int, frame: Any) -> None:
    """A signal that arrives after uvicorn's graceful shutdown: already handled."""


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GGUFLiteError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _log_level() -> str:
    level = logging.getLogger().level
    return "debug" if level <= logging.DEBUG else "info" if level <= logging.INFO else "warning"
