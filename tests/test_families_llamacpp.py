"""llama.cpp runs the files gguflite writes for every family, and computes what transformers
computes.

For each family of tests/family_checkpoints.py (llama, mistral, qwen2, qwen3, gemma3, phi3,
smollm3) a tiny random checkpoint is saved by transformers, converted by gguflite to f32 and to
q8_0, loaded by llama.cpp (llama-cpp-python) and run on the same token ids as the family's
``*ForCausalLM`` in float32. A file llama.cpp refuses (a wrong metadata key or tensor name)
fails here with llama.cpp's own message in the log.

Tolerances (logits are O(1..3.5) here; measured values in comments at each assert):

- f32, llama.cpp's KV cache in F32: max |diff| < 1e-4 (float32 summation order only), and the
  same top-1 at every position. Gemma 3 is looser (< 1e-2): ggml's GELU rounds its input to
  f16 and reads a table of f16 results (``GGML_GELU_FP16`` in ggml-cpu/vec.h), so its GeGLU
  carries f16 rounding.
- q8_0: llama.cpp also rounds activations to 8 bits in its mat-muls: max |diff| < 0.3, and the
  same top-1 wherever transformers' best logit leads the runner-up by more than 0.2 (a tie
  closer than the rounding can flip).

Two facts of llama.cpp the families meet:

- Mistral is the ``llama`` arch, and llama.cpp's llama graph has no sliding window (its own
  converter does not even write the key): it attends to the whole context. So llama.cpp is
  compared with transformers' Mistral with the window switched off, and with the real Mistral
  on the positions before the window (6 here) ends, where the two are the same function.
- llama.cpp sets per-token attributes by ``general.name``: a name containing "phi3" or "phi-3"
  requires the tokens ``</s>``, ``<unk>``, ``<s>`` and ``<|endoftext|>`` in the vocabulary
  (Phi-3's own tokenizer has them; the tiny trained one does not), so the files are named
  "tiny".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from family_checkpoints import FAMILIES, family_checkpoint, hf_model
from gguflite.converters.convert import convert
from llama_cpp import Llama

import gguflite

TEXT = "The quick brown fox jumps over the lazy dog. Hello world, it's 2024!"  # 29 tokens
F32_TOL = {"gemma3": 1e-2}  # f16 GELU table in ggml; every other family: 1e-4
Q8_TOL, Q8_MARGIN = 0.3, 0.2


@dataclass
class Case:
    family: str
    ckpt: Path
    ids: list[int]
    ref: np.ndarray  # (n, vocab) transformers' float32 logits
    ref_llama_cpp: np.ndarray  # what llama.cpp's graph computes: ref, or Mistral without window
    window: int  # positions where ref_llama_cpp == ref (all of them but for Mistral)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request, tmp_path_factory) -> Case:
    """The family's checkpoint, its token ids and transformers' logits, built once."""
    import torch
    from transformers import AutoTokenizer

    family = request.param
    ckpt = family_checkpoint(tmp_path_factory.mktemp(family) / family, family)
    ids = AutoTokenizer.from_pretrained(str(ckpt))(TEXT)["input_ids"]
    model = hf_model(ckpt)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
        ref_ll, window = ref, len(ids)
        if family == "mistral":
            window = model.config.sliding_window
            assert window < len(ids)  # else the comparison below shows nothing
            for layer in model.model.layers:
                layer.self_attn.sliding_window = None
            model.config.sliding_window = None
            ref_ll = model(torch.tensor([ids])).logits[0].numpy()
            assert np.abs(ref_ll - ref).max() > 0.1  # the window matters in this checkpoint
    return Case(family, ckpt, ids, ref, ref_ll, window)


def convert_for_llama_cpp(case: Case, tmp_path: Path, type: str) -> Path:
    out = tmp_path / f"{case.family}.{type}.gguf"
    convert(case.ckpt, out, type=type, name="tiny")  # "tiny": see the module docstring (phi3)
    return out


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits (len(ids), vocab) with an F32 KV cache (type_k = type_v = F32)."""
    llm = Llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False, type_k=0,
                type_v=0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def check_close(case: Case, got: np.ndarray, tol: float, margin: float) -> float:
    """Max |got - reference| (asserted < tol) and the same top-1 wherever the reference's best
    logit leads by more than ``margin``; returns the max."""
    ref = case.ref_llama_cpp
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err < tol, f"{case.family}: max |llama.cpp - transformers| = {err:.3g}"
    top2 = np.sort(ref, axis=-1)[:, -2:]  # (n, 2)
    clear = top2[:, 1] - top2[:, 0] > margin
    wrong = np.nonzero(clear & (got.argmax(-1) != ref.argmax(-1)))[0]
    assert not wrong.size, f"{case.family}: top-1 differs at positions {wrong.tolist()}"
    # Mistral: on the positions before the window ends, the real model is the same function
    w = case.window
    assert np.abs(got[:w] - case.ref[:w]).max() < tol
    return err


def test_f32_file_runs_in_llama_cpp_like_transformers(case, tmp_path):
    path = convert_for_llama_cpp(case, tmp_path, "f32")
    got = llama_cpp_logits(path, case.ids)
    # measured max |diff|: 2.2e-6 llama, mistral; 1.7e-6 qwen2; 2.4e-6 qwen3; 1.8e-3 gemma3;
    # 2.2e-6 phi3; 2.6e-6 smollm3
    check_close(case, got, F32_TOL.get(case.family, 1e-4), margin=0.0)


def test_q8_0_file_runs_in_llama_cpp_close_to_transformers(case, tmp_path):
    path = convert_for_llama_cpp(case, tmp_path, "q8_0")
    with gguflite.open(path) as f:
        types = {name: ti.type for name, ti in f.tensors.items()}
    assert types["blk.0.ffn_down.weight"] == gguflite.GGMLType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguflite.GGMLType.F32
    got = llama_cpp_logits(path, case.ids)
    # measured max |diff|: 0.105 llama, mistral; 0.081 qwen2; 0.116 qwen3; 0.177 gemma3;
    # 0.095 phi3; 0.109 smollm3. Top-1 flips only where the lead was < 0.063.
    check_close(case, got, Q8_TOL, margin=Q8_MARGIN)
