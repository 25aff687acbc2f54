"""Converted files load in llama.cpp and compute what transformers computes.

Each variant is a tiny random checkpoint saved by ``save_pretrained`` (tests/checkpoints.py).
We convert it, run llama.cpp (llama-cpp-python) on a fixed token sequence and compare its
logits with ``LlamaForCausalLM`` / ``MistralForCausalLM`` in float32 on the same ids.

Tolerances (logits are O(1..5) here):
- f32 files, llama.cpp's KV cache in F32: max |diff| < 1e-4 (observed ~3e-6: float32
  summation order only).
- f16 files: llama.cpp also rounds activations to f16 for f16 matmuls: max |diff| < 3e-2.
- q8_0: weight and activation rounding to 8 bits: max |diff| < 0.25 and the same argmax on at
  least 90% of positions.
"""

from __future__ import annotations

import numpy as np
import pytest
from checkpoints import LLAMA3_ROPE, CkptSpec, cached_checkpoint, hf_logits
from llama_cpp import Llama

import gguflite
from gguflite.converters.convert import convert
from gguflite.models import family_for_hf
from gguflite.models.rope import llama3_factors

TEXT = "The quick brown fox jumps over the lazy dog. Hello world, it's 2024!"

VARIANTS = {
    # GQA (4 query heads, 2 kv heads), untied, bf16, sharded over several files, BPE tokenizer
    "gqa-sharded-bf16": CkptSpec(shard_size="100KB"),
    # tied embeddings, MHA, llama3 rope scaling (rope_freqs tensor), f32 weights, SentencePiece
    "tied-llama3-spm": CkptSpec(tied=True, heads=4, kv_heads=4, rope=LLAMA3_ROPE,
                                rope_theta=500000.0, dtype="float32", tokenizer="spm",
                                layers=3),
    # Llama 3.2-like: tied, GQA 8/2, llama3 rope scaling, Llama 3 BPE tokenizer, 2 shards
    "llama32-like": CkptSpec(tied=True, heads=8, kv_heads=2, rope=LLAMA3_ROPE,
                             rope_theta=500000.0, tokenizer="llama3", shard_size="150KB",
                             seed=2),
    # Mistral architecture name, f16 weights, 8 heads over 2 kv heads
    "mistral-f16": CkptSpec(arch="mistral", heads=8, kv_heads=2, dtype="float16", seed=1),
}


def _llama_cpp_logits(path, ids: list[int]) -> np.ndarray:
    # F32 KV cache (type_k/type_v = GGML_TYPE_F32) so the cache adds no rounding of its own
    llm = Llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False, type_k=0,
                type_v=0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _hf_ids(ckpt) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ckpt))(TEXT)["input_ids"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_f32_logits_match_transformers(variant, tmp_path):
    ckpt = cached_checkpoint(VARIANTS[variant])
    out = tmp_path / "m.gguf"
    convert(ckpt, out, type="f32")
    ids = _hf_ids(ckpt)
    ref = hf_logits(ckpt, ids)
    got = _llama_cpp_logits(out, ids)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max()
    assert err < 1e-4, f"{variant}: max |llama.cpp - transformers| = {err}"


@pytest.mark.parametrize("variant", ["gqa-sharded-bf16", "mistral-f16"])
def test_f16_logits_match_transformers(variant, tmp_path):
    ckpt = cached_checkpoint(VARIANTS[variant])
    out = tmp_path / "m.gguf"
    convert(ckpt, out, type="f16")
    ids = _hf_ids(ckpt)
    err = np.abs(_llama_cpp_logits(out, ids) - hf_logits(ckpt, ids)).max()
    assert err < 3e-2, f"{variant}: max |llama.cpp - transformers| = {err}"


def test_q8_0_logits_close_to_transformers(tmp_path):
    ckpt = cached_checkpoint(VARIANTS["gqa-sharded-bf16"])
    out = tmp_path / "m.gguf"
    convert(ckpt, out, type="q8_0")
    with gguflite.open(out) as f:
        assert f.tensors["blk.0.attn_q.weight"].type == gguflite.GGMLType.Q8_0
        assert f.tensors["blk.0.attn_norm.weight"].type == gguflite.GGMLType.F32
    ids = _hf_ids(ckpt)
    got, ref = _llama_cpp_logits(out, ids), hf_logits(ckpt, ids)
    assert np.abs(got - ref).max() < 0.25
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


TOKENIZER_TEXTS = (TEXT, "Café naïve 12345", "  two spaces\nand a newline", "你好 🙂")


@pytest.mark.parametrize("variant", ["gqa-sharded-bf16", "llama32-like"])
def test_llama_cpp_tokenizer_reproduces_hf_ids_bpe(variant, tmp_path):
    ckpt = cached_checkpoint(VARIANTS[variant])
    out = tmp_path / "m.gguf"
    convert(ckpt, out, type="f16")
    llm = Llama(model_path=str(out), n_ctx=64, verbose=False, vocab_only=True)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(ckpt))
    for text in TOKENIZER_TEXTS:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf(text)["input_ids"]


def test_llama_cpp_tokenizer_reproduces_sentencepiece_ids(tmp_path):
    """SentencePiece checkpoints: the reference is sentencepiece itself. (transformers 5's
    LlamaTokenizer differs from it on leading double spaces; llama.cpp follows sentencepiece.)"""
    import sentencepiece as spm

    ckpt = cached_checkpoint(VARIANTS["tied-llama3-spm"])
    out = tmp_path / "m.gguf"
    convert(ckpt, out, type="f16")
    llm = Llama(model_path=str(out), n_ctx=64, verbose=False, vocab_only=True)
    sp = spm.SentencePieceProcessor(model_file=str(ckpt / "tokenizer.model"))
    for text in TOKENIZER_TEXTS:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == [1, *sp.encode(text)]


def test_tied_and_llama3_layout(tmp_path):
    ckpt = cached_checkpoint(VARIANTS["tied-llama3-spm"])
    out = tmp_path / "m.gguf"
    convert(ckpt, out, type="f32")
    with gguflite.open(out) as f:
        assert "output.weight" not in f.tensors  # tied: llama.cpp falls back to token_embd
        config = __import__("json").loads((ckpt / "config.json").read_text())
        hp = family_for_hf(config).from_config(config)
        np.testing.assert_array_equal(f.array("rope_freqs.weight"), llama3_factors(hp))
        assert f.metadata["llama.rope.freq_base"] == 500000.0


def test_llama3_factors_match_transformers():
    """Our rope_freqs divisors equal transformers' own llama3 frequency scaling."""
    import torch
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {**LLAMA3_ROPE, "rope_theta": 500000.0}
    cfg = LlamaConfig(hidden_size=128, num_attention_heads=4, rope_parameters=rope)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, torch.device("cpu"))
    base = 1.0 / (500000.0 ** (torch.arange(0, 32, 2, dtype=torch.float32) / 32))
    expected = (base / inv_freq).numpy()
    config = {"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 128,
              "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4,
              "rope_parameters": rope}
    hp = family_for_hf(config).from_config(config)
    np.testing.assert_allclose(llama3_factors(hp), expected, rtol=1e-5)
