"""Hostile chat templates (issue 16, point 1): rendering is bounded in time, memory and output.

Each template is written into a real model file with ``gguflite set-metadata`` and run by
``gguflite run`` as a child under a 4 GiB address-space cap and a hard timeout: the child must
end with one ``error:`` line naming the template, exit 1, and leave no renderer behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hardening_cli import GIB, assert_one_line_error, run_cli
from tiny_models import make_tiny_llama

from gguflite.errors import ModelError
from gguflite.runtime import chat
from gguflite.runtime.chat import CHATML_TEMPLATE, render_chat

NESTED_LOOPS = ("{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}"
                "{% endfor %}{% endfor %}")
HUGE_STRING = "{{ 'x' * 4000000000 }}"
LONG_OUTPUT = "{% for i in range(2000) %}{{ 'y' * 1000000 }}{% endfor %}"
HUGE_CONSTANT = "{{ (10**10000000)|string|length }}"  # folded at compile time


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("tmpl") / "tiny.gguf")
    return path


def _with_template(tiny: Path, folder: Path, template: str) -> Path:
    (folder / "t.jinja").write_text(template, encoding="utf-8")
    out = folder / "hostile.gguf"
    proc = run_cli(["set-metadata", str(tiny), "--metadata-file",
                    "tokenizer.chat_template=t.jinja", "-o", str(out)], cwd=folder)
    assert proc.returncode == 0, proc.stderr.decode()
    return out


@pytest.mark.parametrize("template, pattern", [
    # two nested range(100000) loops: hours of work -> killed at the time limit
    (NESTED_LOOPS, r"chat template \(tokenizer\.chat_template of hostile\.gguf\) took more "
                   r"than \d+ s"),
    # a 4 GB string: refused by the renderer's address-space cap, not the caller's memory
    (HUGE_STRING, r"chat template \(tokenizer\.chat_template of hostile\.gguf\) needs more "
                  r"memory than the renderer's limit"),
])
def test_run_refuses_hostile_template_under_memory_cap(tiny, tmp_path, template, pattern):
    model = _with_template(tiny, tmp_path, template)
    proc = run_cli(["run", str(model), "-p", "hi", "-n", "2", "-t", "1"], cwd=tmp_path,
                   memory=4 * GIB)
    assert_one_line_error(proc, 1, pattern)
    assert not proc.stdout.strip()


def test_output_length_is_bounded_by_the_context(tiny):
    from gguflite.runtime import load

    with load(tiny, threads=1, n_ctx=32) as model:
        limit = 32 * max(map(len, model.tokenizer.vocab.tokens))
        with pytest.raises(ModelError, match=f"output exceeds {limit:,} characters"):
            model.render_chat([{"role": "user", "content": "hi"}], template=LONG_OUTPUT)
        # a legitimate template still renders afterwards, from the same renderer
        assert model.render_chat([{"role": "user", "content": "hi"}],
                                 template=CHATML_TEMPLATE).startswith("<|im_start|>user")


def test_time_limit_kills_the_renderer_and_the_next_render_works(monkeypatch):
    monkeypatch.setattr(chat, "RENDER_TIMEOUT_S", 1.0)
    render_chat(CHATML_TEMPLATE, [])  # the renderer is running
    pid = chat._RENDERER._proc.pid
    t0 = time.monotonic()
    with pytest.raises(ModelError, match=r"took more than 1 s to render"):
        render_chat(HUGE_CONSTANT, [], name="test")
    assert time.monotonic() - t0 < 60  # bounded (a generous bound for a loaded machine)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: nothing left behind
    assert render_chat(CHATML_TEMPLATE, [{"role": "user", "content": "a"}]).endswith(
        "assistant\n")


@pytest.mark.parametrize("template, pattern", [
    ("{{ 'x' * 4000000000 }}", "needs more memory"),
    ("{{ [0] * 2000000000 }}", "needs more memory"),
    ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed too deeply"),
    ("{{ (1).__class__ }}", ""),  # the sandbox hides it: renders as undefined
    ("{{ 1 / 0 }}", "ZeroDivisionError"),
])
def test_render_chat_errors_are_one_line_model_errors(template, pattern):
    try:
        out = render_chat(template, [], max_chars=1000)
    except ModelError as exc:
        assert pattern and pattern in str(exc)
        assert "\n" not in str(exc)
    else:
        assert not pattern and out == ""
