"""runtime/chat.py renders like transformers' apply_chat_template, inside a sandbox."""

from __future__ import annotations

import pytest
from gguflite.runtime.chat import CHATML_TEMPLATE, get_chat_template, render_chat
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

import gguflite
from gguflite.default_model import default_model_path
from gguflite.errors import ModelError

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
    [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me about 🦙 and 你好\nin two lines."},
    ],
]

# Exercises the HF extras: namespace, tojson with options, loop controls, dict(), generation
# blocks, raise_exception, strftime_now, tools and extra variables.
FEATURE_TEMPLATE = """{{ bos_token }}
{%- set ns = namespace(n=0, sys='') -%}
{%- if tools %}Tools: {{ tools | tojson(indent=2) }}
{% endif -%}
{%- for m in messages -%}
  {%- if m.role not in ['system', 'user', 'assistant'] -%}
    {{ raise_exception('bad role: ' + m.role) }}
  {%- endif -%}
  {%- if m.role == 'system' %}{% set ns.sys = m.content %}{% continue %}{% endif -%}
  {%- set ns.n = ns.n + 1 -%}
  {%- if ns.n > 5 %}{% break %}{% endif %}
[{{ ns.n }}] {{ m.role }}{% if ns.sys %} ({{ ns.sys }}){% endif %}:
  {%- if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}
  {%- else %}{{ m.content | tojson }}{% endif %}{{ eos_token if loop.last else '' }}
{% endfor -%}
{{ dict(a=1, b=[2, 3]) | tojson(sort_keys=True) }} {{ strftime_now('%Y') | length }}
{%- if add_generation_prompt %} <assistant>{% if thinking %} <think>{% endif %}{% endif %}"""


def _hf(template: str, bos: str = "<s>", eos: str = "</s>") -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.BPE(vocab={bos: 0, eos: 1}, merges=[])),
        bos_token=bos,
        eos_token=eos,
    )
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def smollm2_template():
    with gguflite.open(default_model_path()) as f:
        return get_chat_template(f.metadata)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_smollm2_template_matches_hf(smollm2_template, messages, add_generation_prompt):
    hf = _hf(smollm2_template, "<|im_start|>", "<|im_end|>")
    expected = hf.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    got = render_chat(
        smollm2_template,
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
    )
    assert got == expected


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_feature_template_matches_hf(messages):
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"a": "int"}}}]
    hf = _hf(FEATURE_TEMPLATE)
    for kwargs in ({}, {"tools": tools, "thinking": True}):
        expected = hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **kwargs
        )
        got = render_chat(
            FEATURE_TEMPLATE, messages, bos_token="<s>", eos_token="</s>", **kwargs
        )
        assert got == expected


def test_none_values_are_dropped_like_hf():
    template = "{% for m in messages %}{{ m.content is defined }}{% endfor %}"
    messages = [{"role": "assistant", "content": None}]
    assert render_chat(template, messages) == "False"


@pytest.mark.parametrize(
    "template, match",
    [
        ("{{ ''.__class__.__mro__ }}", "sandbox"),  # dunder attribute walk
        ("{{ cycler.__init__.__globals__.os.system('touch /tmp/gguflite_pwned') }}", "sandbox"),
        ("{{ messages.append(1) }}", "sandbox"),  # mutating the caller's data
        ("{% set ns = namespace(_x=1) %}", "sandbox"),  # underscore names on namespace
        ("{{ raise_exception('only user/assistant roles') }}", "only user/assistant roles"),
        ("{% for m in messages %}", "syntax error"),
        ("{{ messages[0].content + 1 }}", "failed while rendering"),
        ("   ", "empty"),
    ],
)
def test_template_errors_are_model_errors(tmp_path, template, match):
    with pytest.raises(ModelError, match=match):
        render_chat(template, [{"role": "user", "content": "x"}])


def test_sandbox_does_not_execute(tmp_path):
    target = tmp_path / "pwned"
    template = "{{ cycler.__init__.__globals__.os.system('touch " + str(target) + "') }}"
    with pytest.raises(ModelError):
        render_chat(template, [])
    assert not target.exists()


def test_missing_template_and_documented_fallback():
    with pytest.raises(ModelError, match="no chat template.*fallback"):
        get_chat_template({})
    with pytest.raises(ModelError, match="tokenizer.chat_template.tool_use"):
        get_chat_template({"tokenizer.chat_template": "x"}, "tool_use")
    template = get_chat_template({}, fallback=CHATML_TEMPLATE)
    prompt = render_chat(template, CONVERSATIONS[1])
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # the fallback is used only when asked for: a file's own template wins
    assert get_chat_template({"tokenizer.chat_template": "T"}, fallback=CHATML_TEMPLATE) == "T"


def test_bad_messages():
    with pytest.raises(ModelError, match="list of dicts"):
        render_chat(CHATML_TEMPLATE, "hello")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="cannot be passed"):
        render_chat(CHATML_TEMPLATE, [{"role": "user", "content": object()}])


def test_chat_ids_on_smollm2_match_llama_cpp(smollm2_template):
    import llama_cpp
    from gguflite.runtime.chat import chat_ids, chat_prompt
    from gguflite.runtime.tokenizer import Tokenizer

    path = default_model_path()
    with gguflite.open(path) as f:
        tok = Tokenizer.from_metadata(f.metadata)
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for messages in CONVERSATIONS:
        prompt = chat_prompt(tok, messages)
        assert prompt == render_chat(
            smollm2_template, messages, bos_token="<|im_start|>", eos_token="<|im_end|>"
        )
        ids = chat_ids(tok, messages)
        assert ids == ref.tokenize(prompt.encode(), add_bos=False, special=True)
        assert ids[0] == tok.encode("<|im_start|>", add_special=False)[0]
        assert tok.decode(ids) == prompt


def test_chat_prompt_without_a_template_needs_the_fallback(tmp_path):
    import json

    from gguflite.converters.tokenizer_export import export_tokenizer
    from gguflite.runtime.chat import chat_prompt
    from gguflite.runtime.tokenizer import Tokenizer
    from helpers_tokenizers import items_to_metadata, make_bpe_dir

    d = make_bpe_dir(tmp_path / "t", "gpt2")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    tok = Tokenizer.from_metadata(items_to_metadata(items))
    assert tok.chat_template is None
    with pytest.raises(ModelError, match="no chat template"):
        chat_prompt(tok, CONVERSATIONS[0])
    prompt = chat_prompt(tok, CONVERSATIONS[0], fallback=CHATML_TEMPLATE)
    assert prompt == "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
