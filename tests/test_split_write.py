"""Writing split sets: the shard plan (gguf-py's rule), names and key placement, all or
nothing on failure, and the ``convert`` / ``quantize`` options end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import make_tiny_llama

import gguflite
from gguflite import GGUFWriter
from gguflite.cli.main import cli
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.errors import WriterError
from gguflite.split import SplitFile, SplitLimits, parse_size, plan_shards, write_split
from gguflite.validate import validate

F32 = GGMLType.F32


@pytest.mark.parametrize(("text", "n"), [
    ("2G", 2_000_000_000),  # powers of 1000, as llama-gguf-split and convert_hf_to_gguf.py
    ("500M", 500_000_000),
    ("100K", 100_000),
    ("123", 123),  # plain bytes (convert_hf_to_gguf.py accepts them)
    ("1g", 1_000_000_000),  # case-insensitive unit
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "G", "0M", "-1G", "1.5G", "2GB", "2T", "x"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="split size"):
        parse_size(text)


@pytest.mark.parametrize(("sizes", "limits", "groups"), [
    # no limits: one shard
    ([10, 20, 30], SplitLimits(), [[0, 1, 2]]),
    # at most 2 tensors a shard
    ([10, 20, 30, 40, 50], SplitLimits(max_tensors=2), [[0, 1], [2, 3], [4]]),
    # size: a tensor opens a new shard when it would take the shard over the limit
    ([10, 20, 30, 40], SplitLimits(max_size=50), [[0, 1], [2], [3]]),
    # exactly at the limit stays
    ([25, 25, 25], SplitLimits(max_size=50), [[0, 1], [2]]),
    # a tensor larger than the limit gets a shard of its own (never an empty shard)
    ([100, 10, 200, 10], SplitLimits(max_size=50), [[0], [1], [2], [3]]),
    # both limits: whichever comes first
    ([1, 1, 1, 40, 1], SplitLimits(max_size=40, max_tensors=2), [[0, 1], [2], [3], [4]]),
    # offsets past 2^32: sizes are Python ints
    ([3 << 30, 3 << 30, 1], SplitLimits(max_size=4 << 30), [[0], [1, 2]]),
    # no tensors: one (empty) shard
    ([], SplitLimits(max_tensors=1), [[]]),
])
def test_plan_shards(sizes, limits, groups):
    assert [list(g) for g in plan_shards(sizes, limits)] == groups


@pytest.mark.parametrize("bad", [dict(max_size=0), dict(max_tensors=-1), dict(max_tensors=1.5),
                                 dict(max_size=True)])
def test_limits_must_be_positive_ints(bad):
    with pytest.raises(WriterError):
        SplitLimits(**bad)


def declared(path: Path, n: int = 5, *, alignment: int = 32, fail_at: int | None = None,
             ) -> GGUFWriter:
    """A writer with two keys and ``n`` F32 tensors t0.. (4 x 8, value i); the producer of
    tensor ``fail_at`` raises."""
    w = GGUFWriter(path, alignment=alignment)
    w.add("general.architecture", "test", T.STRING)
    w.add("general.name", "split-test", T.STRING)

    def make(i: int):
        def produce() -> np.ndarray:
            if i == fail_at:
                raise RuntimeError(f"producer {i} failed")
            return np.full((4, 8), i, np.float32)
        return produce

    for i in range(n):
        w.add_tensor(f"t{i}", shape=(4, 8), type=F32, data=make(i))
    return w


def test_shards_names_keys_and_tensors(tmp_path):
    paths = write_split(declared(tmp_path / "model.gguf"), SplitLimits(max_tensors=2))
    assert [p.name for p in paths] == [f"model-0000{k}-of-00003.gguf" for k in (1, 2, 3)]
    assert sorted(os.listdir(tmp_path)) == [p.name for p in paths]  # no temporaries left
    counts = []
    for k, p in enumerate(paths):
        f = gguflite.GGUFFile(p)  # each shard on its own
        with f:
            head = ["general.architecture", "general.name"] if k == 0 else []
            # the first shard: all metadata, then the split keys (as llama-gguf-split, gguf-py)
            assert list(f.metadata) == head + ["split.no", "split.count", "split.tensors.count"]
            assert [f.metadata.value_type(key) for key in list(f.metadata)[-3:]] == [
                T.UINT16, T.UINT16, T.INT32]
            assert (f.metadata["split.no"], f.metadata["split.count"],
                    f.metadata["split.tensors.count"]) == (k, 3, 5)
            counts.append(list(f.tensors))
    assert counts == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    with gguflite.open(paths[0]) as f:
        for i in range(5):
            np.testing.assert_array_equal(f.array(f"t{i}"), np.full((4, 8), i, np.float32))
    report = validate(paths[0])
    assert report.ok and not report.findings, report.findings


def test_one_shard_is_a_plain_file(tmp_path):
    """As gguf-py: limits that everything fits under give one file, named as asked."""
    paths = write_split(declared(tmp_path / "model.gguf"), SplitLimits(max_tensors=10))
    assert paths == [tmp_path / "model.gguf"] and os.listdir(tmp_path) == ["model.gguf"]
    with gguflite.open(paths[0]) as f:
        assert not any(key.startswith("split.") for key in f.metadata)


def test_every_shard_keeps_a_non_default_alignment(tmp_path):
    paths = write_split(declared(tmp_path / "a.gguf", alignment=64), SplitLimits(max_tensors=3))
    for p in paths:
        with gguflite.GGUFFile(p) as f:
            assert f.alignment == 64 and f.metadata["general.alignment"] == 64
            assert all(ti.file_offset % 64 == 0 for ti in f.tensors.values())
    assert validate(paths[0]).ok


def test_a_failure_leaves_no_shard_behind(tmp_path):
    """Tensor 4 (in the third shard) fails: the two complete shards are removed too, and an
    older file under a shard's name is left untouched."""
    old = tmp_path / "model-00001-of-00003.gguf"
    old.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="producer 4 failed"):
        write_split(declared(tmp_path / "model.gguf", fail_at=4), SplitLimits(max_tensors=2))
    assert os.listdir(tmp_path) == [old.name] and old.read_bytes() == b"old"


