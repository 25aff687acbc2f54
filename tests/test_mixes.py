"""llama.cpp's mixes (``--type q2_k ... q8_0``) against ``llama_model_quantize`` itself.

For every mix, with and without an importance matrix, the tensor types and bytes gguflite
writes equal those of llama.cpp's quantizer run with the same ftype on the same F32 file:

- ``convert`` on a tiny checkpoint whose rows are multiples of 256 (16 layers, so every layer
  rule of the mixes - first sixteenth, first eighth, use_more_bits - picks some layers, and
  4 query heads per KV head, so the n_gqa >= 4 rules apply);
- ``quantize`` on a checkpoint shaped like SmolLM2-135M (576-wide rows, where the 256-block
  types fall back; 1536-wide ffn_down rows, where they do not; 3 query heads per KV head; tied
  embeddings), two layers.

The importance matrix changes the types of the IQ4 and Q4_0 / Q5_0 mixes and the encoding of
every k-quant; the imatrix runs cover those mixes and one mix per k-quant encoder, to keep the
suite fast. ``benchmarks/check_mixes.py`` runs every mix on the real
SmolLM2-135M-Instruct weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from checkpoints import CkptSpec, cached_checkpoint
from click.testing import CliRunner
from conftest import llama_cpp_quantize

import gguflite
from gguflite.cli.main import cli
from gguflite.converters.convert import convert
from gguflite.converters.mixes import MIXES, role_of
from gguflite.converters.requantize import requantize

WIDE = CkptSpec(hidden=256, intermediate=256, layers=16, heads=4, kv_heads=1, seed=7)
SMOL = CkptSpec(hidden=576, intermediate=1536, layers=2, heads=9, kv_heads=3, tied=True, seed=8)
MIX_NAMES = list(MIXES)
IMATRIX_MIXES = ["q2_k", "q3_k_m", "q5_k_m", "iq4_nl", "iq4_xs", "q4_0", "q5_0"]
CASES = [(m, False) for m in MIX_NAMES] + [(m, True) for m in IMATRIX_MIXES]


def make_imatrix(f32_file, path) -> dict[str, np.ndarray]:
    """A positive importance row for every quantizable matrix but the embedding/output."""
    out = {}
    with gguflite.open(f32_file) as f:
        for name, ti in f.tensors.items():
            if len(ti.shape) == 2 and role_of(name) not in ("token_embd", "output"):
                rng = np.random.default_rng(len(out))
                out[name] = rng.gamma(0.5, 1.0, ti.shape[-1]).astype(np.float32)
    np.savez(path, **out)
    return out


def assert_same_tensors(ours, ref, ftype: int, what: str) -> None:
    with gguflite.open(ours) as a, gguflite.open(ref) as b:
        assert set(a.tensors) == set(b.tensors), what  # llama.cpp orders them by layer
        wrong = [(n, a.tensors[n].type.name, b.tensors[n].type.name) for n in a.tensors
                 if a.tensors[n].type != b.tensors[n].type]
        assert not wrong, f"{what}: tensor types differ (ours, llama.cpp): {wrong[:6]}"
        bad = [n for n in a.tensors if bytes(a.raw(n)) != bytes(b.raw(n))]
        assert not bad, f"{what}: bytes differ in {bad[:6]}"
        assert a.metadata["general.file_type"] == b.metadata["general.file_type"] == ftype


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    d = tmp_path_factory.mktemp("wide")
    ckpt = cached_checkpoint(WIDE)
    convert(ckpt, d / "f32.gguf", type="f32")
    return ckpt, d / "f32.gguf", make_imatrix(d / "f32.gguf", d / "imat.npz"), d / "imat.npz"


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    d = tmp_path_factory.mktemp("smol")
    convert(cached_checkpoint(SMOL), d / "f32.gguf", type="f32")
    return d / "f32.gguf", make_imatrix(d / "f32.gguf", d / "imat.npz"), d / "imat.npz"


@pytest.mark.parametrize(("mix", "with_imatrix"), CASES,
                         ids=[f"{m}-{'imatrix' if i else 'plain'}" for m, i in CASES])
def test_convert_equals_llama_cpp_on_256_wide_rows(wide, mix, with_imatrix, tmp_path):
    ckpt, f32, imat, imat_path = wide
    ftype = int(MIXES[mix].ftype)
    llama_cpp_quantize(f32, tmp_path / "ref.gguf", ftype, imatrix=imat if with_imatrix else None)
    convert(ckpt, tmp_path / "ours.gguf", type=mix, imatrix=imat_path if with_imatrix else None)
    assert_same_tensors(tmp_path / "ours.gguf", tmp_path / "ref.gguf", ftype,
                        f"convert --type {mix}, imatrix {with_imatrix}")


@pytest.mark.parametrize(("mix", "with_imatrix"), CASES,
                         ids=[f"{m}-{'imatrix' if i else 'plain'}" for m, i in CASES])
def test_quantize_equals_llama_cpp_on_smollm2(smol, mix, with_imatrix, tmp_path):
    f32, imat, imat_path = smol
    ftype = int(MIXES[mix].ftype)
    llama_cpp_quantize(f32, tmp_path / "ref.gguf", ftype, imatrix=imat if with_imatrix else None)
    requantize(f32, tmp_path / "ours.gguf", type=mix,
               imatrix=imat_path if with_imatrix else None)
    assert_same_tensors(tmp_path / "ours.gguf", tmp_path / "ref.gguf", ftype,
                        f"quantize --type {mix}, imatrix {with_imatrix}")


def test_dry_run_prints_the_plan(smol, tmp_path):
    f32, _, imat_path = smol
    out = tmp_path / "x.gguf"
    res = CliRunner().invoke(cli, ["quantize", str(f32), str(out), "--type", "iq4_xs",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert not out.exists()
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln.strip()}
    # 576-wide rows: IQ4_XS falls back to IQ4_NL; the tied embedding is the output (Q8_0)
    assert "iq4_nl" in lines["blk.0.attn_q.weight"] and "fallback" in lines[
        "blk.0.attn_q.weight"]
    assert "q8_0" in lines["token_embd.weight"]
    assert "iq4_xs" in lines["blk.0.ffn_down.weight"]  # 1536-wide rows fit
    assert lines["blk.0.attn_v.weight"].split()[3] == "iq4_nl"  # n_gqa 3: no Q5_K bump
    # an imatrix of the right shape is accepted by the dry run; the plan is the same here
    res = CliRunner().invoke(cli, ["quantize", str(f32), str(out), "--type", "q4_0",
                                   "--dry-run", "--imatrix", str(imat_path)])
    assert res.exit_code == 0, res.output
    down = next(ln for ln in res.output.splitlines() if ln.startswith("blk.0.ffn_down"))
    assert down.split()[3] == "q4_0"  # 2 layers: i < n/8 holds for none, so no Q4_1


def test_every_mix_names_known_types():
    from gguflite.quants import get_codec

    for name, mix in MIXES.items():
        for t in [mix.default] + [r.type for r in mix.rules]:
            assert get_codec(t).can_quantize, (name, t)
