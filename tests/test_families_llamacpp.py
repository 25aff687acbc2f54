"""llama.cpp runs the files gguflite writes for every family, and computes what transformers
computes.

For each family of tests/family_checkpoints.py (llama, mistral, qwen2, qwen3, gemma3, phi3,
smollm3) a tiny random checkpoint is saved by transformers, converted by gguflite to f32 and to
q8_0, loaded by llama.cpp (llama-cpp-python) and run on the same token ids as the family's
``*ForCausalLM`` in float32. A file llama.cpp refuses (a wrong metadata key or tensor name)
fails here with llama.cpp's own message in the log.

The other way round, llama.cpp's own converter (``convert_hf_to_gguf.py``, tests/
llama_cpp_source.py) converts the same checkpoints, all in one subprocess (told the BPE
pre-tokenizer's name, "smollm": its hash check does not know a tiny trained tokenizer): its
files hold the same metadata and byte-identical tensors as gguflite's (f32 and q8_0), and
gguflite's Numba and torch backends run them and agree with transformers.

Tolerances (logits are O(1..3.5) here; measured values in comments at each assert):

- f32, llama.cpp's KV cache in F32: max |diff| < 1e-4 (float32 summation order only), and the
  same top-1 at every position. Gemma 3 is looser (< 1e-2): ggml's GELU rounds its input to
  f16 and reads a table of f16 results (``GGML_GELU_FP16`` in ggml-cpu/vec.h), so its GeGLU
  carries f16 rounding.
- q8_0: llama.cpp also rounds activations to 8 bits in its mat-muls: max |diff| < 0.4, and the
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
Q8_TOL, Q8_MARGIN = 0.4, 0.2
TYPES = ("f32", "q8_0")
TOKENIZER_PRE = "smollm"  # the BPE's pre-tokenizer, for llama.cpp's converter
# name -> (family, family_checkpoint overrides): every family as tests/family_checkpoints.py
# builds it (phi3 with a SentencePiece tokenizer, as Phi-3 has; the others a SmolLM-style
# byte-level BPE), and the variants real models of the families use: tied heads (every Gemma 3,
# the small Qwen2.5), Phi-3.5 / Phi-4-mini's LongRoPE, YaRN.
CASES: dict[str, tuple[str, dict]] = {fam: (fam, {}) for fam in sorted(FAMILIES)}
CASES["phi3"] = ("phi3", {"tokenizer": "spm"})
CASES |= {
    "gemma3-tied": ("gemma3", {"tied": True}),
    "qwen2-tied": ("qwen2", {"tied": True}),
    "phi3-longrope": ("phi3", {"tokenizer": "spm", "max_position_embeddings": 1024,
                               "rope_parameters": {
                                   "rope_type": "longrope", "rope_theta": 10000.0,
                                   "partial_rotary_factor": 0.5,
                                   "original_max_position_embeddings": 256,
                                   "short_factor": [1.0, 1.3, 2.0, 3.5],  # n_rot / 2 each
                                   "long_factor": [1.5, 3.0, 6.0, 12.0]}}),
    "llama-yarn": ("llama", {"max_position_embeddings": 1024, "rope_parameters": {
        "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
        "original_max_position_embeddings": 256}}),
}
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
    name: str  # a key of CASES
    family: str
    ckpt: Path
    ids: list[int]
    ref: np.ndarray  # (n, vocab) transformers' float32 logits
    ref_llama_cpp: np.ndarray  # what llama.cpp's graph computes: ref, or Mistral without window
    window: int  # positions where ref_llama_cpp == ref (all of them but for Mistral)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: family_checkpoint(root / name, fam, **kw) for name, (fam, kw) in CASES.items()}


@pytest.fixture(scope="module")
def llama_cpp_files(checkpoints, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(case name, type) -> the file llama.cpp's converter writes (one subprocess for all)."""
    root = tmp_path_factory.mktemp("llama_cpp_converted")
    files = {(name, t): root / f"{name}.{t}.gguf" for name in checkpoints for t in TYPES}
    convert_hf_to_gguf([(checkpoints[name], out, t) for (name, t), out in files.items()],
                       tokenizer_pre=TOKENIZER_PRE)
    return files


@pytest.fixture(scope="module", params=list(CASES))
def case(request, checkpoints) -> Case:
    """The checkpoint, its token ids and transformers' logits, built once."""
    import torch
    from transformers import AutoTokenizer

    name = request.param
    family, ckpt = CASES[name][0], checkpoints[name]
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
    return Case(name, family, ckpt, ids, ref, ref_ll, window)


