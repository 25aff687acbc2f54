"""``gguflite set-metadata``: typed, validated edits; tensor bytes copied, never decoded."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
from cli_helpers import assert_user_error
from click.testing import CliRunner
from gguflite.converters.edit import EditError, set_metadata

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite.cli.main import cli
from gguflite.constants import GGUFValueType as T
from gguflite.default_model import default_model_path

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _data_digest(path) -> dict[str, str]:
    with gguflite.open(path) as f:
        return {n: hashlib.sha256(bytes(f.raw(n))).hexdigest() for n in f.tensors}


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "m.gguf"
    rng = np.random.default_rng(0)
    with GGUFWriter(path, alignment=64) as w:
        w.add("general.architecture", "llama", T.STRING)
        w.add("general.name", "before", T.STRING)
        w.add("llama.context_length", 2048, T.UINT32)
        w.add("tokenizer.ggml.tokens", ["a", "b", "c"], T.ARRAY, element_type=T.STRING)
        w.add("tokenizer.ggml.bos_token_id", 1, T.UINT32)
        w.add_tensor("blk.0.attn_q.weight", shape=(4, 32), type=GGMLType.Q8_0,
                     data=rng.integers(0, 255, 4 * 34, dtype=np.uint8))
        w.add_tensor("output_norm.weight", shape=(32,), type=GGMLType.F32,
                     data=rng.standard_normal(32).astype(np.float32))
    return path


def test_chat_template_from_file_in_place_on_the_real_model(tmp_path):
    model = tmp_path / "smol.gguf"
    shutil.copyfile(default_model_path(), model)
    before = _data_digest(model)
    (tmp_path / "t.jinja").write_text(TEMPLATE, encoding="utf-8")
    spec = f"tokenizer.chat_template={tmp_path}/t.jinja"
    res = CliRunner().invoke(cli, ["set-metadata", str(model), "general.name=Smol edited",
                                   "--metadata-file", spec])
    assert res.exit_code == 0, res.output
    assert _data_digest(model) == before  # tensor bytes untouched
    with gguflite.open(model) as f, gguflite.open(default_model_path()) as ref:
        assert f.metadata["tokenizer.chat_template"] == TEMPLATE
        assert f.metadata["general.name"] == "Smol edited"
        assert list(f.metadata) == list(ref.metadata)  # same keys, same order
        assert f.metadata.value_type("general.name") == T.STRING
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=16, verbose=False, vocab_only=True)
    assert llm.metadata["tokenizer.chat_template"] == TEMPLATE
    assert not list(tmp_path.glob(".*.tmp"))


# (assignment(s), explicit types, words in the error) -- one line per refusal
REFUSALS = {
    "out of range for the existing u32": ({"llama.context_length": "-1"}, {}, ["UINT32"]),
    "not a number": ({"llama.context_length": "lots"}, {}, ["not a valid u32"]),
    "new key without a type": ({"my.new_key": "1"}, {}, ["--type my.new_key=TYPE"]),
    "bad template": ({"tokenizer.chat_template": "{% for x in %}"}, {}, ["Jinja"]),
    "token id outside vocab": ({"tokenizer.ggml.eos_token_id": "3"}, {}, ["vocabulary"]),
    "bad key syntax": ({"Bad Key": "x"}, {"Bad Key": "str"}, ["lower-case"]),
    "alignment": ({"general.alignment": "64"}, {}, ["not editable"]),
    "bad bool": ({"my.flag": "maybe"}, {"my.flag": "bool"}, ["not a bool"]),
    "array not JSON": ({"my.list": "[1,"}, {"my.list": "[i32]"}, ["JSON list"]),
    "unknown type name": ({"my.x": "1"}, {"my.x": "int"}, ["unknown type"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_invalid_edits_are_refused_and_the_file_is_untouched(case, small):
    values, types, words = REFUSALS[case]
    before = small.read_bytes()
    with pytest.raises(gguflite.GGUFLiteError) as exc:
        set_metadata(small, values, types=types)
    for w in words:
        assert w in str(exc.value), (case, str(exc.value))
    assert small.read_bytes() == before
    assert sorted(os.listdir(small.parent)) == ["m.gguf"]


def test_types_existing_registry_explicit_and_arrays(small, tmp_path):
    out = tmp_path / "out.gguf"
    done = set_metadata(small, {
        "llama.context_length": "0x1000",  # existing key: stays UINT32
        "general.license": "mit",  # registry: str
        "llama.rope.freq_base": "500000",  # registry: f32
        "my.scores": "[1.5, -2]",
        "my.flag": "true",
    }, types={"my.scores": "[f32]", "my.flag": "bool"}, remove=["general.name"], out=out)
    assert "existing key" in done["llama.context_length"]
    assert "registry" in done["general.license"]
    with gguflite.open(out) as f:
        md = f.metadata
        assert (md["llama.context_length"], md.value_type("llama.context_length")) == \
            (4096, T.UINT32)
        assert md.value_type("general.license") == T.STRING
        assert (md["llama.rope.freq_base"], md.value_type("llama.rope.freq_base")) == \
            (500000.0, T.FLOAT32)
        assert md.element_type("my.scores") == T.FLOAT32
        np.testing.assert_array_equal(md["my.scores"], [1.5, -2.0])
        assert md["my.flag"] is True
        assert "general.name" not in md
        assert f.alignment == 64  # kept
    assert _data_digest(out) == _data_digest(small)


def test_explicit_type_overrides_the_existing_one(small):
    set_metadata(small, {"llama.context_length": "4096"}, types={"llama.context_length": "u64"})
    with gguflite.open(small) as f:
        assert f.metadata.value_type("llama.context_length") == T.UINT64


def test_remove_missing_key_and_cli_usage(small):
    with pytest.raises(EditError, match="no such key"):
        set_metadata(small, {}, remove=["not.there"])
    assert_user_error("set-metadata", small, code=2, words=["KEY=VALUE"])  # click usage error
    assert_user_error("set-metadata", small, "llama.context_length=x",
                      words=["llama.context_length", "not a valid u32"])
