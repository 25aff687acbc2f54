"""Non-finite weights (issue 16, point 2): run and quantize refuse them naming the tensor, and
the sampler never draws from non-finite logits.

The poisoned files are written with ``GGUFWriter`` (through tests/tiny_models.write_gguf) from
random weights with one NaN or Inf planted.
"""

from __future__ import annotations

import numpy as np
import pytest
from hardening_cli import assert_one_line_error, leftovers, run_cli
from tiny_models import TinyConfig, random_weights, write_gguf

from gguflite.errors import ModelError
from gguflite.finite import check_finite, count_nonfinite
from gguflite.runtime.sampling import Sampler, check_logits

CFG = TinyConfig()


def _poisoned(path, hf_name: str, index: tuple[int, ...], value: float):
    sd = random_weights(CFG, 0)
    sd[hf_name] = sd[hf_name].copy()
    sd[hf_name][index] = value
    return write_gguf(path, CFG, sd)


# (HF tensor, element, value, GGUF name the error must give)
CASES = [
    # a norm vector: found at load (1-D tensors are checked, a few KiB)
    ("model.layers.0.post_attention_layernorm.weight", (3,), np.nan, "blk.0.ffn_norm.weight"),
    # a matrix: found when the logits turn non-finite, then every tensor is checked
    ("model.layers.1.mlp.up_proj.weight", (5, 7), np.inf, "blk.1.ffn_up.weight"),
]


@pytest.mark.parametrize("hf_name, index, value, gguf_name", CASES)
def test_run_refuses_non_finite_weights(tmp_path, hf_name, index, value, gguf_name):
    path = _poisoned(tmp_path / "poisoned.gguf", hf_name, index, value)
    proc = run_cli(["run", str(path), "-p", "the sea", "--raw", "-n", "4", "--seed", "0",
                    "-t", "1"], cwd=tmp_path)
    assert_one_line_error(proc, 1, rf"tensor '{gguf_name}' \(F32\) holds 1 NaN/Inf")


def test_quantize_refuses_a_copied_non_finite_tensor(tmp_path):
    hf_name, index, value, gguf_name = CASES[0]  # 1-D: copied byte for byte, never encoded
    path = _poisoned(tmp_path / "poisoned.gguf", hf_name, index, value)
    proc = run_cli(["quantize", str(path), "out.gguf", "--type", "q8_0", "--no-progress"],
                   cwd=tmp_path)
    assert_one_line_error(proc, 1, rf"tensor '{gguf_name}'.*cannot quantize it")
    assert not (tmp_path / "out.gguf").exists() and not leftovers(tmp_path)


def test_quantize_refuses_an_encoded_non_finite_tensor(tmp_path):
    path = _poisoned(tmp_path / "poisoned.gguf", *CASES[1][:3])
    proc = run_cli(["quantize", str(path), "out.gguf", "--type", "q8_0", "--no-progress"],
                   cwd=tmp_path)
    assert_one_line_error(proc, 1, r"blk\.1\.ffn_up\.weight: non-finite value")
    assert not (tmp_path / "out.gguf").exists() and not leftovers(tmp_path)


def test_check_finite_names_the_tensor_and_remembers_clean_ones(tmp_path):
    import gguflite

    path = _poisoned(tmp_path / "p.gguf", *CASES[1][:3])
    with gguflite.open(path) as f:
        assert count_nonfinite(f, "blk.1.ffn_up.weight") == 1
        assert count_nonfinite(f, "blk.0.ffn_up.weight") == 0
        check_finite(f, ["blk.0.ffn_up.weight", "output_norm.weight"])
        with pytest.raises(ModelError, match=r"'blk\.1\.ffn_up\.weight' \(F32\) holds 1"):
            check_finite(f, ["blk.0.ffn_up.weight", "blk.1.ffn_up.weight"])


@pytest.mark.parametrize("poison, ok", [
    (np.nan, False),   # NaN anywhere: no distribution
    (np.inf, False),   # +Inf: softmax would be NaN
    (-np.inf, True),   # -Inf: a token that must not be drawn
])
def test_sampler_never_draws_from_non_finite_logits(poison, ok):
    logits = np.linspace(-1, 1, 16, dtype=np.float32)
    logits[7] = poison
    for temperature in (0.0, 0.8):
        sampler = Sampler(temperature=temperature, seed=0)
        if ok:
            tok = sampler.sample(logits)
            assert tok != 7 and 0 <= tok < 16
        else:
            with pytest.raises(ValueError, match="NaN or \\+Inf"):
                sampler.sample(logits)
    with pytest.raises(ValueError, match="every logit is -Inf"):
        check_logits(np.full(4, -np.inf, np.float32))
