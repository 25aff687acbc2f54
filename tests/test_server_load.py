"""A bounded load test on loopback: more concurrent clients than slots, every request served
completely; and greedy replies are the same whether requests run together or one at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from serve_process import ServeProcess

N_CLIENTS = 6  # concurrent clients (more than the 4 slots: some wait in the queue)
N_PER_CLIENT = 3  # requests each
MAX_TOKENS = 12
TOPICS = ["the sea", "a cat", "mountains", "bread", "the moon", "trains"]


@pytest.fixture(scope="module")
def client():
    with ServeProcess("--parallel", "4", "--ctx", "256", "--queue", "8", "-t", "1") as s:
        yield openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0,
                            timeout=300)


def ask(client, topic, *, stream, **kw):
    messages = [{"role": "user", "content": f"Write one sentence about {topic}."}]
    args = {"model": "m", "messages": messages, "max_tokens": MAX_TOKENS} | kw
    if not stream:
        r = client.chat.completions.create(**args)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage
    chunks = list(client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **args))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    return text, finish, chunks[-1].usage


def test_concurrent_clients_all_complete(client):
    def one_client(i):
        out = []
        for k in range(N_PER_CLIENT):
            out.append(ask(client, TOPICS[(i + k) % len(TOPICS)], stream=(i + k) % 2 == 0,
                           temperature=0.8, seed=i * 10 + k))
        return out

    with ThreadPoolExecutor(N_CLIENTS) as pool:
        results = [r for rs in pool.map(one_client, range(N_CLIENTS)) for r in rs]
    assert len(results) == N_CLIENTS * N_PER_CLIENT
    for text, finish, usage in results:
        assert finish in ("stop", "length")
        assert usage.completion_tokens <= MAX_TOKENS
        if finish == "length":
            assert usage.completion_tokens == MAX_TOKENS and text


def test_greedy_same_together_and_alone(client):
    kw = {"temperature": 0, "extra_body": {"cache_prompt": False}}
    alone = [ask(client, t, stream=False, **kw)[0] for t in TOPICS]
    with ThreadPoolExecutor(len(TOPICS)) as pool:
        together = list(pool.map(lambda t: ask(client, t, stream=True, **kw)[0], TOPICS))
    assert together == alone
