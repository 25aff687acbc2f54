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
