"""gguflite serve against the unmodified ``openai`` client: endpoints, streaming, sampling
fields, OpenAI-style errors and a dropped stream (one server process for the module)."""

from __future__ import annotations

import json
import time

import openai
import pytest
from serve_process import ServeProcess, Stream, get_json, request

from gguflite.default_model import default_model_path

CTX = 512
HI = [{"role": "user", "content": "Write a short poem about the sea."}]
GREEDY = {"temperature": 0, "max_tokens": 24}


@pytest.fixture(scope="module")
def srv():
    with ServeProcess("--parallel", "2", "--ctx", str(CTX), "--max-body", "65536",
                      "-t", "1") as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0,
                         timeout=120)


def chat(client, **kw):
    return client.chat.completions.create(model="m", messages=kw.pop("messages", HI), **kw)


def test_models_and_health(client, srv):
    models = client.models.list()
    assert [m.id for m in models.data] == [default_model_path().name]
    assert client.models.retrieve(default_model_path().name).id == default_model_path().name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17")
    health = get_json(srv.url, "/health")
    assert health["status"] == "ok" and health["slots_idle"] + health["slots_processing"] == 2


def test_chat_reply_usage_and_length(client):
    r = chat(client, **GREEDY)
    choice = r.choices[0]
    assert r.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 5 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 0 < u.completion_tokens <= 24
    r5 = chat(client, temperature=0, max_tokens=5)
    assert r5.choices[0].finish_reason == "length" and r5.usage.completion_tokens == 5
    assert choice.message.content.startswith(r5.choices[0].message.content)
    r6 = chat(client, temperature=0, max_completion_tokens=3)
    assert r6.usage.completion_tokens == 3 and r6.choices[0].finish_reason == "length"


def test_stream_equals_whole_reply(client):
    whole = chat(client, **GREEDY)
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == whole.choices[0].finish_reason and set(finals[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3


def test_stream_ends_with_done(srv):
    body = {"messages": HI, "stream": True, **GREEDY}
    with Stream(srv.url, "/v1/chat/completions", body) as r:
        lines = [ln for ln in r.lines() if ln]
        assert r.response.getheader("content-type").startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)


def test_stop_string_cuts_the_reply(client):
    full = chat(client, **GREEDY).choices[0].message.content
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full  # a stop string that is not only blanks
    r = chat(client, stop=[stop, "never-generated"], **GREEDY)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[:full.index(stop)]


def test_completions(client):
    r = client.completions.create(model="m", prompt="The capital of France is",
                                  max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8 and r.choices[0].text
    chunks = list(client.completions.create(model="m", prompt="The capital of France is",
                                            max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    default = client.completions.create(model="m", prompt="Once upon a time", temperature=0)
    assert default.usage.completion_tokens <= 16  # OpenAI's default max_tokens


def test_seed_reproducible(client):
    kw = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 24, "seed": 1234}
    a = chat(client, **kw).choices[0].message.content
    b = chat(client, **kw).choices[0].message.content
    assert a == b
    others = {chat(client, **(kw | {"seed": s})).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {a}) > 1  # the seed changes the draw
    # penalties are accepted and keep the reply well formed
    r = chat(client, **kw, presence_penalty=1.5, frequency_penalty=1.0)
    assert r.choices[0].message.content


def post(srv, path, body):
    status, _, data = request(srv.url, "POST", path, body)
    return status, json.loads(data)


# (body, HTTP status, error.param) -- one line per malformed request
BAD = [
    (b"{not json", 400, "body"),  # malformed JSON
    (b"[1, 2]", 400, "body"),  # not an object
    ({"model": "m"}, 400, "messages"),  # missing field
    ({"messages": "hi"}, 400, "messages"),  # wrong type
    ({"messages": []}, 400, "messages"),  # empty conversation
    ({"messages": [{"role": "king", "content": "x"}]}, 400, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"messages": HI, "max_tokens": "ten"}, 400, "max_tokens"),
    ({"messages": HI, "max_tokens": 0}, 400, "max_tokens"),
    ({"messages": HI, "max_tokens": True}, 400, "max_tokens"),  # a boolean is not an int
    ({"messages": HI, "max_tokens": CTX - 10}, 400, "max_tokens"),  # prompt + max > ctx
    ({"messages": HI, "max_completion_tokens": 10**6}, 400, "max_completion_tokens"),
    ({"messages": HI, "temperature": 5}, 400, "temperature"),
    ({"messages": HI, "temperature": "hot"}, 400, "temperature"),
    ({"messages": HI, "top_p": -0.1}, 400, "top_p"),
    ({"messages": HI, "stop": [1]}, 400, "stop"),
    ({"messages": HI, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"messages": HI, "seed": 1.5}, 400, "seed"),
    ({"messages": HI, "presence_penalty": 3}, 400, "presence_penalty"),
    ({"messages": HI, "stream": "yes"}, 400, "stream"),
    ({"messages": HI, "n": 2}, 400, "n"),
    ({"messages": [{"role": "user", "content": "word " * 2000}]}, 400, "messages"),  # > ctx
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_chat_requests_name_the_field(srv, body, status, param):
    code, r = post(srv, "/v1/chat/completions", body)
    assert code == status, r
    err = r["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert param in err["message"]


def test_bad_completion_requests(srv):
    for body, param in (({"prompt": 3}, "prompt"), ({}, "prompt"),
                        ({"prompt": [10**9]}, "prompt"), ({"prompt": "x", "echo": True}, "echo")):
        code, r = post(srv, "/v1/completions", body)
        assert code == 400 and r["error"]["param"] == param, r


def test_oversize_body_and_unknown_path(srv):
    code, r = post(srv, "/v1/chat/completions", {"messages": HI, "pad": "x" * 70000})
    assert code == 413 and r["error"]["param"] == "body"
    for path, status in (("/v1/nothing", 404), ("/v1/chat/completions", 405)):
        code, _, data = request(srv.url, "GET", path)
        assert code == status and "error" in json.loads(data)


def test_openai_client_raises_typed_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, max_tokens=CTX - 5)  # fits the limit, not beside the prompt
    assert e.value.body["param"] == "max_tokens"
    assert e.value.body["code"] == "context_length_exceeded"
    assert chat(client, **GREEDY).choices[0].message.content  # still serving


def wait_idle(srv, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = get_json(srv.url, "/health")
        if h["slots_processing"] == 0 and h["queued"] == 0:
            return h
        time.sleep(0.02)
    raise AssertionError(f"slots still busy after {timeout} s: {h}")


def test_dropped_stream_frees_its_slot(srv, client):
    cancelled = wait_idle(srv)["requests_cancelled"]
    body = {"messages": HI, "stream": True, "max_tokens": 400, "temperature": 1.0,
            "seed": 5, "stop": ["never-generated"]}
    with Stream(srv.url, "/v1/chat/completions", body) as r:
        got = 0
        for line in r.lines():
            got += line.startswith("data: ")
            if got >= 3:
                break
        assert get_json(srv.url, "/health")["slots_processing"] == 1
    # the client closed the connection after 2 tokens of 400: the job was cancelled (not
    # finished), its slot is free, and the server keeps serving
    assert wait_idle(srv)["requests_cancelled"] == cancelled + 1
    assert chat(client, **GREEDY).choices[0].message.content
