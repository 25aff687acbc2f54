"""The Llama graph on tiny random models: against transformers, the NumPy reference, and on
malformed files. The tiny models come from tests/tiny_models.py (GGUF written directly with the
Q/K permutation; the same weights as a transformers LlamaForCausalLM)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import TinyConfig, hf_model, make_tiny_llama, random_weights, write_gguf

import gguflite
from gguflite.constants import GGMLType
from gguflite.errors import ModelError
from gguflite.runtime import load
from gguflite.runtime.reference import reference_logits, rope_reference

IDS = [1, 5, 300, 17, 42, 99, 7, 8, 260, 11, 12, 270, 3, 4, 290, 100]


def hf_logits(cfg: TinyConfig, sd: dict, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return hf_model(cfg, sd)(torch.tensor([ids])).logits[0].double().numpy()


@pytest.mark.parametrize(("wtype", "tol"), [
    (GGMLType.F32, 2e-5),  # float32 throughout: only summation order differs
    (GGMLType.F16, 2e-2),  # weights rounded to f16 in the file, HF keeps f32
])
@pytest.mark.parametrize("cfg", [
    TinyConfig(),  # GQA: 4 query heads share 2 kv heads
    TinyConfig(n_kv_head=1, tied=True),  # MQA and tied embeddings (no output.weight)
], ids=["gqa", "mqa-tied"])
def test_logits_match_transformers(tmp_path, wtype, tol, cfg):
    path, cfg, sd = make_tiny_llama(tmp_path / "m.gguf", cfg, wtype=wtype)
    with load(path, threads=2, kv_type="f32") as model:  # exact math; f16 cache below
        ours = model.logits(IDS)  # (n, vocab)
    ref = hf_logits(cfg, sd, IDS)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err < tol, f"max relative logit error {err:.2e} (tolerance {tol:.0e})"
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_greedy_continuation_matches_transformers(tmp_path):
    path, cfg, sd = make_tiny_llama(tmp_path / "m.gguf", seed=3)
    prompt = IDS[:6]
    with torch.no_grad():
        hf = hf_model(cfg, sd).generate(torch.tensor([prompt]), max_new_tokens=20,
                                        do_sample=False, eos_token_id=None, pad_token_id=0)
    expected = hf[0, len(prompt):].tolist()
    with load(path) as model:
        ids = list(prompt)
        for _ in range(20):  # token ids straight from the backend: no tokenizer, no EOS stop
            ids.append(int(np.argmax(model.eval(ids))))
    assert ids[len(prompt):] == expected


def test_rope_pairs_match_hf_rotate_half():
    """llama.cpp's adjacent-pair RoPE on permuted rows == HF's rotate_half on the originals."""
    from tiny_models import permute_qk
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rng = np.random.default_rng(0)
    n, heads, hd, theta = 5, 3, 16, 10000.0
    w = rng.standard_normal((heads * hd, 8))  # a q_proj
    h = rng.standard_normal((n, 8))
    q_hf = (h @ w.T).reshape(n, heads, hd)  # HF layout
    q_gg = (h @ permute_qk(w, heads).T).reshape(n, heads, hd)  # GGUF layout
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv  # (n, hd/2)
    emb = np.concatenate([ang, ang], -1)  # HF duplicates the angles
    cos, sin = torch.tensor(np.cos(emb))[None], torch.tensor(np.sin(emb))[None]
    qt = torch.tensor(q_hf).permute(1, 0, 2)[None]  # (1, heads, n, hd)
    rot_hf, _ = apply_rotary_pos_emb(qt, qt, cos, sin)
    rot_hf = rot_hf[0].permute(1, 0, 2).numpy()  # (n, heads, hd) HF layout
    rot_gg = rope_reference(q_gg, np.cos(ang), np.sin(ang), False)
    # Undo the permutation on the head dim: GGUF row 2i <-> HF i, 2i+1 <-> HF i + hd/2.
    back = np.concatenate([rot_gg[..., 0::2], rot_gg[..., 1::2]], -1)
    np.testing.assert_allclose(back, rot_hf, rtol=1e-10, atol=1e-10)


def test_prefill_equals_token_by_token(tmp_path):
    path, _, _ = make_tiny_llama(tmp_path / "m.gguf")
    with load(path, n_batch=4, kv_type="f32") as model:  # 16 tokens = 4 prefill chunks
        full = model.logits(IDS)
        model.reset()
        steps = np.stack([model.backend.forward(np.array([t]), i).copy()
                          for i, t in enumerate(IDS)])
    np.testing.assert_allclose(steps, full, rtol=0, atol=1e-4 * np.abs(full).max())


@pytest.mark.parametrize(("wtype", "tol"), [
    (GGMLType.F32, 1e-5),  # float dots: only summation order differs
    # int8 activations: a 1-ulp difference in a norm (fastmath sums in another order) can move
    # one activation across a rounding boundary; measured differences reach ~1% of the range.
    (GGMLType.Q4_K, 0.05),
], ids=lambda v: getattr(v, "name", str(v)))
def test_fused_decode_step_equals_per_op_path(tmp_path, wtype, tol):
    """decode.decode_step (one Numba call per token) == the per-op Python graph, on a
    Q4_K_M-like mix (attn_v and ffn_down in Q6_K: q/k/v cannot share one parallel group)."""
    cfg = TinyConfig(dim=256, hidden_dim=512)
    mix = {"attn_v.weight": GGMLType.Q6_K, "ffn_down.weight": GGMLType.Q6_K}
    path = write_gguf(tmp_path / "mix.gguf", cfg, random_weights(cfg), wtype=wtype,
                      embd_type=GGMLType.Q6_K,
                      type_overrides=mix if wtype != GGMLType.F32 else None)
    with load(path) as model:
        backend = model.backend
        assert backend.plan is not None
        fused = np.stack([backend.forward(np.array([t]), i).copy() for i, t in enumerate(IDS)])
        backend.enable_timers()  # timers select the per-op path
        per_op = np.stack([backend.forward(np.array([t]), i).copy()
                           for i, t in enumerate(IDS)])
        assert set(backend.timers) >= {"linear", "attention", "norm"}
    err = np.abs(fused - per_op).max() / np.abs(per_op).max()
    assert err < tol, f"fused vs per-op relative difference {err:.2e}"
    assert (fused.argmax(-1) == per_op.argmax(-1)).all()


def test_rope_freq_factors_follow_the_reference(tmp_path):
    """llama3-style rope_freqs.weight: the fast path equals the float64 reference, and the
    factors change the logits. Against llama.cpp (factors and linear scaling): see
    test_runtime_llamacpp.py::test_tiny_model_agrees_with_llama_cpp."""
    cfg = TinyConfig(rope_freq_factors=list(np.linspace(1.0, 8.0, 8)))
    path, _, _ = make_tiny_llama(tmp_path / "m.gguf", cfg)
    with load(path, kv_type="f32") as model, gguflite.open(path) as f:
        ours = model.logits(IDS)
        ref = reference_logits(f, IDS)
        assert model.backend.w.rope_factors is not None
    np.testing.assert_allclose(ours, ref, atol=2e-5 * np.abs(ref).max())
    plain, _, _ = make_tiny_llama(tmp_path / "p.gguf")
    with load(plain, kv_type="f32") as model:
        assert not np.allclose(model.logits(IDS), ours, atol=1e-3)  # the factors matter


QUANT_TYPES = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1,
               GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
               GGMLType.TQ2_0, GGMLType.BF16]


@pytest.mark.parametrize("wtype", QUANT_TYPES, ids=lambda t: t.name)
def test_quantized_logits_match_dequantized_reference(tmp_path, wtype):
    """Fused kernels (int8 activations, like llama.cpp) vs float64 math on decoded weights."""
    cfg = TinyConfig(dim=256, hidden_dim=512, n_layer=1, n_head=4, n_kv_head=2)
    path, _, _ = make_tiny_llama(tmp_path / "q.gguf", cfg, wtype=wtype)
    ids = IDS[:10]
    with load(path, kv_type="f32") as model, gguflite.open(path) as f:
        assert f.tensors["blk.0.attn_q.weight"].type == wtype
        ours = model.logits(ids)
        ref = reference_logits(f, ids)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    # Activation quantization to 8 bits per 32-block bounds the error near 1%.
    assert err < 0.03, f"{wtype.name}: relative logit error {err:.3e}"
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_quantized_embedding_table(tmp_path):
    """token_embd stored as Q6_K (as in llama.cpp Q4_K_M files) is decoded row by row."""
    cfg = TinyConfig(dim=256, hidden_dim=512)
    path, _, _ = make_tiny_llama(tmp_path / "e.gguf", cfg, wtype=GGMLType.Q8_0,
                                 embd_type=GGMLType.Q6_K)
    with load(path, kv_type="f32") as model, gguflite.open(path) as f:
        ours = model.logits(IDS[:6])
        ref = reference_logits(f, IDS[:6])
    assert np.abs(ours - ref).max() < 0.03 * np.abs(ref).max()


# --- files the runtime must refuse, each with a message naming the culprit -----------------
def _write(tmp_path, **kw):
    cfg = TinyConfig()
    return write_gguf(tmp_path / "bad.gguf", cfg, random_weights(cfg), **kw)


@pytest.mark.parametrize(("kw", "match"), [
    ({"omit": ("blk.1.ffn_up.weight",)}, "blk.1.ffn_up.weight' is missing"),  # missing tensor
    ({"omit": ("output_norm.weight",)}, "output_norm.weight' is missing"),
    ({"arch": "gpt2"}, "general.architecture is 'gpt2'"),  # unknown architecture
])
def test_malformed_files_fail_at_load(tmp_path, kw, match):
    path = _write(tmp_path, **kw)
    with pytest.raises(ModelError, match=match):
        load(path)


def test_wrong_shape_and_extra_tensor_fail_at_load(tmp_path):
    cfg = TinyConfig()
    sd = random_weights(cfg)
    sd["model.layers.0.mlp.up_proj.weight"] = sd["model.layers.0.mlp.up_proj.weight"][:64]
    with pytest.raises(ModelError, match=r"blk.0.ffn_up.weight' has shape \(64, 64\), "
                                         r"expected \(128, 64\)"):
        load(write_gguf(tmp_path / "s.gguf", cfg, sd))
    from gguflite import GGUFWriter

    good = make_tiny_llama(tmp_path / "g.gguf")[0]
    with gguflite.open(good) as f, GGUFWriter(tmp_path / "x.gguf") as w:  # + a bias tensor
        for key in f.metadata:
            et = f.metadata.element_type(key)
            w.add(key, f.metadata[key], f.metadata.value_type(key),
                  **({"element_type": et} if et is not None else {}))
        for name, ti in f.tensors.items():
            w.add_tensor(name, shape=ti.shape, type=ti.type, data=np.array(f.array(name)))
        w.add_tensor("blk.0.attn_q.bias", shape=(64,), type=GGMLType.F32,
                     data=np.zeros(64, np.float32))
    with pytest.raises(ModelError, match="blk.0.attn_q.bias' is not part of the llama graph"):
        load(tmp_path / "x.gguf")


def test_context_limits(tmp_path):
    path, cfg, _ = make_tiny_llama(tmp_path / "m.gguf")
    with pytest.raises(ModelError, match="n_ctx=512 must be in 1..256"):
        load(path, n_ctx=512)
    with load(path, n_ctx=32) as model:
        with pytest.raises(ModelError, match="plus max_tokens=30 needs 34 tokens but the "
                                             "context holds 32"):
            model.generate([1, 2, 3, 4], max_tokens=30)
        with pytest.raises(ModelError, match="context holds 32"):
            model.logits(list(range(33)))
        with pytest.raises(ModelError, match="token ids must be in 0..319"):
            model.logits([1, 320])


def test_decode_step_source_fingerprint_is_current():
    """decode.py carries a fingerprint of the modules its cached decode step inlines;
    Numba keys its cache on decode.py's text, so an outdated fingerprint could let a
    stale compiled step run after an edit of kernels/dispatch.py or ops.py."""
    from gguflite.runtime import decode

    assert decode.SOURCES_FINGERPRINT == decode.sources_fingerprint(), (
        "update SOURCES_FINGERPRINT in runtime/decode.py to "
        f"{decode.sources_fingerprint()!r}")


def test_f16_kv_cache_is_the_default_and_stays_close(tmp_path):
    """The default cache holds float16 (half the memory, as llama.cpp); it grows as the
    context fills, and its logits stay within f16 rounding of the f32 cache's."""
    path, _, _ = make_tiny_llama(tmp_path / "m.gguf")
    with load(path, n_ctx=256) as f16, load(path, n_ctx=256, kv_type="f32") as f32:
        kv = f16.backend.kv
        assert kv.k.dtype == np.uint16 and kv.capacity == 0  # nothing allocated yet
        a, b = f16.logits(IDS), f32.logits(IDS)
        assert kv.capacity >= len(IDS) and kv.capacity <= 256
        f16.reset()
        steps = np.stack([f16.backend.forward(np.array([t]), i) for i, t in enumerate(IDS)])
    err = np.abs(a - b).max() / np.abs(b).max()
    assert 0 < err < 2e-3, f"f16 cache vs f32 cache: relative logit error {err:.2e}"
    assert (a.argmax(-1) == b.argmax(-1)).all()
    np.testing.assert_allclose(steps, a, atol=1e-4 * np.abs(a).max())  # fused decode, f16
