"""The runtime tokenizer gives llama.cpp's ids, on the real SmolLM2 file and on exported files.

llama.cpp (llama-cpp-python, ``vocab_only=True``) is the reference: the same file is tokenized
by both, for every combination of add_special / parse_special.
"""

from __future__ import annotations

import json

import llama_cpp
import pytest
from gguflite.converters.tokenizer_export import export_tokenizer
from gguflite.runtime.tokenizer import Tokenizer
from helpers_tokenizers import TEST_STRINGS, make_bpe_dir, make_spm_dir
from hypothesis import given, settings
from hypothesis import strategies as st

import gguflite
from gguflite.constants import GGUFValueType as T
from gguflite.default_model import default_model_path

CHAT_TEXTS = [
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi 42!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "a<|im_end|>b",
    "x <|im_start|> y",  # a space after a special token (SPM adds its dummy prefix again)
    "<|endoftext|>",
    "<tool> and <repo_name>",
    "<s>x</s>",
    "<|begin_of_text|>hi<|eot_id|>",
    # bytes SmolLM2 has no token for (0x16; lead byte 0xF1) block merges across them, then vanish
    '"\x16{ and ab\U00040000cd',
]


def _llama(path):
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def _assert_same_ids(tok: Tokenizer, ref, label: str) -> None:
    for text in TEST_STRINGS + CHAT_TEXTS:
        for add_special in (True, False):
            for parse_special in (True, False):
                ours = tok.encode(text, add_special=add_special, parse_special=parse_special)
                theirs = ref.tokenize(text.encode(), add_bos=add_special, special=parse_special)
                assert ours == theirs, f"{label}: {text!r} add={add_special} parse={parse_special}"


@pytest.fixture(scope="module")
def smollm2_tokenizers():
    path = default_model_path()
    with gguflite.open(path) as f:
        tok = Tokenizer.from_metadata(f.metadata)
    return tok, _llama(path)


def test_smollm2_ids_match_llama_cpp(smollm2_tokenizers):
    tok, ref = smollm2_tokenizers
    assert tok.vocab.pre == "smollm" and tok.n_vocab == ref.n_vocab()
    _assert_same_ids(tok, ref, "SmolLM2")


def test_smollm2_decode_matches_llama_cpp_and_round_trips(smollm2_tokenizers):
    tok, ref = smollm2_tokenizers
    for text in TEST_STRINGS + CHAT_TEXTS:
        ids = tok.encode(text)
        if "\x16" not in text:  # (that text holds bytes SmolLM2 cannot represent)
            assert tok.decode(ids) == text
        assert tok.decode_bytes(ids) == ref.detokenize(ids, special=True)
        for i in ids:
            assert tok.token_to_piece(i) == ref.detokenize([i], special=True)


def test_smollm2_special_ids(smollm2_tokenizers):
    tok, ref = smollm2_tokenizers
    assert (tok.bos_id, tok.eos_id) == (ref.token_bos(), ref.token_eos())
    # tokenizer.ggml.unknown_token_id / padding_token_id, llama.cpp's spellings
    assert (tok.vocab.special["unk"], tok.vocab.special["pad"]) == (0, 2)
    im_end = tok.encode("<|im_end|>", add_special=False)
    assert im_end == [tok.eos_id] and tok.eos_id in tok.eot_ids
    assert tok.encode("<|endoftext|>", add_special=False)[0] in tok.eot_ids


def _write_vocab_file(items, path):
    with gguflite.GGUFWriter(path) as w:
        w.add("general.architecture", "llama", T.STRING)
        w.add_items(items)
    return path


@pytest.mark.parametrize("kind", ["spm", "spm-across-words", "gpt2", "smollm", "llama3", "qwen2"])
def test_exported_files_match_llama_cpp(tmp_path, kind):
    d = tmp_path / kind
    if kind == "spm":
        make_spm_dir(d)
    elif kind == "spm-across-words":
        make_spm_dir(d, split_by_whitespace=False)
    else:
        make_bpe_dir(d, kind)
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    path = _write_vocab_file(items, tmp_path / f"{kind}.gguf")
    with gguflite.open(path) as f:
        tok = Tokenizer.from_metadata(f.metadata)
    ref = _llama(path)
    _assert_same_ids(tok, ref, kind)
    for text in TEST_STRINGS:
        ids = tok.encode(text, add_special=False)
        for i in ids:
            assert tok.token_to_piece(i) == ref.detokenize([i], special=True), (text, i)


def test_default_pre_tokenizer_matches_llama_cpp(tmp_path):
    # a BPE file without a known pre-tokenizer: llama.cpp's "default" regex list
    d = make_bpe_dir(tmp_path / "bpe", "gpt2")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    items = [(k, "default" if k == "tokenizer.ggml.pre" else v, t, e) for k, v, t, e in items]
    path = _write_vocab_file(items, tmp_path / "default.gguf")
    with gguflite.open(path) as f:
        tok = Tokenizer.from_metadata(f.metadata)
    ref = _llama(path)
    for text in TEST_STRINGS + ["a,b;c!!d $5+3=8 <x> ~|^ 1234567 don't"]:
        assert tok.encode(text, add_special=False) == ref.tokenize(text.encode(), add_bos=False)


# Text built from pieces that stress the tokenizers: specials, contractions, odd whitespace,
# combining marks, ZWJ emoji, control characters, BOM.
_PIECES = list("aAbz Zé你😀\n\r\t  .,'’!?0123456789-_<>|/\\") + [
    "'s", "'LL", "<|im_start|>", "<|im_end|>", "<tool>", "<s>", "</s>", "\u2028", "\u00a0",
    "\u3000", "\u0301", "\U0001f3f3\ufe0f\u200d\U0001f308", "\x00", "\x7f", "\ufeff",
    "<|endoftext|>", "<|eot_id|>",
]  # fmt: skip


@pytest.fixture(scope="module")
def spm_file(tmp_path_factory):
    d = make_spm_dir(tmp_path_factory.mktemp("h") / "spm")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    path = _write_vocab_file(items, d.parent / "spm.gguf")
    with gguflite.open(path) as f:
        return Tokenizer.from_metadata(f.metadata), _llama(path)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(_PIECES), max_size=14),
    extra=st.text(st.characters(exclude_categories=("Cs",)), max_size=6),
    add_special=st.booleans(),
    parse_special=st.booleans(),
)
def test_random_text_matches_llama_cpp(
    smollm2_tokenizers, spm_file, pieces, extra, add_special, parse_special
):
    text = "".join(pieces) + extra.replace("\x00", "")  # NUL would end llama.cpp's C string
    for tok, ref in (smollm2_tokenizers, spm_file):
        ids = tok.encode(text, add_special=add_special, parse_special=parse_special)
        assert ids == ref.tokenize(text.encode(), add_bos=add_special, special=parse_special)
        plain = tok.encode(text, add_special=False, parse_special=False)
        pieces = b"".join(ref.detokenize([i], special=True) for i in plain)
        assert b"".join(tok.token_to_piece(i) for i in plain) == pieces
    # byte fallback represents any text; SmolLM2 has no token for some bytes (e.g. 0x16, 0xF1),
    # which it drops, like llama.cpp
    tok = spm_file[0]
    assert tok.decode(tok.encode(text, add_special=False, parse_special=False)) == text
