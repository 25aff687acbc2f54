"""``gguflite quantize`` on every family is byte-identical to llama.cpp's ``llama_model_quantize``
with the same ftype on the same f32 file: the same type for every tensor (llama.cpp's
per-family rules: tied heads, Phi-3's fused attn_qkv, ...) and the same bytes."""

from __future__ import annotations

import pytest
from conftest import llama_cpp_quantize
from family_checkpoints import FAMILIES, family_checkpoint

import gguflite
from gguflite.converters.convert import convert
from gguflite.converters.requantize import requantize

# rows that are multiples of 256, so no K-quant falls back; tied and untied heads
SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64)
FAMILY_SHAPE = {"gemma3": dict(query_pre_attn_scalar=64)}
FTYPES = {"q8_0": 7, "q4_k_m": 15}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def f32_file(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    tied = request.param in ("gemma3", "qwen2")  # as the small real models of those families
    ck = family_checkpoint(d / "ck", request.param, tied=tied, **SHAPE,
                           **FAMILY_SHAPE.get(request.param, {}))
    convert(ck, d / "f32.gguf", type="f32")
    return request.param, d / "f32.gguf"


@pytest.mark.parametrize("recipe", sorted(FTYPES))
def test_quantize_equals_llama_model_quantize(f32_file, recipe, tmp_path):
    family, src = f32_file
    llama_cpp_quantize(src, tmp_path / "ref.gguf", FTYPES[recipe])
    requantize(src, tmp_path / "ours.gguf", type=recipe)
    with gguflite.open(tmp_path / "ours.gguf") as a, gguflite.open(tmp_path / "ref.gguf") as b:
        assert set(a.tensors) == set(b.tensors)
        types = {n: (ti.type.name, b.tensors[n].type.name) for n, ti in a.tensors.items()
                 if ti.type != b.tensors[n].type}
        assert not types, f"{family} {recipe}: (ours, llama.cpp) types differ: {types}"
        for name in a.tensors:
            assert bytes(a.raw(name)) == bytes(b.raw(name)), f"{family} {recipe}: {name}"
