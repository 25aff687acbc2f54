"""Broken checkpoints fail clearly, before writing, and leave no output file behind.

Each case copies a good tiny checkpoint, breaks one thing, and checks that ``convert`` raises
``ConversionError`` with a message naming the problem, that no file (or temporary file) appears,
and that an existing file at the output path is left untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from checkpoints import CkptSpec, cached_checkpoint
from cli_helpers import assert_user_error
from gguflite.converters.convert import convert

import gguflite
from gguflite.errors import ConversionError

SHARDED = CkptSpec(shard_size="100KB")
SINGLE_F32 = CkptSpec(dtype="float32", seed=3)


def _copy(spec: CkptSpec, tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(cached_checkpoint(spec), d)
    return d


def _edit_json(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _first_shard(d: Path) -> Path:
    return sorted(d.glob("model-*.safetensors"))[0]


def _tensor_span(path: Path, name: str) -> tuple[int, int]:
    """Absolute [start, end) of a tensor's bytes in a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


def _missing_shard(d: Path) -> None:
    _first_shard(d).unlink()


def _index_points_to_wrong_shard(d: Path) -> None:
    shards = sorted(p.name for p in d.glob("model-*.safetensors"))

    def fn(idx):
        name = next(k for k, v in idx["weight_map"].items() if v == shards[0])
        idx["weight_map"][name] = shards[1]

    _edit_json(d / "model.safetensors.index.json", fn)


def _index_not_json(d: Path) -> None:
    (d / "model.safetensors.index.json").write_text('{"weight_map": ')


def _truncated_shard(d: Path) -> None:
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    os.truncate(shard, shard.stat().st_size - 100)


def _wrong_shape(d: Path) -> None:
    _edit_json(d / "config.json", lambda c: c.update(intermediate_size=128))


def _missing_layer(d: Path) -> None:
    _edit_json(d / "config.json", lambda c: c.update(num_hidden_layers=3))


def _unknown_architecture(d: Path) -> None:
    _edit_json(d / "config.json", lambda c: c.update(architectures=["GPT2LMHeadModel"]))


def _unsupported_rope(d: Path) -> None:
    _edit_json(d / "config.json",
               lambda c: c.update(rope_parameters={"rope_type": "dynamic", "factor": 2.0}))


def _no_weights(d: Path) -> None:
    for p in d.glob("model*.safetensors*"):
        p.unlink()


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _unmapped_tensor(d: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"model.extra_head.weight": np.zeros((4, 4), np.float32)}, d / "extra.safetensors")
    _edit_json(d / "model.safetensors.index.json",
               lambda i: i["weight_map"].update({"model.extra_head.weight": "extra.safetensors"}))


# (breaker, words the message must contain) -- one line per failure kind
CASES = {
    "missing shard": (_missing_shard, ["missing"]),
    "bad index: wrong shard": (_index_points_to_wrong_shard, ["bad index"]),
    "bad index: not JSON": (_index_not_json, ["not valid JSON"]),
    "truncated safetensors": (_truncated_shard, ["truncated"]),
    "wrong shape": (_wrong_shape, ["has shape", "config.json implies"]),
    "missing tensors": (_missing_layer, ["missing", "blk.2"]),
    "unknown architecture": (_unknown_architecture, ["GPT2LMHeadModel", "LlamaForCausalLM"]),
    "unsupported rope": (_unsupported_rope, ["dynamic"]),
    "no weights": (_no_weights, ["no weights found"]),
    "no config": (_no_config, ["config.json"]),
    "unmapped tensor": (_unmapped_tensor, ["model.extra_head.weight", "no mapping"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_checkpoint_fails_before_writing(case, tmp_path):
    breaker, words = CASES[case]
    d = _copy(SHARDED, tmp_path)
    breaker(d)
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    out.write_bytes(b"previous file")
    with pytest.raises(ConversionError) as exc:
        convert(d, out, type="f16")
    for w in words:
        assert w in str(exc.value), (case, str(exc.value))
    assert out.read_bytes() == b"previous file"
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]  # no temp file left


def test_nan_weight_fails_and_leaves_no_file(tmp_path):
    d = _copy(SINGLE_F32, tmp_path)
    st = d / "model.safetensors"
    start, _ = _tensor_span(st, "model.layers.1.mlp.up_proj.weight")
    with open(st, "r+b") as fh:
        fh.seek(start + 4 * 70)
        fh.write(np.float32(np.nan).tobytes())
    out = tmp_path / "m.gguf"
    with pytest.raises(ConversionError) as exc:
        convert(d, out, type="q8_0")
    assert "model.layers.1.mlp.up_proj.weight" in str(exc.value)
    assert "non-finite" in str(exc.value)
    assert list(tmp_path.glob("*.gguf*")) == []


def test_f16_overflow_is_refused(tmp_path):
    d = _copy(SINGLE_F32, tmp_path)
    st = d / "model.safetensors"
    start, _ = _tensor_span(st, "model.layers.0.mlp.down_proj.weight")
    with open(st, "r+b") as fh:
        fh.seek(start)
        fh.write(np.float32(1e6).tobytes())
    with pytest.raises(ConversionError, match="overflows f16"):
        convert(d, tmp_path / "m.gguf", type="f16")
    convert(d, tmp_path / "m.gguf", type="bf16")  # bf16 holds it


def test_pickle_needs_opt_in_and_then_matches_safetensors(tmp_path):
    import torch
    from safetensors.torch import load_file

    d = _copy(SINGLE_F32, tmp_path)
    ref = tmp_path / "ref.gguf"
    convert(d, ref, type="f16")
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="--allow-pickle"):
        convert(d, tmp_path / "m.gguf", type="f16")
    convert(d, tmp_path / "m.gguf", type="f16", allow_pickle=True)
    with gguflite.open(ref) as a, gguflite.open(tmp_path / "m.gguf") as b:
        assert list(a.tensors) == list(b.tensors)
        for name in a.tensors:
            assert bytes(a.raw(name)) == bytes(b.raw(name)), name


def test_cli_error_is_one_line_and_exit_1(tmp_path):
    d = _copy(SHARDED, tmp_path)
    _unknown_architecture(d)
    assert_user_error("convert", d, "-o", tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists()


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguflite.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_hub_repo_id_offline(tmp_path):
    """A repo id resolves through huggingface_hub's cache; offline, a missing one fails clearly."""
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--tiny-org--tiny-llama"
    shutil.copytree(cached_checkpoint(SINGLE_F32), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
           "HF_HOME": str(tmp_path / "home")}
    out = tmp_path / "m.gguf"
    res = _run_cli(["convert", "tiny-org/tiny-llama", "-o", str(out), "--type", "f16",
                    "--no-progress"], env)
    assert res.returncode == 0, res.stderr
    with gguflite.open(out) as f:
        assert f.metadata["general.source.repo_url"] == "https://huggingface.co/tiny-org/tiny-llama"
        assert f.metadata["general.name"] == "tiny-llama"
    res = _run_cli(["convert", "tiny-org/not-there", "-o", str(tmp_path / "x.gguf")], env)
    assert res.returncode == 1
    assert "cannot fetch" in res.stderr and "HF_HUB_OFFLINE" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x.gguf").exists()