def convert_for_llama_cpp(case: Case, tmp_path: Path, type: str) -> Path:
    out = tmp_path / f"{case.name}.{type}.gguf"
    convert(case.ckpt, out, type=type, name="tiny")  # "tiny": see the module docstring (phi3)
    return out


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    """llama.cpp's logits (len(ids), vocab) with an F32 KV cache (type_k = type_v = F32)."""
    llm = Llama(model_path=str(path), logits_all=True, n_ctx=64, verbose=False, type_k=0,
                type_v=0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def check_close(case: Case, got: np.ndarray, tol: float, margin: float,
                who: str = "llama.cpp") -> None:
    """Max |got - reference| < tol, and the same top-1 wherever the reference's best logit
    leads by more than ``margin``."""
    ref = case.ref_llama_cpp
    assert got.shape == ref.shape
    err = float(np.abs(got - ref).max())
    assert err < tol, f"{case.name}: max |{who} - transformers| = {err:.3g}"
    top2 = np.sort(ref, axis=-1)[:, -2:]  # (n, 2)
    clear = top2[:, 1] - top2[:, 0] > margin
    wrong = np.nonzero(clear & (got.argmax(-1) != ref.argmax(-1)))[0]
    assert not wrong.size, f"{case.name}: top-1 differs at positions {wrong.tolist()}"
    # Mistral: on the positions before the window ends, the real model is the same function
    w = case.window
    assert np.abs(got[:w] - case.ref[:w]).max() < tol


def test_f32_file_runs_in_llama_cpp_like_transformers(case, tmp_path):
    path = convert_for_llama_cpp(case, tmp_path, "f32")
    got = llama_cpp_logits(path, case.ids)
    # measured max |diff|: 2.2e-6 llama, mistral; 1.7e-6 qwen2; 2.4e-6 qwen3; 1.8e-3 gemma3;
    # 2.1e-6 phi3; 2.6e-6 smollm3; 1.8e-3 gemma3-tied; 2.2e-6 qwen2-tied; 2.5e-6
    # phi3-longrope; 2.2e-6 llama-yarn
    check_close(case, got, F32_TOL.get(case.family, 1e-4), margin=0.0)


def test_q8_0_file_runs_in_llama_cpp_close_to_transformers(case, tmp_path):
    path = convert_for_llama_cpp(case, tmp_path, "q8_0")
    with gguflite.open(path) as f:
        types = {name: ti.type for name, ti in f.tensors.items()}
    assert types["blk.0.ffn_down.weight"] == gguflite.GGMLType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguflite.GGMLType.F32
    got = llama_cpp_logits(path, case.ids)
    # measured max |diff|: 0.105 llama, mistral; 0.081 qwen2; 0.116 qwen3; 0.177 gemma3;
    # 0.100 phi3; 0.109 smollm3; 0.226 gemma3-tied (the q8_0 embeddings are the head too);
    # 0.086 qwen2-tied; 0.144 phi3-longrope; 0.114 llama-yarn. Top-1 flips (at 0 to 3 of
    # 23..29 positions) only where the lead was < 0.063.
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
    with gguflite.open(llama_cpp_files[case.name, type]) as theirs, \
            gguflite.open(ours_path) as ours:
        ours_md, theirs_md = values(ours.metadata), values(theirs.metadata)
        assert set(ours_md) - set(theirs_md) == ONLY_GGUFLITE.get(case.family, set())
        assert set(theirs_md) <= set(ours_md), "keys llama.cpp writes and gguflite does not"
        differ = [k for k in theirs_md if ours_md[k] != theirs_md[k]]
        assert not differ, f"{case.name}: values differ: {differ}"
        assert sorted(ours.tensors) == sorted(theirs.tensors)
        for name, ti in theirs.tensors.items():
            mine = ours.tensors[name]
            assert (mine.shape, mine.type) == (ti.shape, ti.type), name
            assert np.array_equal(ours.raw(name), theirs.raw(name)), f"{name}: bytes differ"


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_gguflite_runs_llama_cpp_converter_file(case, llama_cpp_files, backend):
    """llama.cpp's f32 file, run by gguflite, against transformers (Mistral: the file has no
    window, so the reference is the windowless model, as for llama.cpp itself)."""
    with load(llama_cpp_files[case.name, "f32"], backend=backend, threads=1, n_ctx=64,
              kv_type="f32") as m:  # the f32 math end to end (the f16 cache: test_families)
        got = m.logits(case.ids)
    # measured max |diff| (numba, torch): 2.6e-6, 2.0e-6 llama and mistral; 1.7e-6, 1.8e-6
    # qwen2; 2.1e-6 qwen3; 3.8e-6, 4.2e-6 gemma3; 2.1e-6, 1.8e-6 phi3; 3.2e-6, 2.3e-6 smollm3;
    # 3.9e-6, 3.6e-6 gemma3-tied; 1.9e-6 qwen2-tied; 2.5e-6, 2.4e-6 phi3-longrope; 2.7e-6,
    # 2.1e-6 llama-yarn
    check_close(case, got, 1e-4, margin=0.0, who=f"gguflite ({backend})")
