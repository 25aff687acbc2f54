"""converters/tokenizer_export.py: metadata items, token types, special ids, templates, errors."""

from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from gguflite.converters.tokenizer_export import export_tokenizer
from helpers_tokenizers import make_bpe_dir, make_spm_dir

from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _export(d, **config_overrides):
    config = json.loads((d / "config.json").read_text()) | config_overrides
    items = export_tokenizer(d, config)
    keys = [k for k, *_ in items]
    assert len(keys) == len(set(keys)), "duplicate keys"
    return {k: (v, t, e) for k, v, t, e in items}


@pytest.fixture(scope="module")
def smollm_dir(tmp_path_factory):
    return make_bpe_dir(tmp_path_factory.mktemp("x") / "smollm", "smollm", chat_template="{{ 1 }}")


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    return make_spm_dir(tmp_path_factory.mktemp("x") / "spm")


def test_bpe_items_types_and_values(smollm_dir):
    md = _export(smollm_dir)
    assert md["tokenizer.ggml.model"] == ("gpt2", T.STRING, None)
    assert md["tokenizer.ggml.pre"] == ("smollm", T.STRING, None)
    tokens, vtype, etype = md["tokenizer.ggml.tokens"]
    assert (vtype, etype) == (T.ARRAY, T.STRING)
    types = np.asarray(md["tokenizer.ggml.token_type"][0])
    assert md["tokenizer.ggml.token_type"][1:] == (T.ARRAY, T.INT32) and types.dtype == np.int32
    tj = json.loads((smollm_dir / "tokenizer.json").read_text())
    for tok in tj["added_tokens"]:
        assert tokens[tok["id"]] == tok["content"]
        assert types[tok["id"]] == (CONTROL if tok["special"] else USER_DEFINED), tok
    for text, tid in tj["model"]["vocab"].items():
        assert tokens[tid] == text
    assert md["tokenizer.ggml.add_bos_token"] == (False, T.BOOL, None)
    assert md["tokenizer.ggml.eos_token_id"][0] == tokens.index("<|im_end|>")
    assert md["tokenizer.ggml.bos_token_id"][1] == T.UINT32
    assert md["tokenizer.chat_template"] == ("{{ 1 }}", T.STRING, None)


def _with_config_ids(d, tmp_path):
    """A copy of ``d`` whose config.json carries bos/eos ids, as HF Llama checkpoints' do (the
    SPM helper writes none, and gguf-py then finds no special ids to compare). eos is the chat
    end token <|im_end|> (801), not SentencePiece's own </s>, as in many chat checkpoints."""
    out = tmp_path / f"{d.name}-ids"
    shutil.copytree(d, out)
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(cfg | {"bos_token_id": 1, "eos_token_id": 801}))
    return out


# what gguf-py (llama.cpp's own reader of the same HF files) must find in each directory, so
# that the comparisons below compare something: (special ids, add_* flags, merges, template)
SPECIAL_VOCAB_HAS = {
    "smollm": ({"bos", "eos"}, {"bos"}, True, True),
    "spm-ids": ({"bos", "eos"}, {"bos", "eos"}, False, False),
}


def test_matches_gguf_py_special_vocab(smollm_dir, spm_dir, tmp_path):
    for d in (smollm_dir, _with_config_ids(spm_dir, tmp_path)):
        ids, flags, has_merges, has_template = SPECIAL_VOCAB_HAS[d.name]
        md = _export(d)
        ref = gguf.SpecialVocab(d, load_merges=True)
        assert set(ref.special_token_ids) >= ids, (d.name, ref.special_token_ids)
        assert set(ref.add_special_token) >= flags, (d.name, ref.add_special_token)
        assert bool(ref.merges) == has_merges and (ref.chat_template is not None) == has_template
        for kind, tid in ref.special_token_ids.items():
            assert md[f"tokenizer.ggml.{kind}_token_id"][0] == tid, (d.name, kind)
        for kind, flag in ref.add_special_token.items():
            assert md[f"tokenizer.ggml.add_{kind}_token"][0] == flag, (d.name, kind)
        if has_merges:
            assert md["tokenizer.ggml.merges"][0] == ref.merges
        else:
            assert "tokenizer.ggml.merges" not in md
        if has_template:
            assert md["tokenizer.chat_template"][0] == ref.chat_template


