"""Split sets on the read side: every rule S1-S9 has a broken set built here; the reader raises
a ``SplitError`` naming the shard and the rule, and the validator reports the same rule. Also
files and sets with more than 4 GiB of tensor data (sparse files)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from gguf_bytes import build, f32s, gstr, kv, scalar, tensor_info

import gguflite
from gguflite import GGUFWriter
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.errors import SplitError, TruncatedError
from gguflite.split import RULES, SplitFile
from gguflite.validate import validate

SPEC = (Path(__file__).parents[1] / "spec" / "gguflite-v1.md").read_text()
F32 = GGMLType.F32


def shard(path: Path, *, no: int | None, count: int | None, total: int | None,
          tensors: dict[str, float], keys: dict | None = None,
          no_type: T = T.UINT16) -> Path:
    """One shard written by GGUFWriter with the split keys given (None: key left out); each
    tensor is 4 float32 values equal to its number."""
    with GGUFWriter(path) as w:
        for key, (value, vtype) in (keys or {}).items():
            w.add(key, value, vtype)
        if no is not None:
            w.add("split.no", no, no_type)
        if count is not None:
            w.add("split.count", count, T.UINT16)
        if total is not None:
            w.add("split.tensors.count", total, T.INT32)
        for name, v in tensors.items():
            w.add_tensor(name, shape=(4,), type=F32, data=np.full(4, v, np.float32))
    return path


def good_set(d: Path, count: int = 3, prefix: str = "m") -> list[Path]:
    """A valid set: shard k holds tensor t{k-1}; the first also the metadata."""
    paths = []
    for k in range(1, count + 1):
        keys = {"general.architecture": ("test", T.STRING)} if k == 1 else None
        paths.append(shard(d / f"{prefix}-{k:05d}-of-{count:05d}.gguf", no=k - 1, count=count,
                           total=count, tensors={f"t{k - 1}": k - 1}, keys=keys))
    return paths


def test_good_set_is_one_file(tmp_path):
    first, *_ = good_set(tmp_path)
    with gguflite.open(first) as f:
        assert isinstance(f, SplitFile)
        assert list(f.tensors) == ["t0", "t1", "t2"]
        assert [f.shard_of(n) for n in f.tensors] == [0, 1, 2]
        assert [s.path.name for s in f.shards] == [f"m-0000{k}-of-00003.gguf" for k in (1, 2, 3)]
        assert f.metadata["general.architecture"] == "test"
        assert f.file_size == sum(p.stat().st_size for p in tmp_path.iterdir())
        for k in range(3):
            np.testing.assert_array_equal(f.array(f"t{k}"), np.full(4, k, np.float32))
            np.testing.assert_array_equal(f.dequantize(f"t{k}"), np.full(4, k, np.float32))
            assert not f.raw(f"t{k}").flags.writeable
    report = validate(first)
    assert report.ok and not report.findings, report.findings


def test_a_set_of_one_is_a_plain_file(tmp_path):
    """llama-gguf-split writes split.count = 1 when everything fits; llama.cpp ignores it."""
    p = shard(tmp_path / "m-00001-of-00001.gguf", no=0, count=1, total=1, tensors={"a": 1})
    with gguflite.open(p) as f:
        assert not isinstance(f, SplitFile) and f.shards == (f,)
    assert validate(p).ok


def _rename_first(d: Path) -> Path:
    return (d / "m-00001-of-00003.gguf").rename(d / "model.gguf")


def _swap(d: Path) -> Path:
    a, b = d / "m-00002-of-00003.gguf", d / "m-00003-of-00003.gguf"
    a.rename(d / "tmp")
    b.rename(a)
    (d / "tmp").rename(b)
    return d / "m-00001-of-00003.gguf"


def _replace_shard(d: Path, k: int, **kw) -> Path:
    defaults = dict(no=k - 1, count=3, total=3, tensors={f"t{k - 1}": k - 1})
    shard(d / f"m-{k:05d}-of-00003.gguf", **(defaults | kw))
    return d / "m-00001-of-00003.gguf"


def _rewrite_first(d: Path, **kw) -> Path:
    defaults = dict(no=0, count=3, total=3, tensors={"t0": 0})
    return shard(d / "m-00001-of-00003.gguf", **(defaults | kw))


# (case, rule, what the message names, how to break a good set) -> the path to open
CASES = [
    # S1: split.no stored as UINT32 (llama.cpp reads a UINT16)
    ("no_wrong_type", "S1", "split.no", lambda d: _rewrite_first(d, no_type=T.UINT32)),
    # S1: split.tensors.count missing from the first shard
    ("no_tensors_count", "S1", "split.tensors.count", lambda d: _rewrite_first(d, total=None)),
    # S1: split.no >= split.count
    ("no_out_of_range", "S1", "split.no is 5", lambda d: _replace_shard(d, 2, no=5)),
    # S3: the first shard renamed, so its siblings cannot be found
    ("first_renamed", "S3", "model.gguf", _rename_first),
    # S3: the name's count disagrees with split.count
    ("name_count", "S3", "PREFIX-00001-of-00003",
     lambda d: (d / "m-00001-of-00003.gguf").rename(d / "m-00001-of-00004.gguf")),
    # S4: a shard missing
    ("missing", "S4", "m-00002-of-00003.gguf",
     lambda d: (d / "m-00002-of-00003.gguf").unlink() or d / "m-00001-of-00003.gguf"),
    # S4: a directory where a shard should be
    ("shard_is_a_directory", "S4", "not a regular file",
     lambda d: (d / "m-00003-of-00003.gguf").unlink() or (d / "m-00003-of-00003.gguf").mkdir()
     or d / "m-00001-of-00003.gguf"),
    # S5: shards 2 and 3 swapped (renamed): split.no disagrees with the name
    ("reordered", "S5", "m-00002-of-00003.gguf has split.no 2", _swap),
    # S5: a shard from another split of the same model (another split.count)
    ("other_count", "S5", "m-00003-of-00003.gguf", lambda d: _replace_shard(d, 3, count=4)),
    # S5: a shard with no split keys at all
    ("no_split_keys", "S5", "no split keys",
     lambda d: _replace_shard(d, 2, no=None, count=None, total=None)),
    # S6: an extra shard numbered past the count
    ("extra", "S6", "m-00004-of-00003.gguf",
     lambda d: shard(d / "m-00004-of-00003.gguf", no=3, count=3, total=3, tensors={}) and
     d / "m-00001-of-00003.gguf"),
    # S7: the same tensor name in two shards
    ("duplicate", "S7", "'t0' is also in m-00001-of-00003.gguf",
     lambda d: _replace_shard(d, 2, tensors={"t0": 9})),
    # S8: a shard holds one tensor more than split.tensors.count says
    ("count", "S8", "hold 4 tensors", lambda d: _replace_shard(d, 2, tensors={"t1": 1, "u": 2})),
]


@pytest.mark.parametrize(("case", "rule", "named", "breaker"), CASES, ids=[c[0] for c in CASES])
def test_broken_sets(tmp_path, case, rule, named, breaker):
    good_set(tmp_path)
    path = breaker(tmp_path)
    with pytest.raises(SplitError) as err:
        gguflite.open(path)
    assert err.value.rule == rule
    assert named in str(err.value), str(err.value)
    report = validate(path)
    assert [f.rule for f in report.errors] == [rule], report.findings


def test_a_later_shard_is_not_a_model_but_validates_alone(tmp_path):
    """S2: the reader refuses a later shard (as llama.cpp does) and names the first; the
    validator, given every shard (``validate m-*.gguf``), checks a later one as the file it is
    and says so in a warning."""
    good_set(tmp_path)
    later = tmp_path / "m-00002-of-00003.gguf"
    with pytest.raises(SplitError, match=r"\[S2\] .*open the first shard, m-00001-of-00003"):
        gguflite.open(later)
    report = validate(later)
    assert report.ok and [f.rule for f in report.findings] == ["S2"], report.findings
    _replace_shard(tmp_path, 2, keys={"general.name": ("x", T.STRING)})
    assert [f.rule for f in validate(later).findings] == ["S2", "S9"]
    with open(later, "ab") as fh:  # the file's own rules still apply: trailing bytes (V18)
        fh.write(b"\1" * 40)
    assert [f.rule for f in validate(later).findings] == ["S2", "V18", "S9"]


def test_a_broken_shard_is_its_own_error_naming_the_shard(tmp_path):
    good_set(tmp_path)
    p = tmp_path / "m-00003-of-00003.gguf"
    p.write_bytes(p.read_bytes()[:-20])  # truncated: its tensor runs past the end (V15)
    with pytest.raises(gguflite.FormatError) as err:
        gguflite.open(tmp_path / "m-00001-of-00003.gguf")
    assert err.value.rule == "V15" and "shard 3 of 3 (m-00003-of-00003.gguf)" in str(err.value)
    p.write_bytes(b"GGUF\3\0\0\0")  # cut inside the header (V3)
    with pytest.raises(TruncatedError, match=r"\[V3\] shard 3 of 3"):
        gguflite.open(tmp_path / "m-00001-of-00003.gguf")


def test_extra_keys_in_later_shards_are_a_warning(tmp_path):
    good_set(tmp_path)
    path = _replace_shard(tmp_path, 2, keys={"general.name": ("x", T.STRING)})
    with gguflite.open(path) as f:  # the reader accepts it, as llama.cpp does
        assert "general.name" not in f.metadata
    report = validate(path)
    assert report.ok and [f.rule for f in report.warnings] == ["S9"], report.findings


def test_layout_rules_run_in_every_shard(tmp_path):
    good_set(tmp_path)
    p = tmp_path / "m-00002-of-00003.gguf"
    with open(p, "ab") as fh:
        fh.write(b"\1" * 40)  # trailing bytes after shard 2's data: V18 (warning)
    report = validate(tmp_path / "m-00001-of-00003.gguf")
    assert [(f.rule, f.message.split(":")[0]) for f in report.findings] == [
        ("V18", "m-00002-of-00003.gguf")]


def test_spec_rule_table_mirrors_split_rules():
    section = SPEC[SPEC.index("## 14."):]
    assert re.findall(r"^\| (S\d+) \|", section, re.M) == list(RULES)
    tested = {c[1] for c in CASES} | {"S2", "S9"}
    assert tested == set(RULES)


# -- more than 4 GiB of tensor data -----------------------------------------------------------
BIG = (4 << 30) + (256 << 20)  # 4.25 GiB: every offset after it is over 2^32


def _sparse(path: Path, head: bytes, size: int, writes: dict[int, bytes]) -> Path:
    """A sparse file of ``size`` bytes: ``head``, then ``writes`` at their offsets."""
    with open(path, "wb") as fh:
        fh.write(head)
        for at, data in writes.items():
            fh.seek(at)
            fh.write(data)
        fh.truncate(size)
    return path


def _big_file(path: Path, keys: list[bytes]) -> tuple[Path, int]:
    """I8 tensor 'big' of BIG bytes (zeros, never written), then F32 'after' = 1, 2, 3, 4."""
    infos = [tensor_info("big", [BIG], GGMLType.I8, 0), tensor_info("after", [4], F32, BIG)]
    head = build(keys, infos)
    after = len(head) + BIG
    return _sparse(path, head, after + 32, {after: f32s(1, 2, 3, 4)}), after


def test_file_over_4_gib(tmp_path):
    path, after = _big_file(tmp_path / "big.gguf", [kv("general.architecture", T.STRING,
                                                        gstr("test"))])
    with gguflite.open(path) as f:
        ti = f.tensors["after"]
        assert ti.offset == BIG and ti.file_offset == after > 1 << 32
        np.testing.assert_array_equal(f.array("after"), [1, 2, 3, 4])
        assert f.raw("big").nbytes == BIG
    report = validate(path)  # V16-V18 with offsets past 2^32
    assert report.ok and not report.findings, report.findings


def test_writer_offsets_over_4_gib(tmp_path):
    """The writer's header for a 4.25 GiB tensor + one more, read back by the reader: the second
    offset is past 2^32. The header alone is written (``_header``), the data left sparse."""
    w = GGUFWriter(tmp_path / "unused.gguf")
    w.add("general.architecture", "test", T.STRING)
    w.add_tensor("big", shape=(BIG,), type=GGMLType.I8, data=lambda: None)  # never produced
    w.add_tensor("after", shape=(4,), type=F32, data=lambda: None)
    head = w._header()  # noqa: SLF001  (the layout the writer would write)
    path = _sparse(tmp_path / "big.gguf", head, len(head) + BIG + 32, {})
    with gguflite.open(path) as f:
        assert f.tensors["after"].offset == BIG
        assert f.tensors["after"].file_offset == len(head) + BIG
    assert validate(path).ok


def test_split_set_over_4_gib(tmp_path):
    """A second shard with 4.25 GiB of data: its second tensor's offsets are past 2^32."""
    shard(tmp_path / "m-00001-of-00002.gguf", no=0, count=2, total=3, tensors={"t0": 0},
          keys={"general.architecture": ("test", T.STRING)})
    split_keys = [kv("split.no", T.UINT16, scalar(T.UINT16, 1)),
                  kv("split.count", T.UINT16, scalar(T.UINT16, 2)),
                  kv("split.tensors.count", T.INT32, scalar(T.INT32, 3))]
    _, after = _big_file(tmp_path / "m-00002-of-00002.gguf", split_keys)
    with gguflite.open(tmp_path / "m-00001-of-00002.gguf") as f:
        assert list(f.tensors) == ["t0", "big", "after"]
        assert f.shard_of("after") == 1 and f.tensors["after"].file_offset == after > 1 << 32
        np.testing.assert_array_equal(f.array("after"), [1, 2, 3, 4])
        np.testing.assert_array_equal(f.array("t0"), [0, 0, 0, 0])
        assert f.file_size > 1 << 32
    assert validate(tmp_path / "m-00001-of-00002.gguf").ok
    os.unlink(tmp_path / "m-00002-of-00002.gguf")


