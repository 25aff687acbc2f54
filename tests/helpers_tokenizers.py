"""Builders for small trained tokenizers, written as Hugging Face model directories.

Each builder trains a real tokenizer (sentencepiece or tokenizers) on ``CORPUS`` in well under a
second and saves it the way a Hugging Face repository ships it, so tests can run the reference
(transformers, loaded from the local files) and our exporter + runtime on the same thing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Training text: English prose and code, digits, contractions, accents, CJK, emoji, whitespace.
_LINES = [
    "The quick brown fox jumps over the lazy dog. The dog doesn't care; it's asleep.",
    "I've been told he's there, we'll see. You're right, they'd know and I'm sure.",
    "Hello world! Hello, World? hello... HELLO!!! Goodbye world.",
    "def tokenize(text: str) -> list[int]:\n    return [ord(c) for c in text]\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "Numbers: 0 1 2 3 12 123 1234 12345 3.14159 2,718 1e-5 0x1F 2024-11-25",
    "Café, naïve, résumé, façade, Über, Straße, crème brûlée, São Paulo.",
    "Привет, как дела? Всё хорошо, спасибо.",
    "你好，世界。我想在苹果工作。今天天气很好。",
    "こんにちは、元気ですか。東京は大きい都市です。",
    "Emoji: 🙂 😀 🚀 🦙 ✅ ❤️ 👍🏽 🏳️‍🌈",
    "Tabs\tand\ttabs, newlines\n\nand  double  spaces   and    more.",
    "Markdown: **bold**, _italic_, `code`, [link](http://example.com), # Title",
    "JSON: {\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "The model answered the question about tokenizers, merges and vocabularies.",
    "Sampling uses temperature, top-k, top-p and min-p before drawing a token.",
]
CORPUS = "\n".join(_LINES * 3)

# Strings whose ids must match the reference exactly.
TEST_STRINGS = [
    "",
    " ",
    "  ",
    "a",
    "Hello world",
    " Hello world",
    "  leading spaces",
    "trailing spaces   ",
    "Hello\nworld\n\n\nthree newlines",
    "\n\nstarts with newlines",
    "tabs\tand\t\ttabs",
    "mixed \t\n whitespace \r\n runs",
    "12345678",
    "3.14159 and 1,000,000 and 2024-11-25",
    "I'm sure you'll see they've done it, he's there, we'd go, I'LL SHOUT",
    "Café naïve résumé Über Straße",
    "你好，世界！我想在苹果工作。",
    "こんにちは世界",
    "Привет мир",
    "emoji 🙂🚀🦙 and ❤️ and 👍🏽 and 🏳️‍🌈",
    "code: def f(x):\n    return x * 2  # comment",
    "{\"json\": [1, 2, 3]}",
    "unseen word: zxqvbnmplk",
    "ÿ\u0100\u00a0non-breaking\u2009thin space",
    "a\u0301 combining accent",
    "!!!???...,,,;;;",
]


def _save_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def make_spm_dir(
    path: Path,
    *,
    vocab_size: int = 800,
    extra_special: tuple[str, ...] = ("<|im_start|>", "<|im_end|>"),
    add_dummy_prefix: bool = True,
    split_by_whitespace: bool = True,
    chat_template: str | None = None,
) -> Path:
    """A Llama-style SentencePiece BPE model with byte fallback, as a HF directory.

    Writes tokenizer.model, tokenizer_config.json (LlamaTokenizer, legacy=True, add_bos_token)
    and config.json. ``extra_special`` tokens are appended after the sentencepiece vocabulary as
    special added tokens (ids ``n_sp``, ``n_sp + 1``, ...), like chat fine-tunes do.
    ``split_by_whitespace=False`` lets pieces span words ("s▁the"), as some SPM models have.
    """
    import sentencepiece as spm

    path.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=add_dummy_prefix,
        split_by_whitespace=split_by_whitespace,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    (path / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    n_sp = sp.vocab_size()
    added = {
        "0": {"content": "<unk>", "special": True},
        "1": {"content": "<s>", "special": True},
        "2": {"content": "</s>", "special": True},
    }
    for k, text in enumerate(extra_special):
        added[str(n_sp + k)] = {"content": text, "special": True}
    for entry in added.values():
        entry.update(lstrip=False, rstrip=False, normalized=False, single_word=False)
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "add_prefix_space": add_dummy_prefix,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": added,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    _save_json(path / "tokenizer_config.json", config)
    _save_json(path / "config.json", {"vocab_size": n_sp + len(extra_special)})
    return path


# The Split regexes exactly as Meta-Llama-3 and Qwen2 ship them in tokenizer.json (JSON-escaped),
# kept here independently of the runtime's copies so a typo there cannot hide.
_HF_SPLIT_REGEX_JSON = {
    "llama3": r'''"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|'''
    r''' ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"''',
    "qwen2": r'''"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|'''
    r''' ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"''',
}


def _bpe_pre_tokenizer(style: str):
    from tokenizers import Regex, pre_tokenizers

    if style == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if style == "smollm":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    regex = json.loads(_HF_SPLIT_REGEX_JSON[style])
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


# style -> (bos, eos, specials in id order after the byte-level alphabet, add_bos)
_BPE_STYLES: dict[str, tuple[str | None, str, list[str], bool]] = {
    "gpt2": (None, "<|endoftext|>", ["<|endoftext|>"], False),
    "smollm": (
        "<|im_start|>",
        "<|im_end|>",
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>"],
        False,
    ),
    "llama3": (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eot_id|>"],
        True,
    ),
    "qwen2": (
        "<|endoftext|>", "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], False
    ),
}  # fmt: skip


def make_bpe_dir(
    path: Path,
    style: str,
    *,
    vocab_size: int = 600,
    user_defined: tuple[str, ...] = ("<tool>",),
    merges_as_pairs: bool = True,
    chat_template: str | None = None,
) -> Path:
    """A byte-level BPE tokenizer.json trained with the ``style``'s pre-tokenizer, as a HF dir.

    ``style`` is "gpt2", "smollm", "llama3" or "qwen2". Special tokens are added as special
    added tokens (Llama 3 style: a TemplateProcessing post-processor adds BOS); ``user_defined``
    tokens are added as non-special added tokens (matched in text, decoded verbatim).
    """
    from tokenizers import Tokenizer, decoders, models, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, specials, add_bos = _BPE_STYLES[style]
    path.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    tk.pre_tokenizer = _bpe_pre_tokenizer(style)
    tk.decoder = decoders.ByteLevel()
    from tokenizers import pre_tokenizers

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    if add_bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tk.token_to_id(bos))],
        )
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=bos,
        eos_token=eos,
        clean_up_tokenization_spaces=False,
    )
    if user_defined:
        fast.add_tokens(list(user_defined), special_tokens=False)
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(path))
    tj_path = path / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    merges = tj["model"]["merges"]
    if merges and not merges_as_pairs and isinstance(merges[0], list):
        tj["model"]["merges"] = [" ".join(m) for m in merges]
    elif merges and merges_as_pairs and isinstance(merges[0], str):
        tj["model"]["merges"] = [m.split(" ", 1) for m in merges]
    _save_json(tj_path, tj)
    tc = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["add_bos_token"] = add_bos
    _save_json(path / "tokenizer_config.json", tc)
    _save_json(path / "config.json", {"vocab_size": len(fast)})
    return path


def items_to_metadata(items) -> dict[str, Any]:
    """Exporter items -> the mapping shape a reader's ``metadata`` has (numeric arrays as numpy)."""
    md: dict[str, Any] = {}
    for key, value, _vtype, etype in items:
        if etype is not None and not isinstance(value, list | tuple):
            value = np.asarray(value)
        md[key] = value
    return md


