"""The runtime against llama.cpp (llama-cpp-python) on the same files: SmolLM2 as shipped
(Q4_1), a llama.cpp Q4_K_M re-quantization of it, and a tiny synthetic model.

llama.cpp keeps its KV cache in f16 and quantizes activations to 8 bits in its mat-muls; the
runtime's prefill multiplies dequantized float32 weights. So logits differ at the 1e-2 level and
the test compares what matters: the top-1 token at every position, and greedy continuations.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest
from gguflite.runtime import load
from gguflite.runtime.reference import reference_logits
from tiny_models import TinyConfig, make_tiny_llama

import gguflite
from gguflite.constants import GGMLType
from gguflite.default_model import default_model_path

TEXT = ("The ocean covers most of the Earth's surface. It is home to countless species of fish, "
        "whales and coral, and it shapes the weather of every continent.")


def llama_cpp_logits(path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), logits_all=True, verbose=False, n_ctx=128, n_threads=2)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # (n, vocab)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.fixture(scope="module")
def smollm_ids():
    with load(default_model_path(), n_ctx=128, threads=1) as m:
        return m.tokenizer.encode(TEXT)  # 32 tokens; llama.cpp's tokenizer gives the same


@pytest.fixture(scope="module")
def q4_k_m(tmp_path_factory):
    """SmolLM2 re-quantized by llama.cpp to its Q4_K_M mix (Q4_K, Q6_K, Q5_0, Q8_0, F32)."""
    dst = tmp_path_factory.mktemp("llama_q") / "smollm2-q4_k_m.gguf"
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.allow_requantize = True  # the source is Q4_1
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(default_model_path()).encode(), str(dst).encode(),
                                        ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize failed (rc={rc})"
    return dst


def test_smollm_q4_1_prefill_logits(smollm_ids):
    path = default_model_path()
    with load(path, n_ctx=128, threads=1) as m:
        assert m.tokenizer.encode(TEXT) == llama_cpp.Llama(
            str(path), vocab_only=True, verbose=False).tokenize(TEXT.encode(), add_bos=True)
        ours = m.logits(smollm_ids)  # (32, 49152)
    theirs = llama_cpp_logits(path, smollm_ids)
    with gguflite.open(path) as f:
        ref = reference_logits(f, smollm_ids, dtype=np.float32)
    assert top1_agreement(ours, theirs) >= 0.9  # measured: 1.0
    assert np.abs(ours - theirs).mean() < 0.5  # measured: 0.16 (llama.cpp's f16 KV, int8 acts)
    # The fast path against the dequantized NumPy reference: float32 rounding only.
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_smollm_greedy_decode(smollm_ids):
    """24 greedy tokens through the decode path (int8 activations, like llama.cpp)."""
    path, prompt = default_model_path(), smollm_ids[:12]
    llm = llama_cpp.Llama(str(path), logits_all=True, verbose=False, n_ctx=128, n_threads=2)
    llm.eval(prompt)
    theirs = []
    for _ in range(24):
        theirs.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([theirs[-1]])
    with load(path, n_ctx=128, threads=1) as m:
        ours, logits = [], m.eval(prompt)
        for _ in range(24):
            ours.append(int(np.argmax(logits)))
            logits = m.eval(prompt + ours)
    same = np.mean(np.array(ours) == np.array(theirs))
    assert same >= 0.75, f"greedy tokens agree at {same:.0%} of positions\n{ours}\n{theirs}"


def test_llama_cpp_q4_k_m_file_runs_and_agrees(q4_k_m, smollm_ids):
    with gguflite.open(q4_k_m) as f:
        types = {ti.type for ti in f.tensors.values()}
    assert {GGMLType.Q4_K, GGMLType.Q6_K} <= types
    with load(q4_k_m, n_ctx=128, threads=1) as m:
        ours = m.logits(smollm_ids)
    assert top1_agreement(ours, llama_cpp_logits(q4_k_m, smollm_ids)) >= 0.9  # measured 0.97


@pytest.mark.parametrize("wtype", [GGMLType.F32, GGMLType.Q8_0, GGMLType.Q4_K],
                         ids=lambda t: t.name)
def test_tiny_model_agrees_with_llama_cpp(tmp_path, wtype):
    cfg = TinyConfig(dim=256, hidden_dim=512, n_head=4, n_kv_head=2)
    path, _, _ = make_tiny_llama(tmp_path / "t.gguf", cfg, wtype=wtype, seed=5)
    ids = [1, 5, 300, 17, 42, 99, 7, 8, 260, 11, 12, 270, 3, 4, 290, 100]
    with load(path, threads=1) as m:
        ours = m.logits(ids)
    theirs = llama_cpp_logits(path, ids)
    assert top1_agreement(ours, theirs) == 1.0
    assert np.abs(ours - theirs).max() < 0.02 * np.abs(theirs).max()
