"""``gguflite serve``: an OpenAI-compatible server with continuous batching and a chat page.

    >>> from gguflite.runtime import load
    >>> from gguflite.serve import create_app
    >>> app = create_app(load(), n_slots=4)       # an ASGI app: uvicorn, or Starlette's TestClient

Modules: ``app`` (routes, auth, limits, SSE), ``schemas`` (request validation, OpenAI errors),
``scheduler`` (the batching thread), ``slots`` (the engine interface it drives), ``page`` (the
chat page). Needs the ``serve`` extra (starlette, uvicorn).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "Server", "ServerConfig"]


def __getattr__(name: str) -> Any:
    # Lazy: importing gguflite.serve.schemas must not need starlette.
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'gguflite.serve' has no attribute {name!r}")
