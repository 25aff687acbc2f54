"""The chat-template renderer process: Jinja2 in a sandbox, under resource limits.

A chat template comes from a model file, i.e. from a stranger. Jinja's sandbox blocks attribute
tricks but not work or size: two nested ``range(100000)`` loops run for hours, ``'x' *
4000000000`` allocates 4 GB, and a constant like ``10**10000000`` is folded at compile time.
Counting every kind of work inside Jinja would mean patching its code generator and every
filter; instead this module runs as its own small process (started once by
``gguflite.runtime.chat`` and reused for every render) where

- the address space is capped (``RLIMIT_AS``, first argument), so any allocation past the cap
  is a ``MemoryError`` reported as one line, never the parent's memory;
- the parent waits a fixed time for each answer and kills this process when it is late, which
  bounds every loop, every filter and compile-time folding alike;
- the rendered text is produced chunk by chunk and refused as soon as it exceeds the caller's
  character limit.

It imports only the standard library and jinja2 (not gguflite, not NumPy), so it starts in a
few tens of milliseconds. Protocol, one JSON object per line (``ensure_ascii``, so a line is one
line)::

    -> {"ready": true}  or  {"fatal": "why"}                      once, at start
    <- {"template": str, "context": {...}, "max_chars": int}      one request
    -> {"text": str}  or  {"error": "chat template ..."}          its answer

The environment matches transformers' (``utils/chat_template_utils.py``)::

    trim_blocks=True, lstrip_blocks=True, extension loopcontrols ({% break %}, {% continue %})
    {% generation %}...{% endgeneration %}  rendered as its body (HF tracks assistant spans)
    filter   tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    globals  raise_exception(msg), strftime_now(fmt), dict(...), namespace(...) (no "_" names)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from functools import lru_cache
from typing import Any

_MEMORY = "chat template needs more memory than the renderer's limit"  # + " (N MiB)" at start


class TemplateFailure(Exception):
    """A template that cannot be rendered; the message is the one line the user sees."""


def _limit_resources(memory_bytes: int) -> None:
    """Cap this process's address space; no core dumps, no files written."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX: the time limit still holds
        return
    for res, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_FSIZE, 0)):
        soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(res, (value, hard))
        except (ValueError, OSError):  # pragma: no cover - a platform that refuses it
            pass


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: HF marks assistant spans; we render it."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(
                lineno
            )

        def _render(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """``namespace()`` that refuses underscore names (no route to CPython internals)."""

        def __init__(*args: Any, **kwargs: Any):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for key in attrs:
                Namespace._check(key)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, key: str, value: Any) -> None:
            Namespace._check(key)
            jinja2.utils.Namespace.__setitem__(self, key, value)

        @staticmethod
        def _check(key: Any) -> None:
            if isinstance(key, str) and key.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {key!r} is not allowed")

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    def make_dict(*args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = make_dict
    env.globals["namespace"] = Namespace
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure(f"chat template syntax error at line {exc.lineno}: "
                              f"{exc.message}") from None


def render(template: str, context: dict[str, Any], max_chars: int) -> str:
    """Render ``template`` with ``context``; raises TemplateFailure with a one-line message."""
    import jinja2

    try:
        parts: list[str] = []
        n = 0
        for chunk in _compile(template).generate(**context):
            n += len(chunk)
            if n > max_chars:
                raise TemplateFailure(f"chat template output exceeds {max_chars:,} characters, "
                                      "more than the context can hold")
            parts.append(chunk)
        return "".join(parts)
    except TemplateFailure:
        raise
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateFailure(f"chat template blocked by the sandbox: {exc}") from None
    except jinja2.exceptions.UndefinedError as exc:
        raise TemplateFailure(f"chat template uses an undefined value: {exc}") from None
    except jinja2.exceptions.TemplateError as exc:
        raise TemplateFailure(f"chat template raised an error: {exc}") from None
    except MemoryError:
        raise TemplateFailure(_MEMORY) from None
    except RecursionError:
        raise TemplateFailure("chat template recursed too deeply") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile template is one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TemplateFailure(f"chat template failed while rendering: {type(exc).__name__}: "
                              f"{first}") from None


def _answer(line: bytes) -> dict[str, str]:
    try:
        request = json.loads(line)
        return {"text": render(request["template"], request["context"],
                               int(request["max_chars"]))}
    except TemplateFailure as exc:
        return {"error": str(exc)}
    except MemoryError:
        return {"error": _MEMORY}


def _send(out: Any, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj).encode("ascii") + b"\n")
    out.flush()


def main(argv: list[str]) -> int:
    out = sys.stdout.buffer
    try:
        import jinja2  # noqa: F401
        import jinja2.sandbox  # noqa: F401
    except ImportError:
        _send(out, {"fatal": "chat templates need jinja2: pip install 'gguflite[run]'"})
        return 1
    global _MEMORY
    _limit_resources(int(argv[1]))
    _MEMORY += f" ({int(argv[1]) >> 20} MiB)"
    _send(out, {"ready": True})
    for line in sys.stdin.buffer:
        _send(out, _answer(line))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