def metadata_from_reader(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict copy of a gguflite reader's metadata (string arrays listed)."""
    return dict(metadata.items())


# ---------------------------------------------------------------------------- model families
# Tokenizers shaped like those of the issue-12 families (Qwen 2.5/3, Phi-4-mini, Gemma 3, Phi-3),
# with chat templates written after the ones those models ship.

# Qwen 3's template (tools left out): system turn, <think> stripped from earlier assistant turns,
# and ``enable_thinking=False`` pre-fills an empty think block.
QWEN3_TEMPLATE = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and \
not(message.content.startswith('<tool_response>') and \
message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = \
content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + \
reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

# Gemma 3's template: <bos>, the system message folded into the first user turn, "model" role.
GEMMA3_TEMPLATE = """\
{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {{ message['content'] | trim }}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

# Phi-3 (SentencePiece) and Phi-4-mini (GPT-4o BPE).
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI4_MINI_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# GPT-4o's (o200k) Split regex exactly as Xenova/gpt-4o and Phi-4-mini ship it (JSON-escaped).
_HF_GPT4O_REGEX_JSON = (
    r'''"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+'''
    r'''(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+'''
    r'''[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}|'''
    r''' ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"'''
)

# family -> (Split regex JSON, special tokens, non-special added tokens, bos, eos, config.json)
_BPE_FAMILIES: dict[str, tuple[str, list[str], list[str], str | None, str, dict[str, Any]]] = {
    # Qwen 2.5 / Qwen 3: no BOS added; <think> and <tool_call> are non-special added tokens
    "qwen3": (
        _HF_SPLIT_REGEX_JSON["qwen2"],
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        ["<think>", "</think>", "<tool_call>", "</tool_call>"],
        None, "<|im_end|>", {"model_type": "qwen3"},
    ),
    # Phi-4-mini: GPT2Tokenizer over the o200k regex, <|endoftext|> is both BOS and EOS
    "phi4-mini": (
        _HF_GPT4O_REGEX_JSON,
        ["<|endoftext|>", "<|endofprompt|>", "<|assistant|>", "<|end|>", "<|user|>",
         "<|system|>", "<|tool|>", "<|/tool|>"],
        [],
        "<|endoftext|>", "<|endoftext|>", {"model_type": "phi3"},
    ),
}  # fmt: skip


def make_bpe_family_dir(path: Path, family: str, *, vocab_size: int = 700,
                        chat_template: str | None = None) -> Path:
    """A byte-level BPE tokenizer shaped like ``family``'s ("qwen3", "phi4-mini"), as a HF dir.

    Trained with the family's Split regex (Hugging Face's original) and ByteLevel; Qwen's NFC
    normalizer is kept (llama.cpp ignores it). config.json names the family's ``model_type`` and
    the bos/eos ids (Qwen: bos = <|endoftext|>, which the tokenizer does not add).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    regex_json, specials, non_special, bos, eos, config = _BPE_FAMILIES[family]
    path.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.BPE())
    if family == "qwen3":
        tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(json.loads(regex_json)), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tk.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    from tokenizers import processors

    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos,
                                   pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)
    if non_special:
        fast.add_tokens(non_special, special_tokens=False)
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(str(path))
    tc = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    tc["add_bos_token"] = False
    _save_json(path / "tokenizer_config.json", tc)
    ids = {"bos_token_id": fast.convert_tokens_to_ids("<|endoftext|>"),
           "eos_token_id": fast.convert_tokens_to_ids(eos)}
    _save_json(path / "config.json", {**config, **ids, "vocab_size": len(fast)})
    return path


