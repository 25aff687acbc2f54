"""Request validation and OpenAI-shaped responses.

Every bad request becomes an ``APIError`` whose body is OpenAI's::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens",
               "code": null}}

``param`` names the offending field (``messages[1].content``), so a client can point at it.
Fields the server does not use (``user``, ``response_format``, ``logit_bias``...) are accepted
and ignored, as llama.cpp's server does; fields it cannot honour (``n > 1``, ``logprobs``,
``tools``) are refused rather than silently dropped.

Sampling defaults for absent fields are the runtime's (``gguflite run``): temperature 0.8,
top_k 40, top_p 0.95, min_p 0.05; ``top_k``, ``min_p``, ``repeat_penalty``, ``cache_prompt``
(reuse the longest cached prefix; on by default) and ``ignore_eos`` are accepted as
extensions, as llama.cpp's server does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOPS = 4  # OpenAI's limit on stop strings


class APIError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def bad(param: str, message: str, code: str | None = None) -> APIError:
    """A 400 naming ``param``."""
    return APIError(400, f"{param}: {message}", param=param, code=code)


@dataclass
class GenParams:
    """A validated generation request (chat or completion), before tokenization."""

    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    max_tokens: int | None = None  # None: up to the context (chat) / 16 (completions)
    max_tokens_param: str = "max_tokens"  # which field gave it, for error messages
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    cache_prompt: bool = True
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)
    sampler: dict[str, Any] = field(default_factory=dict)  # Sampler keyword arguments


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    params: GenParams


@dataclass
class CompletionRequest:
    prompt: str | list[int]
    params: GenParams


# ----------------------------------------------------------------------------- field checks
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _number(body: dict, name: str, lo: float, hi: float, default: float | None) -> float | None:
    v = body.get(name)
    if v is None:
        return default
    if not _is_num(v):
        raise bad(name, f"must be a number, got {_json_type(v)}")
    if not lo <= v <= hi:
        raise bad(name, f"must be in [{lo}, {hi}], got {v}")
    return float(v)


def _integer(body: dict, name: str, lo: int, hi: int, default: int | None) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if not _is_int(v):
        raise bad(name, f"must be an integer, got {_json_type(v)}")
    if not lo <= v <= hi:
        raise bad(name, f"must be in [{lo}, {hi}], got {v}")
    return int(v)


def _boolean(body: dict, name: str, default: bool) -> bool:
    v = body.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(name, f"must be a boolean, got {_json_type(v)}")
    return v


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _stops(body: dict) -> list[str]:
    v = body.get("stop")
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop", f"must be a string or an array of strings, got {_json_type(v)}")
    if len(stops) > MAX_STOPS:
        raise bad("stop", f"at most {MAX_STOPS} stop strings, got {len(stops)}")
    if any(not s for s in stops):
        raise bad("stop", "stop strings must not be empty")
    return stops


def _refuse(body: dict, name: str, ok: Any, why: str) -> None:
    v = body.get(name)
    if v is not None and v != ok and v != [] and v is not False:
        raise bad(name, why, code="unsupported_parameter")


def gen_params(body: dict, *, max_tokens_limit: int) -> GenParams:
    """The generation fields shared by chat and completions."""
    if not isinstance(body.get("model", ""), str):
        raise bad("model", f"must be a string, got {_json_type(body['model'])}")
    _refuse(body, "n", 1, "only n=1 is supported")
    _refuse(body, "best_of", 1, "only best_of=1 is supported")
    _refuse(body, "logprobs", None, "logprobs are not supported")
    _refuse(body, "top_logprobs", None, "logprobs are not supported")
    p = GenParams()
    p.stream = _boolean(body, "stream", False)
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise bad("stream_options", f"must be an object, got {_json_type(so)}")
        p.include_usage = _boolean(so, "include_usage", False)
    for name in ("max_completion_tokens", "max_tokens"):  # the newer name wins
        v = _integer(body, name, 1, max_tokens_limit, None)
        if v is not None:
            p.max_tokens, p.max_tokens_param = v, name
            break
    p.stop = _stops(body)
    p.seed = _integer(body, "seed", -(2**63), 2**64 - 1, None)
    p.cache_prompt = _boolean(body, "cache_prompt", True)
    p.ignore_eos = _boolean(body, "ignore_eos", False)
    p.sampler = {
        "temperature": _number(body, "temperature", 0.0, 2.0, 0.8),
        "top_p": _number(body, "top_p", 0.0, 1.0, 0.95),
        "top_k": _integer(body, "top_k", -1, 2**31 - 1, 40),
        "min_p": _number(body, "min_p", 0.0, 1.0, 0.05),
        "repeat_penalty": _number(body, "repeat_penalty", 0.01, 10.0, 1.0),
        "presence_penalty": _number(body, "presence_penalty", -2.0, 2.0, 0.0),
        "frequency_penalty": _number(body, "frequency_penalty", -2.0, 2.0, 0.0),
        "seed": None if p.seed is None else p.seed % 2**64,
    }
    return p


def _content(v: Any, where: str) -> str:
    """A message's content: a string, or an array of text parts (joined)."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if not isinstance(v, list):
        raise bad(where, f"must be a string or an array of content parts, got {_json_type(v)}")
    texts = []
    for j, part in enumerate(v):
        pw = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise bad(pw, f"a content part must be an object, got {_json_type(part)}")
        if part.get("type") != "text":
            raise bad(f"{pw}.type", f"only text content parts are supported, got "
                      f"{part.get('type')!r}", code="unsupported_parameter")
        if not isinstance(part.get("text"), str):
            raise bad(f"{pw}.text", f"must be a string, got {_json_type(part.get('text'))}")
        texts.append(part["text"])
    return "".join(texts)


