"""Signals and full disks (issue 16, points 3 and 5): the writer's temporary file never
outlives the command, except after SIGKILL, and then the next write in that folder removes it.

A real ``gguflite quantize`` child is signalled as soon as its temporary file appears (the
quantization of 16 MiB of F32 weights to Q4_K is still running then); the full disk is an
``RLIMIT_FSIZE`` on the child.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hardening_cli import assert_one_line_error, leftovers, run_cli, start_cli
from tiny_models import make_tiny_llama

from gguflite import GGMLType, GGUFWriter
from gguflite import GGUFValueType as T
from gguflite.writer import remove_stale_temp_files, stale_temp_files


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """16 MiB of F32 matrices: long enough to quantize that a signal lands mid-write."""
    path = tmp_path_factory.mktemp("big") / "big.gguf"
    rng = np.random.default_rng(0)
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama", T.STRING)
        for i in range(4):
            w.add_tensor(f"blk.{i}.ffn_up.weight", shape=(512, 2048), type=GGMLType.F32,
                         data=rng.standard_normal((512, 2048), dtype=np.float32))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    return path


def _quantize_until_temp_appears(big: Path, folder: Path) -> subprocess.Popen[bytes]:
    proc = start_cli(["quantize", str(big), "out.gguf", "--type", "q4_k", "--no-progress"],
                     cwd=folder)
    deadline = time.monotonic() + 240
    while not leftovers(folder):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.01)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_the_temp_file_and_says_one_line(big, tmp_path, sig):
    proc = _quantize_until_temp_appears(big, tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=240)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, b"", err)
    assert_one_line_error(done, 128 + sig, rf"{signal.Signals(sig).name}")
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.gguf").exists()


def test_sigkill_leftover_is_recognised_and_swept_by_the_next_write(big, tiny, tmp_path):
    proc = _quantize_until_temp_appears(big, tmp_path)
    proc.kill()
    proc.wait()
    left = leftovers(tmp_path)
    assert len(left) == 1 and f"-{proc.pid}-" in left[0]  # named after the dead writer
    assert [p.name for p in stale_temp_files(tmp_path)] == left
    shutil.copy(big, tmp_path / "model.gguf")
    proc = run_cli(["validate", "model.gguf"], cwd=tmp_path)  # lists it, removes nothing
    assert proc.returncode == 0 and left[0] in proc.stderr.decode(), proc.stderr.decode()
    assert leftovers(tmp_path) == left
    proc = run_cli(["set-metadata", str(tiny), "general.name=x", "-o", "edited.gguf"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert leftovers(tmp_path) == []


def test_a_live_writers_temp_file_is_kept(tmp_path):
    from gguflite.writer import _HOST

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".x.gguf.gguflite-{_HOST}-{sleeper.pid}-abc123.tmp"
        other_host = tmp_path / ".x.gguf.gguflite-otherhost-999999999-abc123.tmp"
        live.write_bytes(b"busy")
        other_host.write_bytes(b"not ours to judge")
        assert remove_stale_temp_files(tmp_path) == []
        assert live.exists() and other_host.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temp_files(tmp_path) == [live]  # its writer is gone now


FSIZE = 64 << 10  # the child may write at most 64 KiB per file: a "full disk"


@pytest.mark.parametrize("args", [
    ["quantize", "{tiny}", "out.gguf", "--type", "f32", "--no-progress"],
    ["set-metadata", "{tiny}", "general.name=x", "-o", "out.gguf"],
])
def test_full_disk_is_one_line_and_leaves_nothing(tiny, tmp_path, args):
    args = [a.format(tiny=tiny) for a in args]
    proc = run_cli(args, cwd=tmp_path, fsize=FSIZE)
    assert_one_line_error(proc, 1, r"out\.gguf: File too large .*nothing was written")
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.gguf").exists()


def test_full_disk_in_place_keeps_the_original(tiny, tmp_path):
    model = tmp_path / "m.gguf"
    shutil.copy(tiny, model)
    before = model.read_bytes()
    proc = run_cli(["set-metadata", str(model), "general.name=x"], cwd=tmp_path, fsize=FSIZE)
    assert_one_line_error(proc, 1, r"m\.gguf: File too large")
    assert model.read_bytes() == before and leftovers(tmp_path) == []


def test_full_disk_in_convert(tmp_path):
    from checkpoints import cached_checkpoint

    proc = run_cli(["convert", str(cached_checkpoint()), "-o", "out.gguf", "--type", "f16",
                    "--no-progress"], cwd=tmp_path, fsize=FSIZE)
    assert_one_line_error(proc, 1, r"out\.gguf: File too large")
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.gguf").exists()


def test_sigterm_handler_is_not_installed_over_an_ignored_signal(tmp_path):
    """A child started with SIGTERM ignored (nohup-style) keeps ignoring it."""
    code = ("import signal, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "from gguflite.cli.main import _catch_signals; _catch_signals();"
            "sys.exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN else 1)")
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ)).returncode == 0