def _train_spm(**options: Any) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines()), model_writer=buf, model_type="bpe",
        byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2, **options)
    return buf.getvalue()


def _added(entries: dict[int, tuple[str, bool, bool]]) -> dict[str, dict[str, Any]]:
    """added_tokens_decoder from {id: (content, special, rstrip)}."""
    return {str(i): {"content": c, "special": sp, "rstrip": rs, "lstrip": False,
                     "normalized": False, "single_word": False}
            for i, (c, sp, rs) in entries.items()}


def make_gemma3_spm_dir(path: Path, *, vocab_size: int = 800,
                        chat_template: str | None = GEMMA3_TEMPLATE) -> Path:
    """A Gemma-3-shaped SentencePiece tokenizer as a HF dir.

    Like Gemma's tokenizer.model: BPE with byte fallback, no dummy prefix, ids <pad>=0 <eos>=1
    <bos>=2 <unk>=3, and <start_of_turn> / <end_of_turn> as sentencepiece user-defined pieces
    that tokenizer_config.json marks special. config.json says ``model_type: gemma3_text``.
    """
    import sentencepiece as spm

    path.mkdir(parents=True, exist_ok=True)
    blob = _train_spm(vocab_size=vocab_size, add_dummy_prefix=False, pad_id=0, eos_id=1,
                      bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
                      bos_piece="<bos>", unk_piece="<unk>",
                      user_defined_symbols=["<start_of_turn>", "<end_of_turn>"])
    (path / "tokenizer.model").write_bytes(blob)
    sp = spm.SentencePieceProcessor(model_proto=blob)
    turn = {sp.PieceToId(t): (t, True, False) for t in ("<start_of_turn>", "<end_of_turn>")}
    tc: dict[str, Any] = {
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False, "spaces_between_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": _added({0: ("<pad>", True, False), 1: ("<eos>", True, False),
                                        2: ("<bos>", True, False), 3: ("<unk>", True, False),
                                        **turn}),
    }
    if chat_template is not None:
        tc["chat_template"] = chat_template
    _save_json(path / "tokenizer_config.json", tc)
    _save_json(path / "config.json", {"model_type": "gemma3_text", "vocab_size": sp.vocab_size(),
                                      "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0})
    return path


def make_phi3_spm_dir(path: Path, *, vocab_size: int = 800, n_padding: int = 3,
                      chat_template: str | None = PHI3_TEMPLATE) -> Path:
    """A Phi-3-shaped SentencePiece tokenizer as a HF dir.

    A Llama 2 style tokenizer.model (dummy prefix, <unk>=0 <s>=1 </s>=2) plus Phi-3's added
    chat tokens after it, all special and, except <|endoftext|>, ``rstrip: true``; config.json's
    ``vocab_size`` is ``n_padding`` larger (Phi-3 pads 32011 tokens to 32064).
    """
    import sentencepiece as spm

    path.mkdir(parents=True, exist_ok=True)
    blob = _train_spm(vocab_size=vocab_size, add_dummy_prefix=True, unk_id=0, bos_id=1,
                      eos_id=2, pad_id=-1)
    (path / "tokenizer.model").write_bytes(blob)
    n_sp = spm.SentencePieceProcessor(model_proto=blob).vocab_size()
    chat = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
    added = {0: ("<unk>", True, False), 1: ("<s>", True, False), 2: ("</s>", True, True)}
    added |= {n_sp + k: (t, True, t != "<|endoftext|>") for k, t in enumerate(chat)}
    tc: dict[str, Any] = {
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<unk>", "add_bos_token": False,
        "add_eos_token": False, "legacy": False, "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": _added(added),
    }
    if chat_template is not None:
        tc["chat_template"] = chat_template
    _save_json(path / "tokenizer_config.json", tc)
    _save_json(path / "config.json", {"model_type": "phi3", "vocab_size": n_sp + 5 + n_padding,
                                      "bos_token_id": 1, "eos_token_id": n_sp})
    return path
