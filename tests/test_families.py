"""Every supported family end to end: a tiny random checkpoint built with transformers itself
(tests/family_checkpoints.py), converted by gguflite, run by the float64 oracle, the Numba
engine (prefill, per-op decode and the fused one-call decode) and the torch backend, and
compared with transformers' logits and greedy generation on the same ids."""

from __future__ import annotations

import numpy as np
import pytest
from family_checkpoints import FAMILIES, family_checkpoint, hf_model

from gguflite.converters.convert import convert
from gguflite.runtime import load
from gguflite.runtime.reference import reference_logits

IDS = [5, 17, 42, 7, 99, 3, 64, 12, 8, 30, 250, 11]  # longer than mistral's/gemma's windows
TOL = 1e-2  # the bound at f32; measured ~2e-6 to 4e-6 on every family and backend


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def case(request, tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp(request.param)
    ck = family_checkpoint(d / "ck", request.param)
    convert(ck, d / "m.gguf", type="f32")
    hf = hf_model(ck)
    with torch.no_grad():
        want = hf(torch.tensor([IDS])).logits[0].numpy()  # (n, vocab)
        greedy = hf.generate(torch.tensor([IDS[:4]]), max_new_tokens=8, do_sample=False,
                             pad_token_id=0)[0, 4:].tolist()
    return request.param, d / "m.gguf", want, greedy


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    err = float(np.abs(got - want).max())
    assert err <= TOL, f"{what}: max |dlogit| {err:.3g} > {TOL}"
    assert (got.argmax(-1) == want.argmax(-1)).all(), f"{what}: top-1 differs"


def test_oracle_and_numba_prefill_match_transformers(case):
    fam, path, want, _ = case
    m = load(path, n_ctx=64)
    try:
        _close(reference_logits(m.file, IDS), want, f"{fam} oracle")
        _close(m.backend.forward(IDS, 0, all_logits=True), want, f"{fam} numba prefill")
    finally:
        m.file.close()


def test_fused_decode_equals_per_op_decode_and_transformers(case):
    """One token at a time: the fused one-call step (decode.py) and the per-op graph give the
    same logits, and both match transformers."""
    fam, path, want, _ = case
    m = load(path, n_ctx=64)
    try:
        be = m.backend
        assert be.fused, f"{fam}: the fused decode step should run an f32 file"
        fused = np.stack([be.forward([t], i) for i, t in enumerate(IDS)])
        be.enable_timers()  # the per-op path
        per_op = np.stack([be.forward([t], i) for i, t in enumerate(IDS)])
        be.enable_timers(False)
        # equal up to float32 summation order, which can move a key across an f16 rounding
        # boundary of the cache (measured: up to 3e-5 on gemma3, 0 to 3e-6 elsewhere)
        assert np.abs(fused - per_op).max() <= 1e-4, f"{fam}: fused != per-op"
        _close(fused, want, f"{fam} fused decode")
    finally:
        m.file.close()


def test_greedy_generation_equals_transformers(case):
    fam, path, _, greedy = case
    m = load(path, n_ctx=64)
    try:
        got = []
        logits = m.eval(IDS[:4])
        for _ in range(8):
            t = int(np.argmax(logits))
            got.append(t)
            logits = m.eval(list(IDS[:4]) + got)
        assert got == greedy, f"{fam}: {got} != transformers' {greedy}"
    finally:
        m.file.close()


def test_torch_backend_matches_transformers(case):
    fam, path, want, _ = case
    m = load(path, n_ctx=64, backend="torch")
    try:
        _close(m.backend.forward(IDS, 0, all_logits=True), want, f"{fam} torch")
    finally:
        m.file.close()


def test_unsupported_family_names_the_architecture(tmp_path):
    from gguflite.errors import ConversionError, ModelError
    from gguflite.models import family_for_arch, family_for_hf

    with pytest.raises(ModelError, match="'mamba'.*llama, qwen2, qwen3, gemma3, phi3, smollm3"):
        family_for_arch("mamba")
    with pytest.raises(ConversionError, match="'GPT2LMHeadModel' is not supported"):
        family_for_hf({"architectures": ["GPT2LMHeadModel"]})


def test_mismatched_tensor_names_the_expected_shape(tmp_path):
    """A qwen3 file whose q_norm has the wrong width is refused with the tensor and shape."""
    import gguflite
    from gguflite.errors import ModelError

    ck = family_checkpoint(tmp_path / "ck", "qwen3", head_dim=16)
    convert(ck, tmp_path / "m.gguf", type="f32")
    with gguflite.open(tmp_path / "m.gguf") as f:
        items = [(k, f.metadata[k], f.metadata.value_type(k)) for k in f.metadata]
    # claim a head size of 24: every q/k/v shape and the q/k norms no longer match
    from gguflite import GGUFWriter
    from gguflite.constants import GGUFValueType as T

    with gguflite.open(tmp_path / "m.gguf") as f, GGUFWriter(tmp_path / "bad.gguf") as w:
        for k, v, vt in items:
            if k == "qwen3.attention.key_length" or k == "qwen3.attention.value_length":
                v = 24
            w.add(k, v, vt, f.metadata.element_type(k) if vt == T.ARRAY else None)
        for name, ti in f.tensors.items():
            w.add_tensor(name, shape=ti.shape, type=ti.type, data=f.array(name))
        w.write()
    with pytest.raises(ModelError, match=r"tensor 'blk\.0\.attn_q\.weight' has shape"):
        load(tmp_path / "bad.gguf", n_ctx=16)


# -- rope scalings: each against transformers on the same ids ------------------------------------
VARIANTS = {
    "llama-linear": ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                    "rope_theta": 10000.0}}),
    "llama-yarn": ("llama", {"rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
        "rope_theta": 10000.0}}),  # max_position_embeddings 256 = factor x original
    "llama-llama3": ("llama", {"rope_parameters": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 500000.0}}),
    "phi3-longrope": ("phi3", {"original_max_position_embeddings": 8, "rope_parameters": {
        "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
        "short_factor": [1.0, 1.5, 2.0, 3.0], "long_factor": [2.0, 4.0, 8.0, 16.0]}}),
    "gemma3-linear": ("gemma3", {"rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rope_scaling_matches_transformers(variant, tmp_path):
    """Linear, YaRN, llama3 and LongRoPE (the long factors: 12 tokens > the original 8) agree
    with transformers on the oracle, the Numba engine (prefill and fused decode) and torch."""
    import torch

    fam, overrides = VARIANTS[variant]
    ck = family_checkpoint(tmp_path / "ck", fam, **overrides)
    convert(ck, tmp_path / "m.gguf", type="f32")
    with torch.no_grad():
        want = hf_model(ck)(torch.tensor([IDS])).logits[0].numpy()
    m = load(tmp_path / "m.gguf", n_ctx=64)
    try:
        _close(reference_logits(m.file, IDS), want, f"{variant} oracle")
        _close(m.backend.forward(IDS, 0, all_logits=True), want, f"{variant} prefill")
        m.reset()
        dec = np.stack([m.backend.forward([t], i) for i, t in enumerate(IDS)])
        _close(dec, want, f"{variant} fused decode")
    finally:
        m.file.close()
    t = load(tmp_path / "m.gguf", n_ctx=64, backend="torch")
    try:
        _close(t.backend.forward(IDS, 0, all_logits=True), want, f"{variant} torch")
    finally:
        t.file.close()
