"""Split sets across tools: llama.cpp (llama-cpp-python) loads the sets gguflite writes, and
gguflite loads the sets llama.cpp's tooling writes: gguf-py's ``GGUFWriter`` with
``split_max_tensors`` / ``split_max_size`` (the writer behind ``convert_hf_to_gguf.py
--split-max-*``; gguflite's shards equal its shards byte for byte), and ``llama-gguf-split``
itself (its output committed under tests/data/llama_gguf_split; gguflite's shards hold the
same bytes but for the order of the split keys). The runtime and the torch backend run a set
as they run the single file."""

from __future__ import annotations

from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from tiny_models import make_tiny_llama

import gguflite
from gguflite import GGUFWriter
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.converters.requantize import requantize
from gguflite.metadata import StringArray
from gguflite.runtime import load
from gguflite.split import SplitFile, SplitLimits, write_split
from gguflite.validate import validate

IDS = [1, 300, 301, 262, 263, 264, 265, 266, 267, 268]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny Q8_0 llama (21 tensors) as one file."""
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf",
                                 wtype=GGMLType.Q8_0)
    return path


def gguf_py_split(src: Path, out: Path, **split: int) -> Path:
    """``src`` rewritten by gguf-py's GGUFWriter with ``split`` (``split_max_tensors``,
    ``split_max_size``, ``small_first_shard``); returns the first shard."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with gguflite.open(src) as f:
        w = gguf.GGUFWriter(out, f.metadata["general.architecture"], **split)
        for key in f.metadata:
            if key == "general.architecture":
                continue  # gguf-py's constructor wrote it, first
            value = f.metadata[key]
            vtype, etype = f.metadata.value_type(key), f.metadata.element_type(key)
            if isinstance(value, StringArray):
                value = list(value)
            elif isinstance(value, np.ndarray):
                value = value.tolist()
            w.add_key_value(key, value, gguf.GGUFValueType(vtype),
                            None if etype is None else gguf.GGUFValueType(etype))
        for name, ti in f.tensors.items():
            data = f.array(name).copy()  # float32, or uint8 (rows, row bytes) for block types
            w.add_tensor(name, data, raw_dtype=None if ti.type == GGMLType.F32
                         else gguf.GGMLQuantizationType(int(ti.type)))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    (first,) = out.parent.glob(f"{out.stem}-00001-of-*.gguf")
    return first


def llama_cpp_logits(path: Path) -> np.ndarray:
    llm = llama_cpp.Llama(str(path), logits_all=True, verbose=False, n_ctx=64, n_threads=1)
    llm.eval(IDS)
    out = np.array(llm.scores[: len(IDS)], dtype=np.float32)  # (n, vocab)
    llm.close()
    return out


@pytest.mark.parametrize(("theirs_limits", "ours_limits", "n"), [
    (dict(split_max_tensors=8), SplitLimits(max_tensors=8), 3),
    (dict(split_max_size=20_000), SplitLimits(max_size=20_000), 7),
])
def test_our_shards_are_gguf_py_shards_byte_for_byte(tiny, tmp_path, theirs_limits,
                                                     ours_limits, n):
    """The same model split by gguf-py and by gguflite: every shard identical."""
    theirs = gguf_py_split(tiny, tmp_path / "theirs" / "m.gguf", **theirs_limits)
    with gguflite.open(tiny) as f:  # the same declarations, in gguflite's writer
        w = GGUFWriter(tmp_path / "ours" / "m.gguf")
        for key in f.metadata:
            w.add_from(f, key)
        for name, ti in f.tensors.items():
            w.add_tensor(name, shape=ti.shape, type=ti.type, data=f.raw(name))
        write_split(w, ours_limits)
    names = sorted(p.name for p in theirs.parent.iterdir())
    assert names == [f"m-{k:05d}-of-{n:05d}.gguf" for k in range(1, n + 1)]
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == names
    for name in names:
        assert (theirs.parent / name).read_bytes() == (tmp_path / "ours" / name).read_bytes(), name


def test_gguflite_reads_gguf_py_split_sets(tiny, tmp_path):
    first = gguf_py_split(tiny, tmp_path / "m.gguf", split_max_tensors=5)  # 5 shards
    with gguflite.open(first) as f, gguflite.open(tiny) as g:
        assert isinstance(f, SplitFile) and len(f.shards) == 5
        assert list(f.tensors) == list(g.tensors)
        for name in g.tensors:
            assert np.array_equal(f.raw(name), g.raw(name)), name
        assert [k for k in f.metadata if not k.startswith("split.")] == list(g.metadata)
        assert (f.metadata["split.count"], f.metadata["split.tensors.count"]) == (5, 21)
    report = validate(first)
    assert report.ok and not report.findings, report.findings


def test_a_first_shard_without_tensors(tiny, tmp_path):
    """gguf-py's small_first_shard (llama-gguf-split --no-tensor-first-split): the first shard
    holds the metadata only."""
    first = gguf_py_split(tiny, tmp_path / "m.gguf", split_max_tensors=11, small_first_shard=True)
    with gguflite.open(first) as f, gguflite.open(tiny) as g:
        assert [len(s.tensors) for s in f.shards] == [0, 11, 10]
        assert list(f.tensors) == list(g.tensors)
        assert all(np.array_equal(f.raw(n), g.raw(n)) for n in g.tensors)
    assert validate(first).ok


