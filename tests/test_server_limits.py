"""gguflite serve's guards: --api-key (401), the bounded queue (503), and SIGTERM (in-flight
requests finish, then the process exits 0)."""

from __future__ import annotations

import json
import time

import openai
import pytest
from serve_process import ServeProcess, Stream, get_json, request

HI = [{"role": "user", "content": "Tell me a long story about a dragon."}]
KEY = "test-secret-key"


@pytest.fixture(scope="module")
def srv():
    with ServeProcess("--parallel", "1", "--queue", "1", "--ctx", "512", "--api-key", KEY,
                      "-t", "1") as s:
        yield s


def test_api_key(srv):
    for key in ("wrong", ""):
        bad = openai.OpenAI(base_url=srv.url + "/v1", api_key=key or "x", max_retries=0)
        if not key:  # no Authorization header at all
            code, _, data = request(srv.url, "GET", "/v1/models")
            assert code == 401 and json.loads(data)["error"]["code"] == "invalid_api_key"
            continue
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model="m", messages=HI, max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    good = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    r = good.chat.completions.create(model="m", messages=HI, max_tokens=2, temperature=0)
    assert r.usage.completion_tokens == 2
    assert request(srv.url, "GET", "/health")[0] == 200  # open, as in llama-server
    assert request(srv.url, "GET", "/")[0] == 200  # the page asks for the key itself


def test_full_queue_gets_503(srv):
    auth = {"Authorization": f"Bearer {KEY}"}
    body = {"messages": HI, "stream": True, "max_tokens": 300, "temperature": 1.0, "seed": 1,
            "stop": ["never-generated"]}
    path = "/v1/chat/completions"
    with Stream(srv.url, path, body, headers=auth) as running:
        next(running.lines())  # the one slot is busy
        with Stream(srv.url, path, body, headers=auth) as queued:  # waits (queue size 1)
            assert queued.status == 200
            for _ in range(500):
                if get_json(srv.url, "/health")["queued"] == 1:
                    break
                time.sleep(0.02)
            code, _, data = request(srv.url, "POST", path, body | {"stream": False},
                                    headers=auth)
            assert code == 503, data
            err = json.loads(data)["error"]
            assert err["code"] == "queue_full" and err["type"] == "server_error"


def test_sigterm_finishes_in_flight_then_exits():
    with ServeProcess("--parallel", "1", "--ctx", "256", "-t", "1") as s:
        body = {"messages": HI, "stream": True, "max_tokens": 32, "temperature": 0}
        with Stream(s.url, "/v1/chat/completions", body) as r:
            lines = r.lines()
            first = next(lines)
            assert first.startswith("data: ")
            s.proc.send_signal(15)  # SIGTERM while the reply streams
            rest = [ln for ln in lines if ln]
        assert rest[-1] == "data: [DONE]"  # the in-flight reply was finished
        assert '"finish_reason": "length"' in rest[-2] or '"finish_reason": "stop"' in rest[-2]
        assert s.proc.wait(60) == 0
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            request(s.url, "GET", "/health", timeout=5)