def test_spm_vocab_matches_gguf_py(spm_dir):
    """Every SentencePiece piece, score and type against gguf-py's SentencePieceVocab, except
    where tokenizer_config.json's added_tokens_decoder lists a piece: llama.cpp's converter
    (convert_hf_to_gguf, _create_vocab_sentencepiece) then scores it -1000 and types it CONTROL
    (special) or USER_DEFINED, as gguflite does."""
    md = _export(spm_dir)
    ref = list(gguf.vocab.SentencePieceVocab(spm_dir).all_tokens())  # (bytes, score, type)
    assert len(ref) > 700
    tokens = md["tokenizer.ggml.tokens"][0]
    scores = md["tokenizer.ggml.scores"][0]
    types = md["tokenizer.ggml.token_type"][0]
    added = {int(i): t["special"] for i, t in json.loads(
        (spm_dir / "tokenizer_config.json").read_text())["added_tokens_decoder"].items()}
    assert 0 in added  # <unk>: the override is exercised
    for i, (text, score, ttype) in enumerate(ref):
        assert tokens[i] == text.decode("utf-8"), i
        if i in added:
            assert (scores[i], types[i]) == (-1000.0, CONTROL if added[i] else USER_DEFINED), i
        else:
            assert (scores[i], types[i]) == (np.float32(score), int(ttype)), (i, tokens[i])


def test_merges_strings_and_pairs_give_the_same_items(tmp_path):
    a = _export(make_bpe_dir(tmp_path / "a", "llama3", merges_as_pairs=True))
    b = _export(make_bpe_dir(tmp_path / "b", "llama3", merges_as_pairs=False))
    assert a["tokenizer.ggml.merges"][0] == b["tokenizer.ggml.merges"][0]
    assert all(" " in m for m in a["tokenizer.ggml.merges"][0])
    assert a["tokenizer.ggml.pre"][0] == "llama-bpe"
    assert a["tokenizer.ggml.add_bos_token"][0] is True


def test_merge_pair_with_a_space_is_byte_level_encoded(tmp_path):
    d = make_bpe_dir(tmp_path / "m", "gpt2")
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["model"]["merges"].append(["a b", "c"])
    (d / "tokenizer.json").write_text(json.dumps(tj))
    assert _export(d)["tokenizer.ggml.merges"][0][-1] == "a\u0120b c"


def test_padding_to_config_vocab_size(smollm_dir):
    n = json.loads((smollm_dir / "config.json").read_text())["vocab_size"]
    md = _export(smollm_dir, vocab_size=n + 3)
    tokens = md["tokenizer.ggml.tokens"][0]
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, n + 3)]
    assert list(md["tokenizer.ggml.token_type"][0][n:]) == [UNUSED] * 3
    with pytest.raises(ConversionError, match="vocab_size"):
        _export(smollm_dir, vocab_size=n - 1)


