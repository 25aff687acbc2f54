"""``gguflite quantize``: requantize any readable file, keeping every metadata key."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from ggml_ref import ggml_dequantize, ggml_quantize
from gguflite.converters.requantize import requantize

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite.cli.main import cli
from gguflite.constants import GGUFValueType as T
from gguflite.default_model import default_model_path
from gguflite.errors import ConversionError


def _same_metadata_except(a, b, changed: set[str]) -> None:
    assert list(a.metadata) == list(b.metadata)
    for key in a.metadata:
        assert a.metadata.value_type(key) == b.metadata.value_type(key), key
        assert a.metadata.element_type(key) == b.metadata.element_type(key), key
        if key in changed:
            continue
        va, vb = a.metadata[key], b.metadata[key]
        if a.metadata.element_type(key) == T.STRING:
            assert va.tolist() == vb.tolist(), key
        elif isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb, err_msg=key)
        else:
            assert va == vb, key


@pytest.fixture(scope="module")
def smollm2_q8(tmp_path_factory):
    out = tmp_path_factory.mktemp("rq") / "smollm2.q8_0.gguf"
    requantize(default_model_path(), out, type="q8_0")
    return out


def test_llama_cpp_written_q4_1_to_q8_0(smollm2_q8):
    with gguflite.open(default_model_path()) as src, gguflite.open(smollm2_q8) as out:
        _same_metadata_except(src, out, {"general.file_type"})
        assert out.metadata["general.file_type"] == 7
        assert list(src.tensors) == list(out.tensors)
        for name, ti in src.tensors.items():
            to = out.tensors[name]
            assert to.shape == ti.shape
            if len(ti.shape) == 1 or ti.type == GGMLType.Q8_0:  # kept: copied byte for byte
                assert to.type == ti.type and bytes(out.raw(name)) == bytes(src.raw(name))
            else:
                assert to.type == GGMLType.Q8_0, name
        name = "blk.7.ffn_down.weight"  # Q4_1 -> Q8_0 is exactly quantize(dequantize(src))
        rows, cols = src.tensors[name].shape
        decoded = ggml_dequantize(int(GGMLType.Q4_1), src.raw(name), rows * cols)
        want = ggml_quantize(int(GGMLType.Q8_0), decoded.reshape(rows, cols))  # libggml's bytes
        assert bytes(out.raw(name)) == want.tobytes()


def test_requantized_file_runs_in_llama_cpp_like_the_original(smollm2_q8):
    from llama_cpp import Llama

    ids = [1, 504, 3458, 282, 4649, 314, 253]  # a short prompt
    logits = []
    for path in (default_model_path(), smollm2_q8):
        llm = Llama(model_path=str(path), logits_all=True, n_ctx=16, verbose=False)
        llm.eval(ids)
        logits.append(np.array(llm.scores[: len(ids)]))
    # Q4_1 -> Q8_0 moves each weight by at most half a Q8_0 step (observed: max logit change
    # ~1.6 on logits up to ~25, i.e. under 10% of their range)
    assert np.abs(logits[0] - logits[1]).max() < 0.1 * np.abs(logits[0]).max()
    assert (logits[0].argmax(-1) == logits[1].argmax(-1)).mean() >= 0.85


def _write(path, tensors: dict[str, tuple[GGMLType, np.ndarray, tuple[int, ...]]]) -> None:
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama", T.STRING)
        w.add("llama.block_count", 1, T.UINT32)
        w.add("general.file_type", 10, T.UINT32)
        for name, (ttype, data, shape) in tensors.items():
            w.add_tensor(name, shape=shape, type=ttype, data=data)


def test_decode_only_types_q2_k_and_q5_0(tmp_path):
    rng = np.random.default_rng(0)
    w2 = rng.standard_normal((8, 512)).astype(np.float32)
    w5 = rng.standard_normal((4, 64)).astype(np.float32)
    src = tmp_path / "src.gguf"
    _write(src, {
        "blk.0.ffn_down.weight": (GGMLType.Q2_K, ggml_quantize(int(GGMLType.Q2_K), w2), (8, 512)),
        "blk.0.attn_q.weight": (GGMLType.Q5_0, ggml_quantize(int(GGMLType.Q5_0), w5), (4, 64)),
        "blk.0.attn_norm.weight": (GGMLType.F32, np.ones(64, np.float32), (64,)),
    })
    out = tmp_path / "out.gguf"
    res = CliRunner().invoke(cli, ["quantize", str(src), str(out), "--type", "q4_k",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    with gguflite.open(src) as s, gguflite.open(out) as o:
        assert o.metadata["general.file_type"] == 14  # pure Q4_K is written as Q4_K_S
        t = o.tensors["blk.0.ffn_down.weight"]
        assert t.type == GGMLType.Q4_K
        decoded = ggml_dequantize(int(GGMLType.Q2_K), s.raw("blk.0.ffn_down.weight"), 8 * 512)
        expected = ggml_quantize(int(GGMLType.Q4_K), decoded.reshape(8, 512))  # libggml's bytes
        assert bytes(o.raw("blk.0.ffn_down.weight")) == expected.tobytes()
        # 64-wide rows do not fit Q4_K's 256 blocks: llama.cpp's Q5_0 fallback, which is the
        # source type, so the tensor is copied byte for byte
        assert o.tensors["blk.0.attn_q.weight"].type == GGMLType.Q5_0
        assert bytes(o.raw("blk.0.attn_q.weight")) == bytes(s.raw("blk.0.attn_q.weight"))
        assert bytes(o.raw("blk.0.attn_norm.weight")) == bytes(s.raw("blk.0.attn_norm.weight"))


def test_undecodable_type_is_refused_before_writing(tmp_path):
    src = tmp_path / "src.gguf"
    n_bytes = 2 * (2 + 256 // 4)  # two IQ2_XXS blocks
    _write(src, {"blk.0.attn_q.weight": (GGMLType.IQ2_XXS, np.zeros(n_bytes, np.uint8),
                                         (2, 256))})
    with pytest.raises(ConversionError, match="cannot decode IQ2_XXS"):
        requantize(src, tmp_path / "out.gguf", type="q8_0")
    assert not (tmp_path / "out.gguf").exists()


def test_same_type_is_a_byte_copy_and_dry_run_json(tmp_path):
    src = tmp_path / "src.gguf"
    rng = np.random.default_rng(2)
    _write(src, {"blk.0.attn_q.weight": (GGMLType.F32, rng.standard_normal((4, 64),
                                                                         ).astype(np.float32),
                                         (4, 64))})
    requantize(src, tmp_path / "same.gguf", type="f32")
    with gguflite.open(src) as a, gguflite.open(tmp_path / "same.gguf") as b:
        assert bytes(a.raw("blk.0.attn_q.weight")) == bytes(b.raw("blk.0.attn_q.weight"))
    res = CliRunner().invoke(cli, ["quantize", str(src), "--type", "q8_0", "--dry-run",
                                   "--json"])
    assert res.exit_code == 0, res.output
    import json

    (entry,) = json.loads(res.output)
    res = CliRunner().invoke(cli, ["quantize", str(src), "--type", "q8_0", "--dry-run"])
    assert res.exit_code == 0 and "F32    -> q8_0" in res.output, res.output
    assert (entry["src_type"], entry["type"], entry["bytes_out"]) == ("F32", "q8_0", 4 * 2 * 34)


def test_output_must_differ_from_input(tmp_path):
    src = tmp_path / "src.gguf"
    _write(src, {"blk.0.attn_norm.weight": (GGMLType.F32, np.ones(64, np.float32), (64,))})
    with pytest.raises(ConversionError, match="must differ"):
        requantize(src, src, type="q8_0")


def test_km_sources_are_decoded_or_copied(tmp_path):
    from gguflite.quants import km

    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    src = tmp_path / "km.gguf"
    with GGUFWriter(src) as wr:
        wr.add("general.architecture", "llama", T.STRING)
        km.add_to_writer(wr, "blk.0.attn_q.weight", km.quantize(w, 4))
        wr.add_tensor("blk.0.attn_norm.weight", shape=(64,), type=GGMLType.F32,
                      data=np.ones(64, np.float32))
    requantize(src, tmp_path / "q8.gguf", type="q8_0")
    requantize(src, tmp_path / "same.gguf", type="km4")
    with gguflite.open(src) as s, gguflite.open(tmp_path / "q8.gguf") as q, \
            gguflite.open(tmp_path / "same.gguf") as c:
        decoded = km.from_gguf(s, "blk.0.attn_q.weight").dequantize()
        assert q.tensors["blk.0.attn_q.weight"].type == GGMLType.Q8_0
        want = ggml_quantize(int(GGMLType.Q8_0), decoded)  # libggml's bytes
        assert bytes(q.raw("blk.0.attn_q.weight")) == want.tobytes()
        assert not [k for k in q.metadata if k.startswith(km.KEY_PREFIX)]  # stale keys gone
        assert "blk.0.attn_q.weight" + km.COMPANION_SUFFIX not in q.tensors
        for name in s.tensors:  # same recipe: companions copied byte for byte
            assert bytes(c.raw(name)) == bytes(s.raw(name)), name
        assert km.km_tensor_names(c) == ["blk.0.attn_q.weight"]


def test_km4_from_f32_with_and_without_imatrix(tmp_path):
    """`gguflite quantize --type km4 [--imatrix]`: the imatrix lowers the weighted error."""
    from gguflite.quants import km

    rng = np.random.default_rng(4)
    w = (rng.standard_t(4, (16, 100)) * 0.05).astype(np.float32)  # 100 wide: any row length
    imp = rng.gamma(0.3, 1.0, 100).astype(np.float32)
    src = tmp_path / "f32.gguf"
    with GGUFWriter(src) as wr:
        wr.add("general.architecture", "llama", T.STRING)
        wr.add_tensor("blk.0.ffn_down.weight", shape=w.shape, type=GGMLType.F32, data=w)
    np.savez(tmp_path / "imat.npz", **{"blk.0.ffn_down.weight": imp})
    err = {}
    for label, extra in (("plain", []), ("imat", ["--imatrix", str(tmp_path / "imat.npz")])):
        out = tmp_path / f"{label}.gguf"
        r = CliRunner().invoke(cli, ["quantize", str(src), str(out), "--type", "km4", *extra])
        assert r.exit_code == 0, r.output
        with gguflite.open(out) as f:
            assert km.km_tensor_names(f) == ["blk.0.ffn_down.weight"]
            w2 = km.from_gguf(f, "blk.0.ffn_down.weight").dequantize()
        err[label] = float((((w2 - w) ** 2) * imp).sum())
        want = km.quantize(w, 4, importance=imp if extra else None).dequantize()
        assert np.array_equal(w2, want)  # the CLI wrote what km.quantize computes
    assert err["imat"] < err["plain"]
