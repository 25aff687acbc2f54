"""The runtime against llama.cpp (llama-cpp-python) on the same files: SmolLM2 as shipped
(Q4_1), a llama.cpp Q4_K_M re-quantization of it, and tiny synthetic models (F32, Q8_0, Q4_K,
Q6_K, TQ2_0; llama3-style rope frequency factors; linear rope scaling).

llama.cpp keeps its KV cache in f16 and quantizes activations to 8 bits in its mat-muls; the
runtime's prefill multiplies dequantized float32 weights. So logits differ at the 1e-2 level and
the test compares what matters: the top-1 token at every position, with both sides fed the same
tokens (teacher forcing), and the size of the logit differences, with thresholds near what is
measured (each one says what it measured).
"""

from __future__ import annotations

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


MORE_TEXTS = (
    "In 1905 Albert Einstein published four papers that changed physics: on the photoelectric "
    "effect, Brownian motion, special relativity and the equivalence of mass and energy.",
    "To bake bread you need flour, water, salt and yeast. Mix them, knead the dough for ten "
    "minutes, let it rise for an hour, then bake it in a hot oven.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + "
    "fibonacci(n - 2)\n\nprint([fibonacci(i) for i in range(10)])",
)


def llama_cpp_model(path) -> llama_cpp.Llama:
    # one thread: ggml's threads spin at barriers, and on a loaded 2-core machine two of them
    # ran a SmolLM2 decode step ~30x slower (measured 1.7 s per token against 0.05 s)
    return llama_cpp.Llama(str(path), logits_all=True, verbose=False, n_ctx=128,
                           n_threads=1)


def llama_cpp_logits(path, ids: list[int]) -> np.ndarray:
    llm = llama_cpp_model(path)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)  # (n, vocab)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())


@pytest.fixture
def smollm_ids(smollm2):
    return smollm2.tokenizer.encode(TEXT)  # 32 tokens; llama.cpp's tokenizer gives the same


def test_smollm_q4_1_prefill_logits(smollm2, smollm_ids):
    path = default_model_path()
    assert smollm_ids == llama_cpp.Llama(str(path), vocab_only=True, verbose=False).tokenize(
        TEXT.encode(), add_bos=True)
    ours = smollm2.logits(smollm_ids)  # (32, 49152)
    theirs = llama_cpp_logits(path, smollm_ids)
    assert top1_agreement(ours, theirs) == 1.0  # measured: 1.0
    assert np.abs(ours - theirs).mean() < 0.2  # measured: 0.16 (int8 activations on both sides)


def test_smollm_q4_1_prefill_is_as_close_to_float_as_llama_cpp(smollm2):
    """Both engines prefill with int8 activations (per 32-block for Q4_1), so their distance
    from the float32 forward pass on the dequantized weights is int8 rounding noise. On one
    text that noise moves by +-20% with last-bit changes anywhere (each layer re-quantizes its
    input); over four texts gguflite is as close as llama.cpp. Measured: mean 0.199, 0.169,
    0.201, 0.208 vs 0.167, 0.160, 0.153, 0.224 (averages 0.194 vs 0.176; 0.188 before the
    vectorized SiLU and the blocked attention, which moved last bits); max over all 1.54 vs
    1.47; gguflite's own one-token decode on the same texts: 0.182, 0.170, 0.171, 0.202."""
    path = default_model_path()
    llm = llama_cpp_model(path)
    errs = {"ours": [], "theirs": []}
    with gguflite.open(path) as f:
        for text in (TEXT, *MORE_TEXTS):
            ids = smollm2.tokenizer.encode(text)
            smollm2.reset()
            ours = smollm2.logits(ids)
            llm.reset()
            llm.eval(ids)
            theirs = np.array(llm.scores[: len(ids)], dtype=np.float32)
            ref = reference_logits(f, ids, dtype=np.float32)
            errs["ours"].append(np.abs(ours - ref))
            errs["theirs"].append(np.abs(theirs - ref))
    mean = {k: np.mean([e.mean() for e in v]) for k, v in errs.items()}
    peak = {k: max(e.max() for e in v) for k, v in errs.items()}
    assert mean["ours"] <= 1.15 * mean["theirs"], mean
    assert peak["ours"] <= 1.25 * peak["theirs"], peak