def chat_request(body: Any, *, max_tokens_limit: int) -> ChatRequest:
    """Validate a ``POST /v1/chat/completions`` body.

    Raises
    ------
    APIError
        400 naming the field.
    """
    if not isinstance(body, dict):
        raise bad("body", f"must be a JSON object, got {_json_type(body)}")
    msgs = body.get("messages")
    if msgs is None:
        raise bad("messages", "is required")
    if not isinstance(msgs, list) or not msgs:
        raise bad("messages", "must be a non-empty array of messages")
    _refuse(body, "tools", None, "tools are not supported")
    _refuse(body, "functions", None, "functions are not supported")
    messages = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}]", f"must be an object, got {_json_type(m)}")
        role = m.get("role")
        if role not in ROLES:
            raise bad(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        messages.append({"role": "system" if role == "developer" else role,
                         "content": _content(m.get("content"), f"messages[{i}].content")})
    return ChatRequest(messages, gen_params(body, max_tokens_limit=max_tokens_limit))


def completion_request(body: Any, *, max_tokens_limit: int) -> CompletionRequest:
    """Validate a ``POST /v1/completions`` body (prompt: a string, one-string array or ids)."""
    if not isinstance(body, dict):
        raise bad("body", f"must be a JSON object, got {_json_type(body)}")
    v = body.get("prompt")
    if v is None:
        raise bad("prompt", "is required")
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str | list):
        v = v[0]  # one prompt given as an array
    if isinstance(v, list):
        if not v or not all(_is_int(t) for t in v):
            raise bad("prompt", "must be a string or a non-empty array of token ids (one "
                      "prompt per request)")
        prompt: str | list[int] = [int(t) for t in v]
    elif isinstance(v, str):
        prompt = v
    else:
        raise bad("prompt", f"must be a string, got {_json_type(v)}")
    _refuse(body, "echo", False, "echo is not supported")
    _refuse(body, "suffix", None, "suffix is not supported")
    return CompletionRequest(prompt, gen_params(body, max_tokens_limit=max_tokens_limit))
