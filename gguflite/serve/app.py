"""The HTTP side: a Starlette app with OpenAI's endpoints, fed by the scheduler thread.

    GET  /                       the chat page (page.py)
    GET  /health                 {"status": "ok", "slots_idle": .., "slots_processing": ..}
    GET  /v1/models              the one model this server runs (/v1/models/{id}: its card)
    POST /v1/chat/completions    the file's chat template; stream=true: server-sent events
    POST /v1/completions         a raw prompt (text or token ids)

Every error is OpenAI's ``{"error": {...}}`` (schemas.APIError). With an API key, /v1/*
needs ``Authorization: Bearer <key>`` (401 otherwise); / and /health stay open, as in
llama.cpp's server. Bodies over ``max_body`` bytes get 413; a full queue gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gguflite.errors import ModelError
from gguflite.runtime.sampling import Sampler, StopStrings

from .page import PAGE_HTML
from .scheduler import Done, Failed, Job, Piece, QueueFull, Scheduler, ShuttingDown
from .schemas import APIError, GenParams, bad, chat_request, completion_request
from .slots import SequentialSlots

log = logging.getLogger(__name__)

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
DISCONNECT_POLL_SECONDS = 0.25  # how often a non-streamed request checks for its client


@dataclass
class ServerConfig:
    """Limits and options of one server.

    n_slots: sequences decoded together (``--parallel``); max_queue: requests that may wait
    for a slot; max_body: request body bytes; max_tokens: the most a request may ask for
    (None: the context); api_key: required bearer token (None: none); model_id: the name
    /v1/models reports; threads: Numba threads of the scheduler (None: all cores); engine:
    "batched" (one pass over the weights per decode step for all slots, batched.py),
    "sequential" (slots stepped one after another, slots.py) or "auto" (batched with more
    than one slot).
    """

    n_slots: int = 1
    max_queue: int = 16
    max_body: int = 1 << 20
    max_tokens: int | None = None
    api_key: str | None = None
    model_id: str = "model"
    threads: int | None = None
    engine: str = "auto"


def make_engine(model: Any, config: ServerConfig) -> SequentialSlots:
    """The SlotEngine ``config.engine`` names."""
    from .batched import BatchedSlots

    if config.engine not in ("auto", "batched", "sequential"):
        raise ValueError(f"engine must be auto, batched or sequential, got {config.engine!r}")
    batched = config.engine == "batched" or (config.engine == "auto" and config.n_slots > 1)
    if batched:
        return BatchedSlots(model, config.n_slots)
    return SequentialSlots(model, config.n_slots)


class Server:
    """A loaded model, its slots and scheduler, and the Starlette ``app`` serving them.

    Start/stop the scheduler with the app's lifespan (uvicorn, or ``with TestClient(app)``).
    """

    def __init__(self, model: Any, config: ServerConfig):
        self.model = model
        self.config = config
        self.engine = make_engine(model, config)  # warmed up by the scheduler's thread
        self.n_ctx = self.engine.n_ctx
        self.max_tokens_limit = min(config.max_tokens or self.n_ctx, self.n_ctx)
        self.scheduler = Scheduler(self.engine, model.tokenizer, max_queue=config.max_queue,
                                   threads=config.threads)
        self.created = int(time.time())
        self.app = Starlette(
            routes=[
                Route("/", self.page, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/models/{model_id:path}", self.model_info, methods=["GET"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
            ],
            exception_handlers={APIError: _api_error, HTTPException: _http_error,
                                Exception: _internal_error},
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.scheduler.start()
        try:
            yield
        finally:
            self.scheduler.stop()

    # -- plain endpoints --------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE_HTML)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"} | self.scheduler.status())

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_id, "object": "model", "created": self.created,
                "owned_by": "gguflite", "meta": {"n_ctx": self.n_ctx,
                                                 "n_slots": self.config.n_slots,
                                                 "engine": type(self.engine).__name__}}

    async def models(self, request: Request) -> Response:
        self._auth(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model_info(self, request: Request) -> Response:
        self._auth(request)
        name = request.path_params["model_id"]
        if name != self.config.model_id:
            raise APIError(404, f"model: no model {name!r} here; this server runs "
                           f"{self.config.model_id!r}", param="model", code="model_not_found")
        return JSONResponse(self._model_card())

    # -- generation -------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        self._auth(request)
        req = chat_request(await self._json(request), max_tokens_limit=self.max_tokens_limit)
        try:
            prompt = self.model.render_chat(req.messages)
        except ModelError as exc:
            raise bad("messages", str(exc)) from None
        ids = self.model.tokenizer.encode(prompt, add_special=self.model._needs_bos(prompt))
        return await self._generate(request, ids, req.params, chat=True, prompt_param="messages")

    async def completions(self, request: Request) -> Response:
        self._auth(request)
        req = completion_request(await self._json(request),
                                 max_tokens_limit=self.max_tokens_limit)
        if isinstance(req.prompt, str):
            ids = self.model.tokenizer.encode(req.prompt)
        else:
            n_vocab = self.engine.n_vocab
            if any(not 0 <= t < n_vocab for t in req.prompt):
                raise bad("prompt", f"token ids must be in 0..{n_vocab - 1}")
            ids = req.prompt
        return await self._generate(request, ids, req.params, chat=False, prompt_param="prompt")

    async def _generate(self, request: Request, ids: list[int], p: GenParams, *, chat: bool,
                        prompt_param: str) -> Response:
        n_prompt, n_ctx = len(ids), self.n_ctx
        if n_prompt == 0:
            raise bad(prompt_param, "the prompt is empty (no tokens)")
        if n_prompt >= n_ctx:
            raise bad(prompt_param, f"the prompt has {n_prompt} tokens but the context holds "
                      f"{n_ctx} (the server's --ctx), leaving no room to generate",
                      code="context_length_exceeded")
        if p.max_tokens is None:
            default = self.max_tokens_limit if chat else COMPLETIONS_DEFAULT_MAX_TOKENS
            max_tokens = min(default, n_ctx - n_prompt)
        elif n_prompt + p.max_tokens > n_ctx:
            raise bad(p.max_tokens_param, f"a prompt of {n_prompt} tokens plus "
                      f"{p.max_tokens_param}={p.max_tokens} exceeds the context of {n_ctx} "
                      "tokens (the server's --ctx)", code="context_length_exceeded")
        else:
            max_tokens = p.max_tokens
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(ids=ids, max_tokens=max_tokens, sampler=Sampler(**p.sampler),
                  stops=StopStrings(p.stop), cache_prompt=p.cache_prompt,
                  ignore_eos=p.ignore_eos,
                  emit=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
        try:
            self.scheduler.submit(job)
        except QueueFull as exc:
            raise APIError(503, f"the server is busy: {exc}; retry later", type="server_error",
                           code="queue_full") from None
        except ShuttingDown as exc:
            raise APIError(503, str(exc), type="server_error", code="shutting_down") from None
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        shape = _Shape(rid, self.config.model_id, chat)
        if p.stream:
            return StreamingResponse(self._stream(job, events, shape, p.include_usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        return await self._collect(request, job, events, shape)

    async def _collect(self, request: Request, job: Job, events: asyncio.Queue,
                       shape: _Shape) -> Response:
        parts: list[str] = []
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(events.get(), DISCONNECT_POLL_SECONDS)
                except TimeoutError:
                    if await request.is_disconnected():
                        log.info("client went away; cancelled %s", shape.rid)
                        return Response(status_code=499)
                    continue
                if isinstance(ev, Piece):
                    parts.append(ev.text)
                elif isinstance(ev, Done):
                    return JSONResponse(shape.whole("".join(parts), ev))
                else:
                    raise APIError(503, ev.message, type="server_error")
        finally:
            self.scheduler.cancel(job)  # frees the slot if the job is still running

    async def _stream(self, job: Job, events: asyncio.Queue, shape: _Shape,
                      include_usage: bool) -> AsyncIterator[str]:
        try:
            if shape.chat:
                yield _sse(shape.chunk({"role": "assistant", "content": ""}))
            while True:
                ev = await events.get()
                if isinstance(ev, Piece):
                    yield _sse(shape.chunk(ev.text))
                elif isinstance(ev, Done):
                    yield _sse(shape.chunk(None, ev.finish_reason))
                    if include_usage:
                        yield _sse(shape.usage_chunk(ev))
                    break
                elif isinstance(ev, Failed):
                    yield _sse(APIError(503, ev.message, type="server_error").body())
                    break
            yield "data: [DONE]\n\n"
        finally:  # also on a client disconnect (the response task is cancelled)
            self.scheduler.cancel(job)

    # -- request checks ---------------------------------------------------------------------
    def _auth(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                  key.encode()):
            raise APIError(401, "missing or incorrect API key: send the header "
                           "'Authorization: Bearer <key>' with the server's --api-key",
                           code="invalid_api_key")

    async def _json(self, request: Request) -> Any:
        limit = self.config.max_body
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise _too_large(limit)
        try:
            return json.loads(buf)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad("body", f"malformed JSON: {exc}") from None
        except RecursionError:
            raise bad("body", "malformed JSON: nested too deeply") from None


def _too_large(limit: int) -> APIError:
    return APIError(413, f"body: the request body is over the server's limit of {limit} "
                    "bytes", param="body", code="body_too_large")


@dataclass
class _Shape:
    """OpenAI's response objects for one request."""

    rid: str
    model: str
    chat: bool

    def __post_init__(self) -> None:
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.rid, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": "gguflite"}

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": done.finish_reason}
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": done.finish_reason}
            head = self._head("text_completion")
        return head | {"choices": [choice], "usage": _usage(done)}

    def chunk(self, content: str | dict | None, finish_reason: str | None = None
              ) -> dict[str, Any]:
        if self.chat:
            delta = content if isinstance(content, dict) else (
                {} if content is None else {"content": content})
            choice = {"index": 0, "delta": delta, "logprobs": None,
                      "finish_reason": finish_reason}
            return self._head("chat.completion.chunk") | {"choices": [choice]}
        choice = {"index": 0, "text": content or "", "logprobs": None,
                  "finish_reason": finish_reason}
        return self._head("text_completion") | {"choices": [choice]}

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._head(obj) | {"choices": [], "usage": _usage(done)}


def _usage(done: Done) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    err = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                   type=kind)
    return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    err = APIError(500, f"internal server error: {type(exc).__name__}", type="server_error")
    return JSONResponse(err.body(), status_code=500)


def create_app(model: Any, **config: Any) -> Starlette:
    """The ASGI app serving ``model`` (a loaded ``gguflite.runtime.Model``); keyword
    arguments are ``ServerConfig`` fields. Run it with uvicorn, or in-process with
    ``starlette.testclient.TestClient(app)`` (its ``with`` block starts the scheduler)."""
    return Server(model, ServerConfig(**config)).app