def test_smollm_teacher_forced_decode(smollm2, smollm_ids):
    """The decode path (one token per step, int8 activations like llama.cpp), teacher-forced:
    both sides are fed the same 32 tokens, one at a time after an 8-token prefill, and the
    argmax of every step's logits must agree."""
    path, n_prompt = default_model_path(), 8
    llm = llama_cpp_model(path)
    llm.eval(smollm_ids[:n_prompt])
    theirs = [np.array(llm.scores[n_prompt - 1], np.float32)]
    ours = [smollm2.eval(smollm_ids[:n_prompt]).copy()]  # the backend reuses its buffer
    for i in range(n_prompt, len(smollm_ids)):
        llm.eval([smollm_ids[i]])
        theirs.append(np.array(llm.scores[llm.n_tokens - 1], np.float32))
        ours.append(smollm2.eval(smollm_ids[:i + 1]).copy())  # the cache holds the prefix
    a, b = np.stack(ours), np.stack(theirs)  # (25, vocab)
    same = a.argmax(-1) == b.argmax(-1)
    assert same.all(), f"argmax differs at steps {np.flatnonzero(~same).tolist()}"  # measured
    assert np.abs(a - b).mean() < 0.2  # measured: 0.16 (smallest top-2 gap: 0.04)


def test_llama_cpp_q4_k_m_file_runs_and_agrees(smollm2_q4_k_m, smollm_ids):
    with gguflite.open(smollm2_q4_k_m) as f:
        types = {ti.type for ti in f.tensors.values()}
    assert {GGMLType.Q4_K, GGMLType.Q6_K} <= types
    with load(smollm2_q4_k_m, n_ctx=128, threads=1) as m:
        ours = m.logits(smollm_ids)
    theirs = llama_cpp_logits(smollm2_q4_k_m, smollm_ids)
    assert top1_agreement(ours, theirs) >= 0.96  # measured 0.97 (31 of 32)
    assert np.abs(ours - theirs).mean() < 0.33  # measured 0.27


TINY = TinyConfig(dim=256, hidden_dim=512, n_head=4, n_kv_head=2)  # rows of 256 for K types
# 48 positions: far enough that the rope variants below move the logits well past tolerance
TINY_IDS = [1, 5, 300, 17, 42, 99, 7, 8, 260, 11, 12, 270, 3, 4, 290, 100] * 3


# (weights, config, max |logit difference| / max |logit|, share of positions with the same top-1)
# near what is measured (in the comments). Where top-1 differs, llama.cpp's own top-2 gap is
# within the tolerance (a near-tie), which the test checks too.
TINY_CASES = {
    "F32": (GGMLType.F32, TINY, 1e-3, 1.0),  # 2.1e-4
    "Q8_0": (GGMLType.Q8_0, TINY, 0.02, 0.97),  # 0.013; 47 of 48
    "Q4_K": (GGMLType.Q4_K, TINY, 0.03, 1.0),  # 0.020
    "Q6_K": (GGMLType.Q6_K, TINY, 0.03, 0.97),  # 0.019; 47 of 48
    "TQ2_0": (GGMLType.TQ2_0, TINY, 0.03, 0.85),  # 0.020; 43 of 48
    # llama3-style rope_freqs.weight: one divisor per rotary frequency (head_dim / 2 = 32)
    "rope_freqs": (GGMLType.F32, TinyConfig(**{**TINY.__dict__, "rope_freq_factors":
                                                 list(np.geomspace(1.0, 16.0, 32))}),
                   1e-3, 1.0),  # 2.0e-4
    # rope.scaling.type = linear: positions divided by the factor
    "rope_linear": (GGMLType.F32, TinyConfig(**{**TINY.__dict__, "rope_linear_factor": 4.0}),
                    1e-3, 1.0),  # 2.1e-4
}


@pytest.mark.parametrize("case", list(TINY_CASES))
def test_tiny_model_agrees_with_llama_cpp(tmp_path, case):
    wtype, cfg, tol, min_top1 = TINY_CASES[case]
    path, _, _ = make_tiny_llama(tmp_path / "t.gguf", cfg, wtype=wtype, seed=5)
    with load(path, threads=1) as m:
        ours = m.logits(TINY_IDS)  # (48, vocab)
    theirs = llama_cpp_logits(path, TINY_IDS)
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() < tol * scale
    assert top1_agreement(ours, theirs) >= min_top1
    picked = np.take_along_axis(theirs, ours.argmax(-1)[:, None], 1)[:, 0]  # (48,)
    assert (theirs.max(-1) - picked <= tol * scale).all()  # our top-1 is a near-tie of theirs
