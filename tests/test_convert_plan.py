"""The conversion plan: type recipes against llama.cpp's own quantizer, overrides, fallbacks,
importance matrices, the Q/K permutation, metadata types, dry-run output, bounded memory."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from checkpoints import CkptSpec, cached_checkpoint
from conftest import llama_cpp_quantize
from ggml_ref import ggml_quantize
from click.testing import CliRunner

import gguflite
from gguflite.cli.main import cli
from gguflite.constants import GGUFValueType as T
from gguflite.converters import convert as convert_mod
from gguflite.converters.convert import convert, plan_conversion
from gguflite.converters.imatrix import load_imatrix, save_imatrix
from gguflite.converters.recipe import use_more_bits
from gguflite.models.rope import permute_rows

WIDE = CkptSpec(hidden=256, intermediate=512, layers=8, heads=4, kv_heads=2, seed=5)
TINY = CkptSpec(shard_size="100KB")


@pytest.mark.parametrize(("recipe", "ftype"), [("q4_k_m", 15), ("q8_0", 7), ("q6_k", 18),
                                             ("tq2_0", 37), ("tq1_0", 36)])
def test_recipe_is_byte_identical_to_llama_cpp_quantize(recipe, ftype, tmp_path):
    """Converting straight to a recipe gives the same file data as converting to f32 and
    running llama.cpp's llama_model_quantize (same tensor types, same bytes)."""
    ckpt = cached_checkpoint(WIDE)
    convert(ckpt, tmp_path / "f32.gguf", type="f32")
    llama_cpp_quantize(tmp_path / "f32.gguf", tmp_path / "ref.gguf", ftype)
    convert(ckpt, tmp_path / "ours.gguf", type=recipe)
    with gguflite.open(tmp_path / "ours.gguf") as a, gguflite.open(tmp_path / "ref.gguf") as b:
        assert set(a.tensors) == set(b.tensors)  # llama.cpp writes them in another order
        for name, ti in a.tensors.items():
            assert ti.type == b.tensors[name].type, name
            assert bytes(a.raw(name)) == bytes(b.raw(name)), name
        assert a.metadata["general.file_type"] == b.metadata["general.file_type"] == ftype


def test_use_more_bits_matches_llama_cpp_rule():
    # llama.cpp: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2, integer division
    got = [i for i in range(30) if use_more_bits(i, 30)]
    assert got == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]


