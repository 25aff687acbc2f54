"""Runtime tokenizer behaviour beyond id parity: metadata errors, pieces, streaming, EOG ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gguflite.converters.tokenizer_export import export_tokenizer
from gguflite.runtime.tokenizer import Tokenizer, TokenType
from helpers_tokenizers import TEST_STRINGS, items_to_metadata, make_bpe_dir, make_spm_dir

from gguflite.errors import ModelError


def _metadata(d):
    return items_to_metadata(export_tokenizer(d, json.loads((d / "config.json").read_text())))


@pytest.fixture(scope="module")
def spm_md(tmp_path_factory):
    return _metadata(make_spm_dir(tmp_path_factory.mktemp("s") / "spm"))


@pytest.fixture(scope="module")
def bpe_md(tmp_path_factory):
    return _metadata(make_bpe_dir(tmp_path_factory.mktemp("b") / "bpe", "smollm"))


def _broken(md, **changes):
    out = dict(md)
    for key, value in changes.items():
        key = "tokenizer.ggml." + key
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"model": None}, "no tokenizer in this file"),  # no tokenizer at all
        ({"model": "bert"}, "unsupported tokenizer.*'bert'"),  # kind we do not implement
        ({"pre": "made-up"}, "unsupported BPE pre-tokenizer.*'made-up'"),
        ({"merges": None}, "tokenizer.ggml.merges"),  # gpt2 without merges
        ({"merges": ["nospace"]}, r"merges\[0\]"),  # merge that is not "a b"
        ({"tokens": None}, "tokenizer.ggml.tokens"),
        ({"token_type": np.ones(3, np.int32)}, r"token_type.*\(3,\)"),  # wrong length
        ({"eos_token_id": True}, "eos_token_id.*integer"),  # a bool is not an id
        ({"add_bos_token": 1}, "add_bos_token.*bool"),
        ({"tokens": ["a", "b", "a"]}, r"tokens\[2\] = 'a' repeats"),
    ],
)
def test_bad_metadata_is_a_model_error(bpe_md, changes, match):
    with pytest.raises(ModelError, match=match):
        Tokenizer.from_metadata(_broken(bpe_md, **changes))


def test_out_of_range_special_id_is_ignored_like_llama_cpp(spm_md, caplog):
    # llama.cpp warns and keeps its default; gguflite validate reports it as rule V22
    tok = Tokenizer.from_metadata(_broken(spm_md, bos_token_id=10**6, padding_token_id=10**6))
    assert tok.bos_id == 1  # the SPM default
    assert "tokenizer.ggml.bos_token_id = 1000000 is outside" in caplog.text
    assert "tokenizer.ggml.padding_token_id" in caplog.text


def test_llama_cpp_key_spellings_are_read(spm_md):
    md = _broken(spm_md, unknown_token_id=5, seperator_token_id=6, padding_token_id=7)
    md["tokenizer.ggml.fim_pad_token_id"] = 8
    tok = Tokenizer.from_metadata(md)
    assert {k: tok.vocab.special[k] for k in ("unk", "sep", "pad", "fim_pad")} == {
        "unk": 5, "sep": 6, "pad": 7, "fim_pad": 8
    }
    assert 8 in tok.eot_ids  # llama.cpp ends generation at the FIM pad token


def test_empty_token_is_renamed_like_llama_cpp(spm_md, caplog):
    tokens = list(spm_md["tokenizer.ggml.tokens"])
    tokens[5] = ""
    tok = Tokenizer.from_metadata(_broken(spm_md, tokens=tokens))
    assert tok.vocab.tokens[5] == "[EMPTY_5]" and "empty tokens" in caplog.text


def test_malformed_byte_token_decodes_as_its_text(bpe_md):
    """A token typed BYTE whose text is not '<0xNN>' (found by the tokenizer fuzz harness: it
    loaded and encoded, then decode raised) decodes as its text, as an empty byte token that
    llama.cpp renames '[EMPTY_n]' does."""
    types = np.array(bpe_md["tokenizer.ggml.token_type"], np.int32).copy()
    types[1] = TokenType.BYTE
    tok = Tokenizer.from_metadata(_broken(bpe_md, token_type=types))
    assert tok.decode([1]) == tok.vocab.tokens[1]


def test_merge_with_unknown_token_is_a_model_error(bpe_md):
    merges = list(bpe_md["tokenizer.ggml.merges"]) + ["zzz_not_a_token qqq"]
    with pytest.raises(ModelError, match="merges do not fit"):
        Tokenizer.from_metadata(_broken(bpe_md, merges=merges))


def test_token_to_piece_kinds(spm_md):
    tok = Tokenizer.from_metadata(spm_md)
    types = tok.vocab.types
    byte = int(np.flatnonzero(types == TokenType.BYTE)[0x41])
    assert tok.vocab.tokens[byte] == "<0x41>" and tok.token_to_piece(byte) == b"A"
    assert tok.token_to_piece(tok.bos_id) == b"<s>"
    normal = tok.encode(" the", add_special=False)[0]
    assert tok.token_to_piece(normal).startswith(b" ")  # U+2581 -> space
    with pytest.raises(ModelError, match="outside the vocabulary"):
        tok.token_to_piece(tok.n_vocab)
    with pytest.raises(ModelError, match="outside the vocabulary"):
        tok.decode([-1])


def test_skip_special(spm_md):
    tok = Tokenizer.from_metadata(spm_md)
    ids = tok.encode("<|im_start|>hi<|im_end|>")
    # the dummy-prefix space of the first text token is dropped, so this round-trips
    assert tok.decode(ids) == "<s><|im_start|>hi<|im_end|>"
    assert tok.decode(ids, skip_special=True) == "hi"


@pytest.mark.parametrize("kind", ["spm", "bpe"])
def test_stream_decoder_never_emits_broken_utf8(spm_md, bpe_md, kind):
    tok = Tokenizer.from_metadata(spm_md if kind == "spm" else bpe_md)
    for text in TEST_STRINGS + ["𝄞 and 🏳️‍🌈 and 你好"]:
        ids = tok.encode(text, add_special=False)
        dec = tok.stream_decoder()
        parts = [dec.push(i) for i in ids]
        parts.append(dec.flush())
        assert all("\ufffd" not in p for p in parts), (text, parts)
        # the stream emits the exact pieces (decode() would drop the SPM dummy-prefix space)
        assert "".join(parts) == b"".join(tok.token_to_piece(i) for i in ids).decode("utf-8")


def test_stream_decoder_holds_partial_characters(spm_md):
    tok = Tokenizer.from_metadata(spm_md)
    ids = tok.encode("𝄞", add_special=False)[-4:]  # four byte-fallback tokens
    dec = tok.stream_decoder()
    assert [dec.push(i) for i in ids] == ["", "", "", "𝄞"]
    dec = tok.stream_decoder()
    assert dec.push(ids[0]) == "" and dec.flush() == "\ufffd"  # a cut character is U+FFFD


def test_eot_ids_and_defaults(spm_md, bpe_md):
    spm = Tokenizer.from_metadata(spm_md)
    assert spm.eos_id == 2 and spm.eos_id in spm.eot_ids
    assert spm.encode("<|im_end|>", add_special=False)[0] in spm.eot_ids
    bpe = Tokenizer.from_metadata(bpe_md)
    names = {bpe.vocab.tokens[i] for i in bpe.eot_ids}
    assert names == {"<|im_end|>", "<|endoftext|>"}
    # without the flags in the file, llama.cpp's defaults apply: SPM adds BOS and a space prefix
    bare = _broken(spm_md, add_bos_token=None, add_space_prefix=None)
    tok = Tokenizer.from_metadata(bare)
    assert tok.vocab.add_bos and tok.vocab.add_space_prefix
    assert tok.encode("hi") == spm.encode("hi")


def test_encode_needs_a_string(bpe_md):
    tok = Tokenizer.from_metadata(bpe_md)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
