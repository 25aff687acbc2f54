"""Generation loop, chat, perplexity, bench and the run/chat/perplexity/bench CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_helpers import assert_user_error
from click.testing import CliRunner
from gguflite.runtime import load
from gguflite.runtime.perplexity import perplexity
from tiny_models import make_tiny_llama

from gguflite.cli.main import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("gen") / "tiny.gguf", seed=7)
    return path


@pytest.fixture(scope="module")
def model(tiny):
    m = load(tiny, threads=1)  # one thread: robust timing on a loaded machine
    yield m
    m.close()


def test_greedy_text_is_the_argmax_chain(model):
    text = model.generate("the sea", max_tokens=12, temperature=0, stream=False)
    ids = model.tokenizer.encode("the sea")
    model.reset()
    out = []
    for _ in range(12):
        t = int(np.argmax(model.eval(ids + out)))
        if t in model.tokenizer.eot_ids:
            break
        out.append(t)
    assert text == model.tokenizer.decode(out)
    assert text.stats.n_prompt == len(ids)
    assert text.stats.n_generated == len(out)
    assert text.stats.stop_reason == ("length" if len(out) == 12 else "eog")


def test_stream_equals_string_and_seed_is_deterministic(model):
    kw = {"max_tokens": 16, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
          "seed": 11}
    a = "".join(model.generate("the sea", **kw))
    b = model.generate("the sea", stream=False, **kw)
    c = model.generate("the sea", stream=False, **(kw | {"seed": 12}))
    assert a == b
    assert a != c  # 16 tokens at temperature 1 on a random model: another seed differs


def test_stop_string_cuts_before_it(model):
    full = str(model.generate("the sea", max_tokens=24, temperature=0, stream=False))
    stop = full[len(full) // 2: len(full) // 2 + 3]
    cut = model.generate("the sea", max_tokens=24, temperature=0, stop=[stop], stream=False)
    assert cut == full[:full.index(stop)]
    assert cut.stats.stop_reason == "stop"


def test_prompt_prefix_is_reused_from_the_cache(model):
    first = model.generate("the sea is", max_tokens=4, temperature=0, stream=False)
    again = model.generate("the sea is", max_tokens=4, temperature=0, stream=False)
    assert again == first
    assert again.stats.n_prefill == 1  # only the last prompt token is re-run
    model.reset()
    fresh = model.generate("the sea is", max_tokens=4, temperature=0, stream=False)
    assert fresh == first and fresh.stats.n_prefill == fresh.stats.n_prompt


def test_smollm_chat_ends_at_end_of_turn(smollm2):  # the session's model (conftest.py)
    """The real model answers and stops on <|im_end|> (an end-of-generation token), with
    llama.cpp's greedy answer. (Greedy answers that start on a near-tie can tip either way with
    last-bit changes, which int8 activations amplify: "What is 2+2?" ("Two" / "The" within
    0.03) and "Name a color." ("indigo" / "red") have both done so; this one has not.)"""
    msgs = [{"role": "user", "content": "Name a fruit."}]
    reply = smollm2.chat(msgs, max_tokens=40, temperature=0, stream=False)
    assert reply == "The fruit I mentioned is the Banana."  # llama.cpp's reply, to the letter
    assert reply.stats.stop_reason == "eog"
    assert "<|im_end|>" not in reply


def test_perplexity_follows_llama_cpp_definition(model):
    rng = np.random.default_rng(0)
    ids = [1] + rng.integers(3, 320, size=40).tolist()  # 41 tokens: 2 chunks of 16
    r = perplexity(model, ids, ctx=16)
    nll = []
    for c in range(2):
        chunk = np.array(ids[16 * c:16 * (c + 1)])
        chunk[0] = 1  # BOS replaces each chunk's first token (the file adds BOS)
        lg = model.logits(chunk).astype(np.float64)
        for j in range(8, 15):  # second half, each predicting the next token
            lse = np.log(np.exp(lg[j] - lg[j].max()).sum()) + lg[j].max()
            nll.append(lse - lg[j, chunk[j + 1]])
    assert r.n_chunks == 2 and r.n_scored == 14
    assert math.isclose(r.ppl, math.exp(np.mean(nll)), rel_tol=1e-9)
    self_kl = perplexity(model, ids, ctx=16, base=model)
    assert self_kl.kld_mean == pytest.approx(0.0, abs=1e-9)
    assert self_kl.same_top == 1.0 and self_kl.ppl_base == pytest.approx(r.ppl)


def test_cli_run_raw_matches_api(tiny, model):
    res = CliRunner().invoke(cli, ["run", str(tiny), "-p", "the sea", "--raw", "--temp", "0",
                                   "-n", "8", "-t", "1"])
    assert res.exit_code == 0, res.output
    expected = model.generate("the sea", max_tokens=8, temperature=0, stream=False)
    assert res.stdout == expected + "\n"
    assert "decode" in res.stderr and "tok/s" in res.stderr


def test_cli_chat_reads_turns_from_stdin(tiny, model):
    res = CliRunner().invoke(cli, ["chat", str(tiny), "--temp", "0", "-n", "5", "-t", "1"],
                             input="hello\n/reset\nhello\n")
    assert res.exit_code == 0, res.output
    model.reset()
    one = model.chat([{"role": "user", "content": "hello"}], max_tokens=5, temperature=0,
                     stream=False)
    assert res.stdout == f"{one}\n{one}\n"  # /reset: the second turn starts over


def test_cli_perplexity_and_bench_json(tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the sea is blue and the sky is far " * 8, encoding="utf-8")
    res = CliRunner().invoke(cli, ["perplexity", str(tiny), "--text", str(text), "--ctx", "32",
                                   "--kl-base", str(tiny), "--json", "-t", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n_chunks"] >= 2 and out["ppl"] > 1.0 and out["same_top"] == 1.0
    res = CliRunner().invoke(cli, ["bench", str(tiny), "-p", "8", "-n", "4", "-r", "2",
                                   "--json", "-t", "1"])
    assert res.exit_code == 0, res.output
    tests = {r["test"]: r for r in json.loads(res.stdout)["results"]}
    assert set(tests) == {"pp8", "tg4"} and all(r["tps_mean"] > 0 for r in tests.values())


def test_cli_errors_are_one_line(tiny, tmp_path):
    short = tmp_path / "s.txt"
    short.write_text("the sea", encoding="utf-8")
    assert_user_error("perplexity", tiny, "--text", short, "-c", "64",
                      words=["needs at least 128"])
    assert_user_error("perplexity", tiny, "--text", short, words=["n_ctx=512 must be in 1..256"])
    assert_user_error("run", tmp_path / "nope.gguf", "-p", "x", words=["nope.gguf", "no such file"])


def test_cli_run_default_model():
    """`gguflite run` with no FILE uses the embedded SmolLM2 and its chat template."""
    args = ["-p", "Write a haiku about the sea.", "-n", "8", "--seed", "0", "-c", "256",
            "-t", "1"]
    res = CliRunner().invoke(cli, ["run", *args])
    assert res.exit_code == 0, res.output
    assert len(res.stdout.strip()) > 0 and "prefill" in res.stderr
    again = CliRunner().invoke(cli, ["run", "--default", *args])
    assert again.exit_code == 0 and again.stdout == res.stdout  # same seed, same text