def test_llama_cpp_loads_our_split_sets(tiny, tmp_path):
    """llama.cpp, given our first shard, finds the others and computes the same logits as from
    the single file (the same weights: bit-identical)."""
    paths: list[Path] = []
    requantize(tiny, tmp_path / "s.gguf", type="q8_0", split=SplitLimits(max_tensors=4),
               outputs=paths)
    assert len(paths) == 6
    np.testing.assert_array_equal(llama_cpp_logits(paths[0]), llama_cpp_logits(tiny))


def test_runtime_and_torch_run_split_sets(tiny, tmp_path):
    """The Numba runtime and the torch backend, given the first shard of llama.cpp-style
    shards, compute the same logits as from the single file."""
    first = gguf_py_split(tiny, tmp_path / "m.gguf", split_max_tensors=3)
    with load(tiny, n_ctx=64, threads=1) as m:
        want = m.logits(IDS)  # (n, vocab)
    with load(first, n_ctx=64, threads=1) as m:
        np.testing.assert_array_equal(m.logits(IDS), want)
    with load(tiny, n_ctx=64, backend="torch", device="cpu") as m:
        want_torch = m.logits(IDS)
    with load(first, n_ctx=64, backend="torch", device="cpu") as m:
        np.testing.assert_array_equal(m.logits(IDS), want_torch)


def test_gguflite_run_cli_on_a_split_set(tiny, tmp_path):
    from click.testing import CliRunner

    from gguflite.cli.main import cli

    first = gguf_py_split(tiny, tmp_path / "m.gguf", split_max_tensors=7)
    args = ["-p", "the sea", "-n", "8", "--seed", "0", "--temp", "0"]
    want = CliRunner().invoke(cli, ["run", str(tiny), *args])
    got = CliRunner().invoke(cli, ["run", str(first), *args])
    assert want.exit_code == 0 and got.exit_code == 0, got.output
    assert got.stdout == want.stdout and want.stdout.strip()


def test_gguf_py_reads_our_split_keys(tiny, tmp_path):
    """gguf-py's reader sees the split keys with llama.cpp's types in every shard."""
    paths: list[Path] = []
    requantize(tiny, tmp_path / "s.gguf", type="q8_0", split=SplitLimits(max_tensors=10),
               outputs=paths)
    for k, p in enumerate(paths):
        r = gguf.GGUFReader(p)
        assert int(r.fields["split.no"].types[0]) == T.UINT16
        assert int(r.fields["split.tensors.count"].types[0]) == T.INT32
        assert (r.fields["split.no"].contents(), r.fields["split.count"].contents()) == (k, 3)


# -- llama.cpp's own split tool (files in tests/data/llama_gguf_split, see its README) ---------
LLAMA_GGUF_SPLIT = Path(__file__).parent / "data" / "llama_gguf_split"
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


@pytest.mark.parametrize(("first", "per_shard"), [
    ("max_tensors_2/m-00001-of-00003.gguf", [2, 2, 1]),
    ("no_tensor_first_split/n-00001-of-00003.gguf", [0, 3, 2]),  # metadata-only first shard
])
def test_gguflite_reads_llama_gguf_split_output(first, per_shard):
    with gguflite.open(LLAMA_GGUF_SPLIT / first) as f:
        assert [len(s.tensors) for s in f.shards] == per_shard
        assert list(f.tensors) == [f"t{i}" for i in range(5)]
        for i in range(5):
            np.testing.assert_array_equal(f.array(f"t{i}"), np.full((4, 8), i, np.float32))
        assert f.metadata["general.name"] == "split-test"
    report = validate(LLAMA_GGUF_SPLIT / first)
    assert report.ok and not report.findings, report.findings


def _kv_spans(path: Path) -> tuple[list[str], dict[str, bytes], bytes]:
    """(key order, key -> its entry's bytes, every byte after the metadata) of one shard."""
    data = path.read_bytes()
    with gguflite.GGUFFile(path) as f:
        starts = [f.metadata.entry(k).offset for k in f.metadata]
        info_start = min((ti.info_offset for ti in f.tensors.values()), default=f.header_end)
        bounds = [*starts, info_start]
        spans = {k: data[a:b] for k, a, b in zip(f.metadata, bounds, bounds[1:], strict=False)}
        return list(f.metadata), spans, data[info_start:]


def test_our_shards_are_llama_gguf_split_shards_but_for_the_split_key_order(tmp_path):
    """gguflite's shards of the same file, split by the same rule, hold the same bytes as
    llama-gguf-split's: the same metadata entries, tensor infos, padding and data. The one
    difference: llama-gguf-split orders the split keys no, tensors.count, count (gguf-py's
    and gguflite's: no, count, tensors.count)."""
    from test_split_write import declared

    ours = write_split(declared(tmp_path / "m.gguf"), SplitLimits(max_tensors=2))
    for path in ours:
        o_keys, o_spans, o_rest = _kv_spans(path)
        t_keys, t_spans, t_rest = _kv_spans(LLAMA_GGUF_SPLIT / "max_tensors_2" / path.name)
        assert o_spans == t_spans and o_rest == t_rest, path.name
        assert o_keys[-3:] == list(SPLIT_KEYS)
        assert t_keys[-3:] == ["split.no", "split.tensors.count", "split.count"]
        assert o_keys[:-3] == t_keys[:-3]
