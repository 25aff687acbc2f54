"""Chat templates: render a conversation to a prompt string, the way Hugging Face does.

A model file carries its chat template (``tokenizer.chat_template``, a Jinja2 template written
for transformers' ``apply_chat_template``). Templates come from untrusted files, so they run in
jinja2's ``ImmutableSandboxedEnvironment``: no attribute starting with ``_``, no mutation of
lists/dicts passed in, no Python callables beyond the ones below. The environment matches
transformers' (``utils/chat_template_utils.py``)::

    trim_blocks=True, lstrip_blocks=True, extension loopcontrols ({% break %}, {% continue %})
    {% generation %}...{% endgeneration %}  rendered as its body (HF tracks assistant spans)
    filter   tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
    globals  raise_exception(msg), strftime_now(fmt), dict(...), namespace(...) (no "_" names)
    context  messages, tools, documents, add_generation_prompt, bos_token, eos_token, **extra

Messages are copied to plain JSON data first (keys with value None dropped, as HF does), so a
template never sees the caller's objects. Every failure (syntax, sandbox violation,
``raise_exception`` in the template, a type error while rendering) is a ModelError.

When the bos token appears in the rendered text, encode the prompt with ``add_special=False``
(or strip the leading bos) to avoid a doubled BOS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gguflite.errors import ModelError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

KEY_CHAT_TEMPLATE = "tokenizer.chat_template"

# A documented fallback for files without a template, used only when the caller asks for it:
# the ChatML format (<|im_start|>role\ncontent<|im_end|>\n), as llama.cpp's "chatml" template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def get_chat_template(
    metadata: Mapping[str, Any], name: str | None = None, *, fallback: str | None = None
) -> str:
    """The chat template stored in a file's metadata.

    Parameters
    ----------
    metadata:
        The file's metadata mapping.
    name:
        A named alternative (``tokenizer.chat_template.<name>``, e.g. ``"tool_use"``); ``None``
        for the default template.
    fallback:
        Returned when the file has no such template, e.g. ``CHATML_TEMPLATE``. Without it a
        missing template is an error: guessing a format silently gives subtly wrong prompts.

    Raises
    ------
    ModelError
        The template is missing (and no fallback was given) or is not a string.
    """
    key = KEY_CHAT_TEMPLATE if name is None else f"{KEY_CHAT_TEMPLATE}.{name}"
    template = metadata.get(key)
    if template is None:
        if fallback is not None:
            return fallback
        raise ModelError(
            f"this file has no chat template (metadata key {key!r}); pass a template explicitly, "
            "or fallback=gguflite.runtime.chat.CHATML_TEMPLATE to use the ChatML format"
        )
    if not isinstance(template, str):
        raise ModelError(f"metadata key {key!r} must be a string, got {type(template).__name__}")
    return template


def _plain(value: Any, where: str) -> Any:
    """A copy of ``value`` made of JSON types only (the template sees nothing else)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k, where): _plain(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item(), where)
    raise ModelError(f"{where}: {type(value).__name__} values cannot be passed to a chat template")


@lru_cache(maxsize=16)
def _compile(template: str):
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 is a declared dependency
        raise ModelError("chat templates need jinja2: pip install 'gguflite[run]'") from exc

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
        msg = f"chat template syntax error at line {exc.lineno}: {exc.message}"
        raise ModelError(msg) from None


def render_chat(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """Render a conversation with a chat template.

    Parameters
    ----------
    template:
        Jinja2 source, e.g. from :func:`get_chat_template`.
    messages:
        ``[{"role": "user", "content": "Hi"}, ...]``.
    add_generation_prompt:
        End with the header of an assistant turn, so the model writes the answer next.
    bos_token, eos_token:
        The texts of the file's BOS/EOS tokens (templates write them literally).
    **extra:
        More template variables (``tools``, ``documents``, ``enable_thinking`` ...).

    Raises
    ------
    ModelError
        Empty template, syntax error, sandbox violation, ``raise_exception`` from the template,
        or a rendering error; the message says which.
    """
    import jinja2

    if not isinstance(template, str) or not template.strip():
        raise ModelError("chat template is empty; see get_chat_template(..., fallback=...)")
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise ModelError("messages must be a list of dicts like {'role': 'user', 'content': '...'}")
    chat = [
        {k: v for k, v in _plain(m, f"messages[{i}]").items() if v is not None}
        for i, m in enumerate(messages)
    ]
    context = {
        "tools": None,
        "documents": None,
        **{k: _plain(v, k) for k, v in extra.items()},
        "messages": chat,
        "add_generation_prompt": bool(add_generation_prompt),
        "bos_token": bos_token,
        "eos_token": eos_token,
    }
    compiled = _compile(template)
    try:
        return compiled.render(**context)
    except jinja2.exceptions.SecurityError as exc:
        raise ModelError(f"chat template blocked by the sandbox: {exc}") from None
    except jinja2.exceptions.UndefinedError as exc:
        raise ModelError(f"chat template uses an undefined value: {exc}") from None
    except jinja2.exceptions.TemplateError as exc:
        raise ModelError(f"chat template raised an error: {exc}") from None
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        msg = f"chat template failed while rendering: {type(exc).__name__}: {exc}"
        raise ModelError(msg) from None
    except RecursionError:
        raise ModelError("chat template recursed too deeply") from None


def chat_prompt(
    tokenizer: Tokenizer,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    template: str | None = None,
    fallback: str | None = None,
    **extra: Any,
) -> str:
    """Render ``messages`` with the tokenizer's own template and BOS/EOS texts.

    Parameters
    ----------
    tokenizer:
        A runtime tokenizer; its ``chat_template`` (from the file) is used unless ``template``
        is given.
    fallback:
        Template to use when there is neither ``template`` nor a template in the file (e.g.
        ``CHATML_TEMPLATE``); without it a missing template is a ModelError.
    """
    if template is None:
        template = tokenizer.chat_template
    if template is None:
        template = get_chat_template({}, fallback=fallback)
    tokens = tokenizer.vocab.tokens
    bos = tokens[tokenizer.bos_id] if tokenizer.bos_id is not None else ""
    eos = tokens[tokenizer.eos_id] if tokenizer.eos_id is not None else ""
    return render_chat(
        template,
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos,
        eos_token=eos,
        **extra,
    )


def chat_ids(tokenizer: Tokenizer, messages: list[dict], **kwargs: Any) -> list[int]:
    """Token ids of :func:`chat_prompt` (same arguments).

    Encoded as transformers' ``apply_chat_template(tokenize=True)`` does: special tokens in the
    text are parsed and no BOS/EOS is added, because templates write the BOS they want.
    """
    prompt = chat_prompt(tokenizer, messages, **kwargs)
    return tokenizer.encode(prompt, add_special=False, parse_special=True)
