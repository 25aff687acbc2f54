"""Chat templates: render a conversation to a prompt string, the way Hugging Face does.

A model file carries its chat template (``tokenizer.chat_template``, a Jinja2 template written
for transformers' ``apply_chat_template``). Templates come from untrusted files, so they run in
jinja2's ``ImmutableSandboxedEnvironment`` (no attribute starting with ``_``, no mutation of
lists/dicts passed in, no Python callables beyond HF's few) inside a separate renderer process
(``template_worker.py``, started once and reused) that is bounded in

- time: ``RENDER_TIMEOUT_S`` per render, then the process is killed;
- memory: ``RENDER_MEMORY_BYTES`` of address space (``RLIMIT_AS``) for the whole renderer;
- output: ``max_chars`` characters (``Model.chat``: the context length times the longest
  token's text, the most a prompt that fits could need; otherwise ``DEFAULT_MAX_CHARS``).

The environment matches transformers' (see ``template_worker.py``). Messages are copied to
plain JSON data first (keys with value None dropped, as HF does), so a template never sees the
caller's objects. Every failure (syntax, sandbox violation, ``raise_exception`` in the
template, a type error while rendering, a limit) is a ModelError of one line.

When the bos token appears in the rendered text, encode the prompt with ``add_special=False``
(or strip the leading bos) to avoid a doubled BOS.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gguflite.errors import ModelError

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

KEY_CHAT_TEMPLATE = "tokenizer.chat_template"

RENDER_TIMEOUT_S = 5.0  # wall seconds one render may take (spec section 15)
RENDER_MEMORY_BYTES = 512 << 20  # address space of the renderer process
DEFAULT_MAX_CHARS = 1 << 20  # output limit of render_chat when the caller gives none
_START_SECONDS = 60.0  # starting the renderer (an interpreter + jinja2) on a loaded machine
_WORKER = Path(__file__).with_name("template_worker.py")

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


class _Renderer:
    """The template worker process (``template_worker.py``), started on first use and reused.

    One request at a time (a lock); a worker that misses its deadline is killed and the next
    render starts a fresh one. A process that forked since the worker started starts its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the process that started self._proc
        self._buf = b""
        self._hello_pending = False  # started, its {"ready": true} line not read yet
        atexit.register(self.stop)

    def render(self, request: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        line = json.dumps(request).encode("ascii") + b"\n"
        with self._lock:
            for attempt in (0, 1):
                proc = self._start()
                try:
                    proc.stdin.write(line)  # type: ignore[union-attr]
                    proc.stdin.flush()  # type: ignore[union-attr]
                except (BrokenPipeError, OSError):  # it died since the last render: once more
                    self.stop()
                    if attempt:
                        raise ModelError("the chat template renderer process cannot be "
                                         "started again") from None
                    continue
                try:
                    answer = self._read(time.monotonic() + timeout)
                except BaseException:  # Ctrl-C while waiting: its late answer must not be
                    self.stop()        # read as the next request's
                    raise
                if answer is None:
                    self.stop()
                    return {"error": f"chat template took more than {timeout:g} s to render "
                                     "(the renderer's time limit); refused"}
                return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _start(self) -> subprocess.Popen[bytes]:
        """The running worker, started (and its hello read) if need be."""
        self._spawn()
        if self._hello_pending:
            self._hello_pending = False
            hello = self._read(time.monotonic() + _START_SECONDS)
            if hello is None or "fatal" in hello or not hello.get("ready"):
                why = (hello or {}).get("fatal", "it did not start")
                self.stop()
                raise ModelError(f"cannot start the chat template renderer: {why}")
        assert self._proc is not None
        return self._proc

    def _spawn(self) -> None:
        """Start the worker process unless this process has one running; its hello is read
        by the next ``_start``, so the interpreter start overlaps the caller's work."""
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            return
        if self._pid == os.getpid():
            self.stop()
        self._proc, self._buf = None, b""  # a forked copy of the parent's worker is not ours
        if not sys.executable:
            raise ModelError("cannot render a chat template: no Python interpreter to run the "
                             "template renderer (sys.executable is empty)")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(_WORKER), str(RENDER_MEMORY_BYTES)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                start_new_session=True)  # no Ctrl-C from the terminal: the caller decides
        except OSError as exc:
            raise ModelError(f"cannot start the chat template renderer: {exc}") from None
        self._pid = os.getpid()
        self._hello_pending = True

    def _read(self, deadline: float) -> dict[str, Any] | None:
        """One JSON line from the worker, or None when it is late or gone."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def stop(self) -> None:
        """End the worker (it also ends by itself when its stdin closes)."""
        proc, self._proc, self._buf = self._proc, None, b""
        self._hello_pending = False
        if proc is None or self._pid != os.getpid():
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


_RENDERER = _Renderer()


def start_renderer() -> None:
    """Start the renderer process now and return at once: its interpreter start (tens of ms)
    then overlaps the caller's work, e.g. loading the model, and the first ``render_chat``
    only waits for what is left of it. Optional; ``render_chat`` starts it when needed."""
    with _RENDERER._lock:
        _RENDERER._spawn()


def render_chat(
    template: str,
    messages: list[dict],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    max_chars: int | None = None,
    name: str | None = None,
    **extra: Any,
) -> str:
    """Render a conversation with a chat template (in the bounded renderer process).

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
    max_chars:
        Longest output accepted (characters); default ``DEFAULT_MAX_CHARS``.
    name:
        Where the template comes from (``"tokenizer.chat_template of m.gguf"``), for errors.
    **extra:
        More template variables (``tools``, ``documents``, ``enable_thinking`` ...).

    Raises
    ------
    ModelError
        Empty template, syntax error, sandbox violation, ``raise_exception`` from the template,
        a rendering error, or a limit (time, memory, output length); one line says which.
    """
    if not isinstance(template, str) or not template.strip():
        raise ModelError("chat template is empty; see get_chat_template(..., fallback=...)")
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise ModelError("messages must be a list of dicts like {'role': 'user', 'content': '...'}")
    try:
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
    except RecursionError:
        raise ModelError("messages are nested too deeply for a chat template") from None
    limit = DEFAULT_MAX_CHARS if max_chars is None else int(max_chars)
    answer = _RENDERER.render({"template": template, "context": context, "max_chars": limit},
                              timeout=RENDER_TIMEOUT_S)
    if "error" in answer:
        where = f" ({name})" if name else ""
        message = str(answer["error"])
        raise ModelError(message.replace("chat template", f"chat template{where}", 1))
    return answer["text"]


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