def test_spm_items(spm_dir):
    import sentencepiece

    md = _export(spm_dir)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    tokens = md["tokenizer.ggml.tokens"][0]
    types = md["tokenizer.ggml.token_type"][0]
    scores, vtype, etype = md["tokenizer.ggml.scores"]
    assert (vtype, etype) == (T.ARRAY, T.FLOAT32) and scores.dtype == np.float32
    assert md["tokenizer.ggml.model"][0] == "llama" and md["tokenizer.ggml.pre"][0] == "default"
    n_sp = sp.vocab_size()
    assert len(tokens) == n_sp + 2 and tokens[n_sp:] == ["<|im_start|>", "<|im_end|>"]
    assert list(types[n_sp:]) == [CONTROL, CONTROL] and list(scores[n_sp:]) == [-1000.0] * 2
    assert types[0] == CONTROL  # <unk> is marked special in added_tokens_decoder, as llama.cpp
    assert [tokens[i] for i in range(n_sp) if types[i] == BYTE][:2] == ["<0x00>", "<0x01>"]
    assert sum(types == BYTE) == 256
    for i in range(3, n_sp, 37):
        assert tokens[i] == sp.IdToPiece(i) and scores[i] == np.float32(sp.GetScore(i))
    assert md["tokenizer.ggml.add_space_prefix"][0] is True
    assert (md["tokenizer.ggml.bos_token_id"][0], md["tokenizer.ggml.eos_token_id"][0]) == (1, 2)
    assert md["tokenizer.ggml.add_bos_token"][0] is True
    assert md["tokenizer.ggml.add_eos_token"][0] is False


def test_spm_add_dummy_prefix_read_from_the_model(tmp_path):
    d = make_spm_dir(tmp_path / "s", add_dummy_prefix=False)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    del tc["add_prefix_space"]  # so the value must come from tokenizer.model's normalizer_spec
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    assert _export(d)["tokenizer.ggml.add_space_prefix"][0] is False


def test_spm_without_config_files_uses_sentencepiece_ids(tmp_path, spm_dir):
    d = tmp_path / "bare"
    d.mkdir()
    shutil.copy(spm_dir / "tokenizer.model", d / "tokenizer.model")
    md = export_tokenizer(d, {})
    ids = {k: v for k, v, *_ in md if k.endswith("_token_id")}
    assert ids == {
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


@pytest.mark.parametrize(
    "template, files, expected",
    [
        # a plain string in tokenizer_config.json
        ("{{ messages }}", {}, {"tokenizer.chat_template": "{{ messages }}"}),
        # a list of named templates: default + named ones + the list of names
        (
            [{"name": "default", "template": "D"}, {"name": "tool use", "template": "U"}],
            {},
            {"tokenizer.chat_template": "D", "tokenizer.chat_template.tool_use": "U",
             "tokenizer.chat_templates": ["tool_use"]},
        ),
        # no template in tokenizer_config.json: chat_template.jinja
        (None, {"chat_template.jinja": "J"}, {"tokenizer.chat_template": "J"}),
        # nothing at all: no key
        (None, {}, {}),
    ],
)  # fmt: skip
def test_chat_template_sources(tmp_path, smollm_dir, template, files, expected):
    d = tmp_path / "t"
    shutil.copytree(smollm_dir, d)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc.pop("chat_template", None)
    (d / "chat_template.jinja").unlink(missing_ok=True)
    if template is not None:
        tc["chat_template"] = template
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    for name, text in files.items():
        (d / name).write_text(text)
    md = _export(d)
    got = {k: v[0] for k, v in md.items() if k.startswith("tokenizer.chat_template")}
    assert got == expected


def test_unknown_tokenizer_kinds_are_refused(tmp_path, smollm_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="no tokenizer.*SentencePiece"):
        export_tokenizer(empty, {})
    wordpiece = tmp_path / "wp"
    wordpiece.mkdir()
    (wordpiece / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}}, "pre_tokenizer": None})
    )
    with pytest.raises(ConversionError, match="non-byte-level"):
        export_tokenizer(wordpiece, {})
    odd = tmp_path / "odd"
    shutil.copytree(smollm_dir, odd)
    tj = json.loads((odd / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Whitespace"}, {"type": "ByteLevel", "use_regex": False}],
    }
    (odd / "tokenizer.json").write_text(json.dumps(tj))
    with pytest.raises(ConversionError, match="unsupported pre_tokenizer.*Whitespace"):
        export_tokenizer(odd, {})


def test_broken_json_names_the_file(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConversionError, match="tokenizer.json"):
        export_tokenizer(d, {})