def test_permutation_is_llama_cpp_reshape_and_invertible():
    rng = np.random.default_rng(0)
    for rows, heads in ((64, 4), (48, 3), (32, 1)):
        w = rng.standard_normal((rows, 5)).astype(np.float32)
        # llama.cpp's LlamaModel.permute, in NumPy
        ref = w.reshape(heads, 2, rows // heads // 2, 5).swapaxes(1, 2).reshape(w.shape)
        np.testing.assert_array_equal(w[permute_rows(rows, heads)], ref)
        np.testing.assert_array_equal(ref[np.argsort(permute_rows(rows, heads))], w)


def test_fallback_and_overrides_in_plan():
    ckpt = cached_checkpoint(TINY)  # hidden 64, intermediate 160: no 256-multiple rows
    plan = plan_conversion(ckpt, type="q4_k_m", tensor_types=["blk.1.*=q6_k",
                                                               "re:attn_(q|k)=f16"],
                           output_type="q8_0", embedding_type="bf16")
    by = {t.name: t for t in plan.tensors}
    assert by["blk.0.attn_q.weight"].type == "f16"  # regex
    assert by["blk.0.attn_q.weight"].reason == "--tensor-type re:attn_(q|k)=f16".split("=")[0]
    assert by["token_embd.weight"].type == "bf16"
    assert by["output.weight"].type == "q8_0"
    assert by["blk.0.ffn_up.weight"].type == "q5_0"  # 64-wide rows: Q4_K falls back, as
    assert "fallback" in by["blk.0.ffn_up.weight"].reason  # in llama.cpp, to Q5_0
    assert by["blk.1.ffn_down.weight"].type == "q8_0"  # glob chose q6_k; 160 falls back
    assert all(t.type == "f32" for t in plan.tensors if len(t.shape) == 1)
    plan = plan_conversion(ckpt, type="q4_k_m", fallback_type="f16")
    by = {t.name: t.type for t in plan.tensors if len(t.shape) == 2}
    # llama.cpp's output rule: rows that do not fit the mix's type give Q8_0, no fallback
    assert by.pop("output.weight") == "q8_0"
    assert set(by.values()) == {"f16"}
    plan = plan_conversion(ckpt, type="q4_k_m", fallback_type="q8_0")  # one type for all
    assert {t.type for t in plan.tensors if len(t.shape) == 2} == {"q8_0"}


def test_metadata_types_follow_llama_cpp(tmp_path):
    """Same keys and value types as the llama.cpp-written SmolLM2 file, for the keys both
    have."""
    from gguflite.default_model import default_model_path

    out = tmp_path / "m.gguf"
    convert(cached_checkpoint(TINY), out, type="f16")
    with gguflite.open(out) as ours, gguflite.open(default_model_path()) as ref:
        shared = [k for k in ref.metadata if k in ours.metadata]
        assert len(shared) >= 25
        for k in shared:
            assert ours.metadata.value_type(k) == ref.metadata.value_type(k), k
            assert ours.metadata.element_type(k) == ref.metadata.element_type(k), k
        assert ours.metadata["general.file_type"] == 1
        assert ours.metadata["llama.attention.head_count_kv"] == 2
        assert ours.metadata["tokenizer.chat_template"].startswith("{% for m in messages %}")
    from gguflite.validate import validate

    report = validate(out, deep=True)  # every spec rule, registry key types, NaN scan
    assert report.ok and not report.findings, report.summary()


def test_dry_run_json_writes_nothing(tmp_path):
    out = tmp_path / "m.gguf"
    res = CliRunner().invoke(cli, ["convert", str(cached_checkpoint(TINY)), "-o", str(out),
                                   "--type", "q8_0", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert not out.exists()
    names = [t["name"] for t in plan["tensors"]]
    assert names[0] == "token_embd.weight" and "output.weight" in names
    q = next(t for t in plan["tensors"] if t["name"] == "blk.0.attn_q.weight")
    assert (q["type"], q["bytes_in"], q["bytes_out"]) == ("q8_0", 64 * 64 * 2, 64 * 64 // 32 * 34)
    assert plan["bytes_out"] == sum(t["bytes_out"] for t in plan["tensors"])


def test_imatrix_formats_round_trip_and_reach_the_quantizer(tmp_path):
    ckpt = cached_checkpoint(WIDE)
    rng = np.random.default_rng(1)
    name = "blk.3.ffn_up.weight"
    imp = rng.uniform(0.1, 10.0, 256).astype(np.float32)  # (cols,)
    save_imatrix(tmp_path / "imat.gguf", {name: (imp * 7, 7)}, datasets=["test"],
                 chunk_count=1, chunk_size=7)
    np.savez(tmp_path / "imat.npz", **{name: imp})
    for path in (tmp_path / "imat.gguf", tmp_path / "imat.npz"):
        np.testing.assert_allclose(load_imatrix(path)[name], imp, rtol=1e-6)
    convert(ckpt, tmp_path / "plain.gguf", type="q4_k_m")
    convert(ckpt, tmp_path / "imat.gguf.out", type="q4_k_m", imatrix=tmp_path / "imat.gguf")
    convert(ckpt, tmp_path / "f32.gguf", type="f32")
    with gguflite.open(tmp_path / "plain.gguf") as a, \
            gguflite.open(tmp_path / "imat.gguf.out") as b, \
            gguflite.open(tmp_path / "f32.gguf") as c:
        assert a.tensors[name].type == gguflite.GGMLType.Q4_K
        w = np.array(c.array(name))
        expected = ggml_quantize(int(gguflite.GGMLType.Q4_K), w,
                                 load_imatrix(tmp_path / "imat.gguf")[name])  # libggml's bytes
        assert bytes(b.raw(name)) == expected.tobytes()
        assert bytes(a.raw(name)) != bytes(b.raw(name))
        # the importance-weighted error is lower with the imatrix than without
        err = [float(((f.dequantize(name) - w) ** 2 * imp).sum()) for f in (a, b)]
        assert err[1] < err[0]
        for other in a.tensors:  # tensors without importance are unchanged
            if other != name:
                assert bytes(a.raw(other)) == bytes(b.raw(other)), other


def test_imatrix_wrong_width_is_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", **{"blk.0.ffn_up.weight": np.ones(17, np.float32)})
    with pytest.raises(gguflite.ConversionError, match="17 values"):
        plan_conversion(cached_checkpoint(WIDE), type="q4_k", imatrix=tmp_path / "bad.npz")


def test_km_tensors_are_stored_as_companions(tmp_path):
    from gguflite.quants import km

    out = tmp_path / "m.gguf"
    convert(cached_checkpoint(TINY), out, type="km4", tensor_types=["blk.1.*=km2"])
    with gguflite.open(out) as f, gguflite.open(out) as g:
        names = km.km_tensor_names(f)
        assert "blk.0.ffn_down.weight" in names and "token_embd.weight" not in names
        assert f.tensors["token_embd.weight"].type == gguflite.GGMLType.Q8_0
        kmt = km.from_gguf(f, "blk.1.attn_k.weight")
        assert (kmt.bits, kmt.shape) == (2, (32, 64))
        assert "blk.0.ffn_down.weight" not in g.tensors  # only the companions
    from gguflite.validate import validate

    report = validate(out)
    assert report.ok and not report.findings, report.summary()


def test_streaming_memory_is_bounded(tmp_path, monkeypatch):
    """Peak traced allocation while converting stays near one tensor, not the model."""
    from safetensors.numpy import save_file

    d = tmp_path / "big"
    ckpt = cached_checkpoint(TINY)
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (d / f).parent.mkdir(exist_ok=True)
        (d / f).write_bytes((ckpt / f).read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
               num_attention_heads=4, num_key_value_heads=4, head_dim=64)
    (d / "config.json").write_text(json.dumps(cfg))
    plan_shapes = {}
    rng = np.random.default_rng(0)
    v, h, ff = cfg["vocab_size"], 256, 1024
    tensors = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,),
               "lm_head.weight": (v, h)}
    for i in range(6):
        p = f"model.layers.{i}."
        tensors |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight":
                    (h,), p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight":
                    (h, h), p + "self_attn.v_proj.weight": (h, h),
                    p + "self_attn.o_proj.weight": (h, h), p + "mlp.gate_proj.weight": (ff, h),
                    p + "mlp.up_proj.weight": (ff, h), p + "mlp.down_proj.weight": (h, ff)}
    for name, shape in tensors.items():
        plan_shapes[name] = rng.standard_normal(shape).astype(np.float32) * 0.05
    save_file(plan_shapes, d / "model.safetensors")
    del plan_shapes
    model_bytes = sum(4 * math.prod(s) for s in tensors.values())
    largest = max(4 * math.prod(s) for s in tensors.values())
    monkeypatch.setattr(convert_mod, "CHUNK_BYTES", 64 << 10)
    plan_conversion(d, type="q8_0")  # warm caches (tokenizer parsing, codec compilation)
    tracemalloc.start()
    try:
        convert(d, tmp_path / "m.gguf", type="q8_0")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * largest + (2 << 20), (peak, largest, model_bytes)
    assert peak < model_bytes / 2


def test_general_metadata_from_readme_and_types(tmp_path):
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(cached_checkpoint(TINY), d)
    (d / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# model\n")
    plan = plan_conversion(d, type="f16", name="My-Model")
    md = {k: (v, t) for k, v, t, _ in plan.metadata}
    assert md["general.license"] == ("apache-2.0", T.STRING)
    assert md["general.name"] == ("My-Model", T.STRING)
    assert md["general.size_label"][0] == "163K"
    assert md["llama.rope.freq_base"] == (10000.0, T.FLOAT32)


def test_cli_progress_bar_names_tensors_and_bytes(tmp_path):
    out = tmp_path / "m.gguf"
    res = CliRunner().invoke(cli, ["convert", str(cached_checkpoint(TINY)), "-o", str(out),
                                   "--type", "q8_0"])
    assert res.exit_code == 0, res.output
    assert "convert: 100%" in res.output and "output.weight" in res.output
    assert "kB" in res.output or "B/s" in res.output
    assert f"wrote {out}" in res.output
