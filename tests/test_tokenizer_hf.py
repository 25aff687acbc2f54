"""Export + runtime tokenizer give the same ids as the Hugging Face tokenizer they came from.

Each tokenizer is trained in the test (helpers_tokenizers), saved as a HF model directory,
exported with converters/tokenizer_export.py and loaded with the runtime tokenizer; transformers
(loading the same local files) is the reference.
"""

from __future__ import annotations

import json

import pytest
import sentencepiece
from gguflite.converters.tokenizer_export import export_tokenizer
from gguflite.runtime.tokenizer import Tokenizer
from helpers_tokenizers import TEST_STRINGS, items_to_metadata, make_bpe_dir, make_spm_dir
from transformers import AutoTokenizer

BPE_STYLES = ["gpt2", "smollm", "llama3", "qwen2"]
# special and user-defined tokens written inside text, per style
SPECIAL_TEXTS = {
    # (no fragment after a special token starts with a space: see test_spm_ids_match_hf)
    "spm": ["<|im_start|>user\nhi<|im_end|>\n", "a<|im_end|>b", "x <|im_start|>y", "<s>x</s>"],
    "gpt2": ["a<|endoftext|>b", "x <tool> y", "<tool><tool>", "end<|endoftext|>"],
    "smollm": ["<|im_start|>user\nHi 123<|im_end|>\n", "x <tool> y", "<repo_name>r<|endoftext|>"],
    "llama3": [
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
        "x <tool> y",
    ],
    "qwen2": ["<|im_start|>system\nBe brief.<|im_end|>\n", "x <tool> y 12345"],
}


def _load(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    items = export_tokenizer(model_dir, config)
    return Tokenizer.from_metadata(items_to_metadata(items))


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    out = {}
    for style in BPE_STYLES:
        d = make_bpe_dir(root / style, style)
        out[style] = (_load(d), AutoTokenizer.from_pretrained(str(d)))
    return out


@pytest.fixture(scope="module")
def spm(tmp_path_factory):
    d = make_spm_dir(tmp_path_factory.mktemp("spm") / "m")
    hf = AutoTokenizer.from_pretrained(str(d), legacy=True)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    return _load(d), hf, sp


@pytest.mark.parametrize("style", BPE_STYLES)
def test_bpe_ids_match_hf(bpe, style):
    ours, hf = bpe[style]
    for text in TEST_STRINGS + SPECIAL_TEXTS[style]:
        assert ours.encode(text) == hf.encode(text), f"{style}: {text!r}"
        no_special = hf.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_special=False) == no_special, f"{style}: {text!r}"


@pytest.mark.parametrize("style", BPE_STYLES)
def test_bpe_decode_matches_hf_and_round_trips(bpe, style):
    ours, hf = bpe[style]
    for text in TEST_STRINGS + SPECIAL_TEXTS[style]:
        ids = ours.encode(text, add_special=False)
        assert ours.decode(ids) == text, f"{style}: {text!r}"
        assert ours.decode(ids) == hf.decode(ids), f"{style}: {text!r}"
        full = ours.encode(text)
        assert ours.decode(full, skip_special=True) == hf.decode(full, skip_special_tokens=True)


def test_bpe_bos_and_eot(bpe):
    llama3, hf = bpe["llama3"]
    assert llama3.bos_id == hf.bos_token_id
    assert llama3.encode("")[:1] == [hf.bos_token_id]
    assert hf.convert_tokens_to_ids("<|eot_id|>") in llama3.eot_ids
    gpt2, _ = bpe["gpt2"]
    assert gpt2.encode("") == []
    assert gpt2.eos_id in gpt2.eot_ids


def test_parse_special_false_tokenizes_control_tokens_as_text(bpe):
    ours, hf = bpe["smollm"]
    text = "<|im_start|>user <tool>"
    ids = ours.encode(text, add_special=False, parse_special=False)
    im_start = hf.convert_tokens_to_ids("<|im_start|>")
    assert im_start not in ids  # control token split into ordinary pieces
    assert hf.convert_tokens_to_ids("<tool>") in ids  # user-defined tokens are still matched
    assert ours.decode(ids) == text


def test_spm_ids_match_sentencepiece(spm):
    ours, _, sp = spm
    assert ours._spm._by_word  # this model takes the word-by-word path
    for text in TEST_STRINGS:
        assert ours.encode(text, add_special=False) == sp.encode(text), repr(text)
        assert ours.encode(text) == [sp.bos_id(), *sp.encode(text)], repr(text)
        ids = ours.encode(text, add_special=False)
        assert ours.decode(ids) == sp.decode(ids) == text, repr(text)


def test_spm_with_pieces_across_words_matches_sentencepiece(tmp_path):
    # pieces like "s▁the" defeat the word-by-word fast path; the whole-text merge must agree too
    d = make_spm_dir(tmp_path / "m", split_by_whitespace=False)
    ours = _load(d)
    assert any("\u2581" in p.lstrip("\u2581") for p in ours.vocab.tokens)
    assert not ours._spm._by_word
    sp = sentencepiece.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
    for text in TEST_STRINGS:
        assert ours.encode(text, add_special=False) == sp.encode(text), repr(text)


def test_spm_ids_match_hf(spm):
    ours, hf, _ = spm
    for text in TEST_STRINGS + SPECIAL_TEXTS["spm"]:
        if text[:1].isspace():
            # transformers' Metaspace pre-tokenizer skips the dummy prefix when a text fragment
            # already starts with a space; sentencepiece and llama.cpp add it (checked above and
            # in test_tokenizer_llama_cpp.py).
            continue
        assert ours.encode(text) == hf.encode(text), repr(text)


def test_spm_decode_matches_hf(spm):
    ours, hf, _ = spm
    for text in TEST_STRINGS + SPECIAL_TEXTS["spm"]:
        if text[:1].isspace():
            continue
        ids = ours.encode(text)
        assert ours.decode(ids, skip_special=True) == hf.decode(ids, skip_special_tokens=True)


def test_spm_bytes_fallback_and_specials(spm):
    ours, hf, _ = spm
    ids = ours.encode("𝄞", add_special=False)
    # U+1D11E is not in the small vocabulary: dummy prefix, then four <0xNN> byte tokens
    assert [ours.vocab.tokens[i] for i in ids[-4:]] == ["<0xF0>", "<0x9D>", "<0x84>", "<0x9E>"]
    im_end = hf.convert_tokens_to_ids("<|im_end|>")
    assert ours.encode("a<|im_end|>", add_special=False)[-1] == im_end
    assert im_end in ours.eot_ids