def test_a_directory_in_the_way_fails_before_writing(tmp_path):
    (tmp_path / "model-00002-of-00003.gguf").mkdir()
    with pytest.raises(WriterError, match="is a directory"):
        write_split(declared(tmp_path / "model.gguf"), SplitLimits(max_tensors=2))
    assert os.listdir(tmp_path) == ["model-00002-of-00003.gguf"]


def test_written_once(tmp_path):
    w = declared(tmp_path / "model.gguf")
    write_split(w, SplitLimits(max_tensors=2))
    with pytest.raises(WriterError, match="already written"):
        write_split(w, SplitLimits(max_tensors=2))


# -- the commands ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    return path


def _same_model(a: Path, b: Path) -> None:
    """Same metadata (split keys aside, types included) and the same tensor bytes in order."""
    with gguflite.open(a) as fa, gguflite.open(b) as fb:
        def keys(f):
            return [(k, f.metadata.value_type(k)) for k in f.metadata if not k.startswith("split.")]
        assert keys(fa) == keys(fb)
        for k in fa.metadata:
            if not k.startswith("split."):
                va, vb = fa.metadata[k], fb.metadata[k]
                assert (list(va) == list(vb)) if hasattr(va, "__len__") and not isinstance(
                    va, str) else va == vb, k
        assert [(n, ti.type, ti.shape) for n, ti in fa.tensors.items()] == [
            (n, ti.type, ti.shape) for n, ti in fb.tensors.items()]
        for n in fa.tensors:
            assert np.array_equal(fa.raw(n), fb.raw(n)), n


