"""End to end on real weights: SmolLM2-135M-Instruct's GGUF -> HF checkpoint -> convert.

``smollm2_checkpoint`` rebuilds a Hugging Face directory from the llama.cpp-written GGUF
(dequantized weights, Q/K rows put back in HF order by the tiny-model helper's own
``unpermute_qk``, not the converter's code, tokenizer.json from the GGUF vocab and merges).
Converting it back must give the original weights exactly (f32), which holds only if the
converter's Q/K permutation is llama.cpp's, and the original tokenizer metadata.
"""

from __future__ import annotations

import numpy as np
import pytest
from checkpoints import smollm2_checkpoint
from gguflite.converters.convert import convert

import gguflite
from gguflite.default_model import default_model_path

LAYERS = 2  # enough to cover every tensor kind; keeps the test fast


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = smollm2_checkpoint(tmp_path_factory.mktemp("smol") / "ckpt", dtype="F32", layers=LAYERS)
    out = d.parent / "smol.f32.gguf"
    convert(d, out, type="f32")
    return out


def test_weights_round_trip_exactly(converted):
    with gguflite.open(converted) as ours, gguflite.open(default_model_path()) as ref:
        names = [n for n in ref.tensors
                 if not n.startswith("blk.") or int(n.split(".")[1]) < LAYERS]
        assert sorted(ours.tensors) == sorted(names)  # tied: no output.weight in either
        for name in names:
            np.testing.assert_array_equal(ours.array(name), ref.dequantize(name), err_msg=name)


def test_tokenizer_metadata_matches_llama_cpp_file(converted):
    with gguflite.open(converted) as ours, gguflite.open(default_model_path()) as ref:
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template",
                    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"):
            assert ours.metadata[key] == ref.metadata[key], key
            assert ours.metadata.value_type(key) == ref.metadata.value_type(key), key
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
            assert ours.metadata[key].tolist() == ref.metadata[key].tolist(), key
        np.testing.assert_array_equal(ours.metadata["tokenizer.ggml.token_type"],
                                      ref.metadata["tokenizer.ggml.token_type"])
        for key in ("llama.embedding_length", "llama.feed_forward_length",
                    "llama.attention.head_count", "llama.attention.head_count_kv",
                    "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                    "llama.context_length", "llama.vocab_size", "llama.rope.dimension_count"):
            assert ours.metadata[key] == ref.metadata[key], key
        assert ours.metadata["general.license"] == "apache-2.0"


def test_llama_cpp_tokenizes_like_the_original(converted):
    from llama_cpp import Llama

    a = Llama(model_path=str(converted), vocab_only=True, verbose=False)
    b = Llama(model_path=str(default_model_path()), vocab_only=True, verbose=False)
    for text in ("Hello world! 12345 café", "<|im_start|>user\nHi<|im_end|>\n", "  x\n\ny"):
        assert a.tokenize(text.encode(), special=True) == b.tokenize(text.encode(), special=True)
