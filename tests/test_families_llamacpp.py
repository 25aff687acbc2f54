"""llama.cpp runs the files gguflite writes for every family, and computes what transformers
computes.

For each family of tests/family_checkpoints.py (llama, mistral, qwen2, qwen3, gemma3, phi3,
smollm3) a tiny random checkpoint is saved by transformers, converted by gguflite to f32 and to
q8_0, loaded by llama.cpp (llama-cpp-python) and run on the same token ids as the family's
``*ForCausalLM`` in float32. A file llama.cpp refuses (a wrong metadata key or tensor name)
fails here with llama.cpp's own message in the log.

The other way round, llama.cpp's own converter (``convert_hf_to_gguf.py``, tests/
llama_cpp_source.py) converts the same checkpoints, all in one subprocess: its files hold the
same metadata and byte-identical tensors as gguflite's (f32 and q8_0), and gguflite's Numba and
torch backends run them and agree with transformers.

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
  "tiny". Phi-3's checkpoint carries a SentencePiece tokenizer, as Phi-3 does: llama.cpp's
  converter reads ``tokenizer.model`` for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from family_checkpoints import FAMILIES, family_checkpoint, hf_model
from gguflite.converters.convert import convert
from gguflite.runtime import load
from llama_cpp import Llama
from llama_cpp_source import convert_hf_to_gguf

import gguflite

TEXT = "The quick brown fox jumps over the lazy dog. Hello world, it's 2024!"  # 29 tokens
F32_TOL = {"gemma3": 1e-2}  # f16 GELU table in ggml; every other family: 1e-4
Q8_TOL, Q8_MARGIN = 0.3, 0.2
TYPES = ("f32", "q8_0")
TOKENIZER = {"phi3": "spm"}  # every other family: the SmolLM-style byte-level BPE
TOKENIZER_PRE = "smollm"  # that BPE's pre-tokenizer, for llama.cpp's converter
# Keys only gguflite writes (values of the shared keys are equal):
ONLY_GGUFLITE = {
    # gguflite honours Mistral's window; llama.cpp's converter drops it (its graph has none)
    "mistral": {"llama.attention.sliding_window"},
    # Phi-3's SentencePiece vocab: llama.cpp's converter leaves these at llama.cpp's defaults
    # (true, 0), which are the values gguflite writes
    "phi3": {"tokenizer.ggml.add_space_prefix", "tokenizer.ggml.unknown_token_id"},
}


@dataclass
class Case:
    family: str
    ckpt: Path
    ids: list[int]
    ref: np.ndarray  # (n, vocab) transformers' float32 logits
    ref_llama_cpp: np.ndarray  # what llama.cpp's graph computes: ref, or Mistral without window
    window: int  # positions where ref_llama_cpp == ref (all of them but for Mistral)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {fam: family_checkpoint(root / fam, fam, tokenizer=TOKENIZER.get(fam, "bpe"))
            for fam in sorted(FAMILIES)}


@pytest.fixture(scope="module")
def llama_cpp_files(checkpoints, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(family, type) -> the file llama.cpp's converter writes (one subprocess for all)."""
    root = tmp_path_factory.mktemp("llama_cpp_converted")
    files = {(fam, t): root / f"{fam}.{t}.gguf" for fam in checkpoints for t in TYPES}
    convert_hf_to_gguf([(checkpoints[fam], out, t) for (fam, t), out in files.items()],
                       tokenizer_pre=TOKENIZER_PRE)
    return files


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request, checkpoints) -> Case:
    """The family's checkpoint, its token ids and transformers' logits, built once."""
    import torch
    from transformers import AutoTokenizer

    family = request.param
    ckpt = checkpoints[family]
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
    # 2.1e-6 phi3; 2.6e-6 smollm3
    check_close(case, got, F32_TOL.get(case.family, 1e-4), margin=0.0)


def test_q8_0_file_runs_in_llama_cpp_close_to_transformers(case, tmp_path):
    path = convert_for_llama_cpp(case, tmp_path, "q8_0")
    with gguflite.open(path) as f:
        types = {name: ti.type for name, ti in f.tensors.items()}
    assert types["blk.0.ffn_down.weight"] == gguflite.GGMLType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguflite.GGMLType.F32
    got = llama_cpp_logits(path, case.ids)
    # measured max |diff|: 0.105 llama, mistral; 0.081 qwen2; 0.116 qwen3; 0.177 gemma3;
    # 0.100 phi3; 0.109 smollm3. Top-1 flips (at 1 to 3 of 23..29 positions) only where the
    # lead was < 0.063.
    check_close(case, got, Q8_TOL, margin=Q8_MARGIN)


def values(md) -> dict:
    """Metadata as plain Python values (arrays as lists), comparable with ==."""
    def plain(v):
        if isinstance(v, str | int | float | bool):
            return v
        return [x.item() if isinstance(x, np.generic) else x for x in v]
    return {k: plain(v) for k, v in md.items()}


@pytest.mark.parametrize("type", TYPES)
def test_llama_cpp_converter_writes_the_same_file(case, llama_cpp_files, tmp_path, type):
    """Same keys and values (but ONLY_GGUFLITE), same tensor names, shapes, types and bytes."""
    ours_path = convert_for_llama_cpp(case, tmp_path, type)
    with gguflite.open(llama_cpp_files[case.family, type]) as theirs, \
            gguflite.open(ours_path) as ours:
        ours_md, theirs_md = values(ours.metadata), values(theirs.metadata)
        assert set(ours_md) - set(theirs_md) == ONLY_GGUFLITE.get(case.family, set())
        assert set(theirs_md) <= set(ours_md), "keys llama.cpp writes and gguflite does not"
        differ = [k for k in theirs_md if ours_md[k] != theirs_md[k]]
        assert not differ, f"{case.family}: values differ: {differ}"
        assert sorted(ours.tensors) == sorted(theirs.tensors)
        for name, ti in theirs.tensors.items():
            mine = ours.tensors[name]
            assert (mine.shape, mine.type) == (ti.shape, ti.type), name
            assert np.array_equal(ours.raw(name), theirs.raw(name)), f"{name}: bytes differ"


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_gguflite_runs_llama_cpp_converter_file(case, llama_cpp_files, backend):
    """llama.cpp's f32 file, run by gguflite, against transformers (Mistral: the file has no
    window, so the reference is the windowless model, as for llama.cpp itself)."""
    with load(llama_cpp_files[case.family, "f32"], backend=backend, threads=1, n_ctx=64) as m:
        got = m.logits(case.ids)
    # measured max |diff| (numba, torch): 2.6e-6, 2.0e-6 llama and mistral; 1.7e-6, 1.8e-6
    # qwen2; 2.1e-6 qwen3; 3.8e-6, 4.2e-6 gemma3; 2.1e-6, 1.8e-6 phi3; 3.2e-6, 2.3e-6 smollm3
    check_close(case, got, 1e-4, margin=0.0)
