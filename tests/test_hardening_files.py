"""Files that are not what they seem, and the Python API's misuse errors (issue 16, points 4,
6 and 7): FIFOs and devices refused at once, ``set-metadata`` keeping mode and symlinks, and a
clear error for a writer used after ``write()`` or a file read after ``close()``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from hardening_cli import assert_one_line_error, leftovers, run_cli
from tiny_models import make_tiny_llama

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite import GGUFValueType as T
from gguflite.errors import ClosedFileError, NotRegularFileError, WriterError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("files") / "tiny.gguf")
    return path


# -- point 6: non-regular files --------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["info", "model.fifo"],
    ["dump", "model.fifo"],
    ["validate", "model.fifo"],
    ["run", "model.fifo", "-p", "hi", "-n", "1"],
    ["quantize", "model.fifo", "out.gguf", "--type", "q8_0"],
])
def test_a_fifo_is_refused_at_once(tmp_path, args):
    os.mkfifo(tmp_path / "model.fifo")  # nobody writes to it: opening it blocks forever
    proc = run_cli(args, cwd=tmp_path, timeout=120)
    if args[0] == "validate":  # reports per file, one line, exit 1
        assert proc.returncode == 1 and b"is a FIFO, not a regular file" in proc.stdout
        assert b"Traceback" not in proc.stderr
    else:
        assert_one_line_error(proc, 1, r"model\.fifo: is a FIFO, not a regular file")


def test_devices_are_refused_in_the_api():
    for path in ("/dev/zero", "/dev/null"):
        with pytest.raises(NotRegularFileError, match="is a device"):
            gguflite.open(path)


# -- point 4: set-metadata keeps mode and symlinks ---------------------------------------------
def test_set_metadata_in_place_keeps_a_private_mode(tiny, tmp_path):
    model = tmp_path / "private.gguf"
    model.write_bytes(tiny.read_bytes())
    model.chmod(0o600)
    proc = run_cli(["set-metadata", str(model), "general.name=private"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert stat.S_IMODE(model.stat().st_mode) == 0o600
    with gguflite.open(model) as f:
        assert f.metadata["general.name"] == "private"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_set_metadata_in_place_keeps_the_owner(tiny, tmp_path):
    model = tmp_path / "owned.gguf"
    model.write_bytes(tiny.read_bytes())
    os.chown(model, 12345, 23456)
    proc = run_cli(["set-metadata", str(model), "general.name=owned"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    st = model.stat()
    assert (st.st_uid, st.st_gid) == (12345, 23456)


def test_set_metadata_writes_through_a_symlink(tiny, tmp_path):
    real = tmp_path / "store" / "real.gguf"
    real.parent.mkdir()
    real.write_bytes(tiny.read_bytes())
    real.chmod(0o640)
    link = tmp_path / "link.gguf"
    link.symlink_to(Path("store") / "real.gguf")
    proc = run_cli(["set-metadata", "link.gguf", "general.name=linked"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert link.is_symlink() and os.readlink(link) == str(Path("store") / "real.gguf")
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    with gguflite.open(real) as f:
        assert f.metadata["general.name"] == "linked"
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


def test_writer_refuses_to_replace_a_special_file(tmp_path):
    os.mkfifo(tmp_path / "out.fifo")
    w = GGUFWriter(tmp_path / "out.fifo")
    w.add("general.architecture", "llama", T.STRING)
    with pytest.raises(WriterError, match="not a regular file"):
        w.write()
    assert stat.S_ISFIFO((tmp_path / "out.fifo").stat().st_mode) and leftovers(tmp_path) == []


# -- point 7: Python API misuse ---------------------------------------------------------------
def test_writer_declarations_after_write_raise(tmp_path):
    w = GGUFWriter(tmp_path / "a.gguf")
    w.add("general.architecture", "llama", T.STRING)
    w.write()
    with pytest.raises(WriterError, match="already written"):
        w.add("general.name", "late", T.STRING)
    with pytest.raises(WriterError, match="already written"):
        w.add_tensor("t", shape=(4,), type=GGMLType.F32, data=np.zeros(4, np.float32))
    with pytest.raises(WriterError, match="already written"):
        w.write()


@pytest.mark.parametrize("vtype, etype", [(99, None), (T.ARRAY, 99), ("u32", None)])
def test_writer_unknown_value_type_is_a_writer_error(tmp_path, vtype, etype):
    with pytest.raises(WriterError, match=r"key 'k': unknown value type"):
        GGUFWriter(tmp_path / "a.gguf").add("k", 1, vtype, etype)


def test_reading_tensor_data_after_close_says_closed(tiny):
    f = gguflite.open(tiny)
    f.close()
    for read in (f.raw, f.array, f.dequantize):
        with pytest.raises(ClosedFileError, match=r"is closed; tensor 'output_norm\.weight'"):
            read("output_norm.weight")
    assert f.metadata["general.architecture"] == "llama"  # metadata stays readable