def test_quantize_split_and_back(tiny, tmp_path):
    """quantize --split-max-tensors writes a valid set equal to the unsplit output; quantize
    reads the set back (split keys dropped) into the same single file."""
    runner = CliRunner()
    plain = tmp_path / "plain.gguf"
    r = runner.invoke(cli, ["quantize", str(tiny), str(plain), "--type", "q8_0",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["quantize", str(tiny), str(tmp_path / "q8.gguf"), "--type", "q8_0",
                            "--split-max-tensors", "7", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "3 shards" in r.output
    first = tmp_path / "q8-00001-of-00003.gguf"
    r = runner.invoke(cli, ["validate", str(first)])
    assert r.exit_code == 0 and "OK (0 errors, 0 warnings)" in r.output, r.output
    _same_model(plain, first)
    merged = tmp_path / "merged.gguf"
    r = runner.invoke(cli, ["quantize", str(first), str(merged), "--type", "q8_0",
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    with gguflite.open(merged) as f:
        assert not isinstance(f, SplitFile) and "split.count" not in f.metadata
    assert plain.read_bytes() == merged.read_bytes()
    r = runner.invoke(cli, ["info", "--json", str(first)])
    assert json.loads(r.output)["shards"] == 3
    r = runner.invoke(cli, ["dump", "--json", "--tensors", str(first)])
    d = json.loads(r.output)
    assert [s["file"] for s in d["shards"]] == [f"q8-0000{k}-of-00003.gguf" for k in (1, 2, 3)]
    assert [t["shard"] for t in d["tensors"]] == [0] * 7 + [1] * 7 + [2] * 7


def test_quantize_split_max_size(tiny, tmp_path):
    r = CliRunner().invoke(cli, ["quantize", str(tiny), str(tmp_path / "s.gguf"), "-t", "f32",
                                 "--split-max-size", "100K", "--no-progress"])
    assert r.exit_code == 0, r.output
    shards = sorted(tmp_path.iterdir())
    assert len(shards) > 1 and shards[0].name == f"s-00001-of-{len(shards):05d}.gguf"
    with gguflite.open(shards[0]) as f:
        for part in f.shards:  # each under 100 kB of tensor data unless one tensor is bigger
            sizes = [ti.nbytes for ti in part.tensors.values()]
            assert sum(sizes) <= 100_000 or len(sizes) == 1
    _same_model(tiny, shards[0])


@pytest.mark.parametrize("args", [["--split-max-size", "2GB"], ["--split-max-size", "0"],
                                  ["--split-max-tensors", "0"]])
def test_bad_split_options_are_usage_errors(tiny, tmp_path, args):
    r = CliRunner().invoke(cli, ["quantize", str(tiny), str(tmp_path / "o.gguf"), "-t", "q8_0",
                                 *args])
    assert r.exit_code == 2 and not list(tmp_path.iterdir()), r.output


def _planned_and_written(args: list[str], out_dir: Path) -> tuple[list[str], list[str]]:
    """Run ``args`` with --dry-run (the shard lines it prints), then for real (the same lines
    computed from the shards written)."""
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0 and not list(out_dir.glob("m*")), dry.output
    planned = [line for line in dry.output.splitlines() if line.startswith("m-0")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "shards" in r.output
    with gguflite.open(next(out_dir.glob("m-00001-of-*.gguf"))) as f:
        written = [f"{p.path.name}: {len(p.tensors)} tensors, "
                   f"{sum(ti.nbytes for ti in p.tensors.values()):,} bytes" for p in f.shards]
    return planned, written


def test_convert_split(tmp_path):
    """convert --split-max-size: --dry-run lists the shards it then writes, and they hold the
    same model as the single file."""
    from checkpoints import cached_checkpoint

    ckpt = str(cached_checkpoint())
    r = CliRunner().invoke(cli, ["convert", ckpt, "-o", str(tmp_path / "one.gguf"), "-t",
                                 "q8_0", "--no-progress"])
    assert r.exit_code == 0, r.output
    planned, written = _planned_and_written(
        ["convert", ckpt, "-o", str(tmp_path / "m.gguf"), "-t", "q8_0", "--split-max-size",
         "30K", "--no-progress"], tmp_path)
    assert planned == written and len(written) > 2
    first = next(tmp_path.glob("m-00001-of-*.gguf"))
    _same_model(tmp_path / "one.gguf", first)
    assert validate(first).ok


def test_quantize_dry_run_lists_the_shards(tiny, tmp_path):
    planned, written = _planned_and_written(
        ["quantize", str(tiny), str(tmp_path / "m.gguf"), "-t", "q8_0", "--split-max-size",
         "30K", "--no-progress"], tmp_path)
    assert planned == written and len(written) > 2


def test_set_metadata_edits_a_split_set_in_place(tmp_path):
    """The first shard alone is rewritten (with its own tensors); the set stays whole."""
    from gguflite.converters.edit import EditError, set_metadata

    paths = write_split(declared(tmp_path / "model.gguf"), SplitLimits(max_tensors=2))
    later = [p.read_bytes() for p in paths[1:]]
    set_metadata(paths[0], {"general.name": "renamed"})
    with gguflite.open(paths[0]) as f:
        assert isinstance(f, SplitFile) and f.metadata["general.name"] == "renamed"
        assert [len(s.tensors) for s in f.shards] == [2, 2, 1]
        np.testing.assert_array_equal(f.array("t4"), np.full((4, 8), 4, np.float32))
    assert [p.read_bytes() for p in paths[1:]] == later
    assert validate(paths[0]).ok
    with pytest.raises(EditError, match="in place"):
        set_metadata(paths[0], {"general.name": "x"}, out=tmp_path / "other.gguf")
    with pytest.raises(EditError, match="split.count"):
        set_metadata(paths[0], {"split.count": "2"})


def test_quantize_refuses_to_overwrite_its_source_shards(tiny, tmp_path):
    from gguflite.converters.requantize import requantize
    from gguflite.errors import GGUFLiteError

    paths: list[Path] = []
    requantize(tiny, tmp_path / "m.gguf", type="q8_0", split=SplitLimits(max_tensors=7),
               outputs=paths)
    before = [p.read_bytes() for p in paths]
    with pytest.raises(GGUFLiteError, match="would overwrite an input file"):
        requantize(paths[0], tmp_path / "m.gguf", type="q8_0", split=SplitLimits(max_tensors=7))
    assert [p.read_bytes() for p in paths] == before
    assert sorted(tmp_path.iterdir()) == paths


def test_km_tensors_across_shards(tiny, tmp_path):
    """KM tensors (companions + gguflite.km.* keys, spec/extensions-km.md): the keys stay in
    the first shard, the companions spread over the shards, and the set decodes as the file."""
    from gguflite.converters.requantize import requantize

    requantize(tiny, tmp_path / "one.gguf", type="km4")
    paths: list[Path] = []
    requantize(tiny, tmp_path / "m.gguf", type="km4", split=SplitLimits(max_tensors=4),
               outputs=paths)
    _same_model(tmp_path / "one.gguf", paths[0])
    with gguflite.open(paths[0]) as f, gguflite.open(tmp_path / "one.gguf") as g:
        km = "blk.1.ffn_down.weight"
        assert f.shard_of(km + ".km") > 0 and f"gguflite.km.{km}.bits" in f.shards[0].metadata
        np.testing.assert_array_equal(f.dequantize(km), g.dequantize(km))
    report = validate(paths[0])
    assert report.ok and not report.findings, report.findings