def test_every_truncation_and_ff_byte_of_every_shard(tmp_path):
    """A damaged shard (cut short anywhere, or any header byte set to 0xFF) is a FormatError
    or still reads; nothing else escapes, and the validator reports instead of raising."""
    from fuzz_harness import exercise

    paths = good_set(tmp_path)
    first = paths[0]
    for p in paths:
        data = p.read_bytes()
        with gguflite.GGUFFile(p) as f:
            header_end = f.data_offset
        variants = [data[:n] for n in range(0, len(data), 3)]
        variants += [data[:i] + b"\xff" + data[i + 1:] for i in range(header_end)]
        for variant in variants:
            p.write_bytes(variant)
            exercise(first)  # FormatError is the only error it lets through the reader
            validate(first)
        p.write_bytes(data)


def test_dump_shows_a_later_shard_alone(tmp_path):
    from click.testing import CliRunner

    from gguflite.cli.main import cli

    good_set(tmp_path)
    r = CliRunner().invoke(cli, ["dump", "--json", str(tmp_path / "m-00002-of-00003.gguf")])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["metadata"]) == ["split.no", "split.count", "split.tensors.count"]
    assert [t["name"] for t in d["tensors"]] == ["t1"] and "shards" not in d
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "m-00002-of-00003.gguf")])
    assert r.exit_code == 1 and "[S2]" in r.output
