"""Ternary targets: a checkpoint whose weights are already trits x one scale (BitNet-style) is
re-encoded losslessly and the converter says so; ordinary weights are ternarized and it says
that instead."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from checkpoints import CkptSpec, cached_checkpoint
from click.testing import CliRunner
from gguflite.converters.convert import convert

import gguflite
from gguflite.cli.main import cli
from gguflite.constants import GGMLType

WIDE = CkptSpec(hidden=256, intermediate=512, layers=2, heads=4, kv_heads=2, seed=7)
SCALE = 0.0625  # exact in bf16 and fp16


def _ternary_checkpoint(tmp_path):
    """WIDE with every 2-D projection weight replaced by trits * SCALE."""
    import torch
    from safetensors.torch import load_file, save_file

    d = tmp_path / "ternary"
    shutil.copytree(cached_checkpoint(WIDE), d)
    path = d / "model.safetensors"
    tensors = load_file(path)
    gen = torch.Generator().manual_seed(0)
    for name, t in tensors.items():
        if t.ndim == 2 and "proj" in name:
            trits = torch.randint(-1, 2, t.shape, generator=gen).to(t.dtype)
            tensors[name] = trits * SCALE
    save_file(tensors, path, metadata={"format": "pt"})
    return d


@pytest.mark.parametrize("ttype", ["tq2_0", "tq1_0"])
def test_already_ternary_weights_are_reencoded_losslessly(ttype, tmp_path):
    src = _ternary_checkpoint(tmp_path)
    plan = convert(src, tmp_path / "t.gguf", type=ttype)
    convert(src, tmp_path / "f32.gguf", type="f32")
    ternary = [t.name for t in plan.tensors if t.type == ttype]
    assert ternary  # the recipe put the projections in the ternary type
    assert sorted(n.split(":")[0] for n in plan.notes) == sorted(ternary)
    assert all(f"already ternary x {SCALE:g}; re-encoded losslessly" in n for n in plan.notes)
    with gguflite.open(tmp_path / "t.gguf") as f, gguflite.open(tmp_path / "f32.gguf") as g:
        for name in ternary:
            assert f.tensors[name].type == GGMLType[ttype.upper()]
            np.testing.assert_array_equal(f.dequantize(name), g.dequantize(name), err_msg=name)


def test_cli_says_whether_ternary_encoding_was_lossless(tmp_path):
    src = _ternary_checkpoint(tmp_path)
    runner = CliRunner()
    r = runner.invoke(cli, ["convert", str(src), "-o", str(tmp_path / "a.gguf"), "--type",
                            "tq2_0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "re-encoded losslessly as TQ2_0" in r.output
    assert "ternarized" not in r.output
    r = runner.invoke(cli, ["convert", str(cached_checkpoint(WIDE)), "-o",
                            str(tmp_path / "b.gguf"), "--type", "tq2_0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "not ternary x one scale; ternarized to TQ2_0 (lossy)" in r.output
    assert "losslessly" not in r.output
