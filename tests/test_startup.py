"""Start-up: what Numba compiles, and when.

A warm start compiles nothing (checked with Numba's event API in a fresh process), an
unwritable cache directory does not crash, and two first runs sharing one empty cache both
succeed and leave a cache the next run loads without compiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguflite.runtime import load
from tiny_models import make_tiny_llama

from gguflite.runtime.kernels import dispatch

# Run in a fresh process: load the model, then generate; print what compiled in each phase.
COUNT_COMPILES = """
import json, os, sys
from numba.core import event

def outermost(buf):
    depth = n = 0
    for _, ev in buf:
        depth += 1 if ev.is_start else -1
        n += ev.is_start and depth == 1
    return n

def names(buf):
    depth, out = 0, []
    for _, ev in buf:
        depth += 1 if ev.is_start else -1
        if ev.is_start and depth == 1:
            out.append(ev.data["dispatcher"].py_func.__qualname__)
    return out

from gguflite.runtime import load
from gguflite.runtime.precompile import warm_up
with event.install_recorder("numba:compile") as rec:
    model = load(sys.argv[1], threads=1)
    if sys.argv[3:] == ["remove_file"]:  # the helper process cannot open it: it fails
        os.unlink(sys.argv[1])
    warmed = warm_up(model) if "warm_up" in sys.argv[2:] else 0.0  # as gguflite run does
loading = outermost(rec.buffer)
loaded = names(rec.buffer)
with event.install_recorder("numba:compile") as rec:
    text = model.generate("the sea", max_tokens=6, temperature=0, stream=False)
    text += model.generate("the sea is blue and the sky", max_tokens=3, temperature=0,
                           stream=False)  # a longer prompt: the BLAS prefill path too
print(json.dumps({"load": loading, "generate": outermost(rec.buffer), "text": text,
                  "compiled_at_load": loaded, "warm_up_seconds": warmed}))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("startup") / "tiny.gguf", seed=3)
    return path


def _count_compiles(model_path: Path, *args: str, **env: str) -> dict:
    r = subprocess.run([sys.executable, "-c", COUNT_COMPILES, str(model_path), *args],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _greedy(model_path: Path) -> str:
    with load(model_path, threads=1) as m:  # also fills this process's cache directory
        return (m.generate("the sea", max_tokens=6, temperature=0, stream=False)
                + m.generate("the sea is blue and the sky", max_tokens=3, temperature=0,
                             stream=False))


def test_loading_a_cached_model_compiles_nothing(tiny):
    expected = _greedy(tiny)
    counts = _count_compiles(tiny)
    assert counts["text"] == expected
    assert counts["load"] == 0


def test_generating_with_a_warm_cache_compiles_nothing(tiny):
    expected = _greedy(tiny)
    counts = _count_compiles(tiny)
    assert counts["text"] == expected
    assert counts["generate"] == 0, counts


def test_an_unwritable_cache_dir_does_not_crash(tiny, tmp_path):
    expected = _greedy(tiny)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere: a directory that cannot exist
        (tmp_path / "a-file").write_text("")
        locked = tmp_path / "a-file" / "cache"
    counts = _count_compiles(tiny, "warm_up", NUMBA_CACHE_DIR=str(locked))  # as the cli
    assert counts["text"] == expected


def test_a_helper_that_fails_leaves_the_compilation_to_this_process(tiny, tmp_path):
    """warm_up's helper dies (here: the file was removed after this process mapped it), so
    this process compiles everything itself, and generates the same text."""
    expected = _greedy(tiny)
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny.read_bytes())
    counts = _count_compiles(copy, "warm_up", "remove_file",
                             NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert not copy.exists()
    assert counts["text"] == expected and counts["warm_up_seconds"] > 0, counts
    assert "decode_step" in counts["compiled_at_load"], counts  # the helper's share, here


def test_a_cold_cache_is_compiled_at_load_by_two_processes(tiny, tmp_path):
    """precompile.warm_up: the helper process compiles the fused decode step into the cache,
    this process loads it from there; generation then compiles nothing; a second run finds
    the cache warm and does nothing."""
    expected = _greedy(tiny)
    cache = str(tmp_path / "cache")
    cold = _count_compiles(tiny, "warm_up", NUMBA_CACHE_DIR=cache)
    assert cold["text"] == expected
    assert cold["warm_up_seconds"] > 0 and cold["generate"] == 0, cold
    assert "decode_step" not in cold["compiled_at_load"], cold  # the helper's share
    assert "matvec_one" in cold["compiled_at_load"], cold  # this process's share
    warm = _count_compiles(tiny, "warm_up", NUMBA_CACHE_DIR=cache)
    assert warm["text"] == expected
    assert warm["warm_up_seconds"] == 0.0 and warm["load"] == warm["generate"] == 0, warm


def test_a_cold_cache_of_a_quantized_model_splits_off_the_matrix_product(tmp_path):
    """Plan "gemm" of precompile.warm_up (weights of an int8-GEMM type): the helper compiles
    the prefill's matrix product, this process everything else (the decode step included);
    generation then compiles nothing and gives the text of a run without the helper."""
    from gguflite.constants import GGMLType

    path, _, _ = make_tiny_llama(tmp_path / "q8.gguf", seed=3, wtype=GGMLType.Q8_0)
    expected = _greedy(path)
    cold = _count_compiles(path, "warm_up", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert cold["text"] == expected
    assert cold["warm_up_seconds"] > 0 and cold["generate"] == 0, cold
    assert "gemm_32" not in cold["compiled_at_load"], cold  # the helper's share
    assert "decode_step" in cold["compiled_at_load"], cold  # this process's share


@pytest.mark.slow
@pytest.mark.parametrize("how", ["lazily", "warm_up"])
def test_two_first_runs_share_one_empty_cache(tiny, tmp_path, how):
    """Both compile everything at once into the same directory (lazily, as ``load`` and
    ``generate`` do, or each with its helper process, as ``gguflite run`` does); both succeed,
    and the cache they leave behind is whole: a third run loads it without compiling."""
    expected = _greedy(tiny)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", COUNT_COMPILES, str(tiny), how], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=1800)
        assert p.returncode == 0, err[-3000:]
        first = json.loads(out.strip().splitlines()[-1])
        assert first["text"] == expected and first["load"] + first["generate"] > 0
    third = _count_compiles(tiny, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert third["text"] == expected and third["generate"] == 0


def test_a_linear_compiles_only_its_own_kernels(monkeypatch):
    """Kinds: the row kernels of other types are pruned before typing, so a driver compiled
    for one kind set never touches the others' kernels; a kind outside the set is an error."""
    monkeypatch.delenv("GGUFLITE_KERNEL_KINDS", raising=False)  # scripts/test.sh sets it
    import numpy as np
    from gguflite.constants import GGMLType

    from gguflite.runtime.kernels import Linear

    lin = Linear(np.ones((4, 64), np.float32), GGMLType.F32, (4, 64))
    x = np.ones(64, np.float32)
    np.testing.assert_array_equal(lin.matvec(x), np.full(4, 64.0, np.float32))
    f32_only = dispatch.kinds_of(int(GGMLType.F32))
    assert f32_only._numba_type_ in {sig[-1] for sig in dispatch.matvec_one.signatures}
    y = np.empty(4, np.float32)
    with pytest.raises(ValueError, match="kind outside the driver.s Kinds set"):
        dispatch.matvec_one(int(GGMLType.F16), lin._w, y, lin.row_bytes, x, lin._scratch,
                            f32_only)
    with pytest.raises(ValueError, match="no row kernel"):
        dispatch.kinds_of(77)


def test_no_writable_cache_place_means_a_temporary_one(tmp_path):
    """Numba raises at import when it can cache nowhere; gguflite then gives it a private
    temporary directory (and leaves it alone when any usual place is writable)."""
    from numba.core import config

    from gguflite._numba_cache import ensure_writable_cache

    (tmp_path / "a-file").write_text("")
    nowhere = [tmp_path / "a-file" / "cache", tmp_path / "a-file" / "pycache"]  # cannot exist
    before = config.CACHE_DIR
    try:
        assert ensure_writable_cache([nowhere[0], tmp_path / "ok"]) is None
        assert config.CACHE_DIR == before
        tmp = ensure_writable_cache(nowhere)
        assert tmp is not None and config.CACHE_DIR == str(tmp) and tmp.is_dir()
    finally:
        config.CACHE_DIR = before


@pytest.mark.parametrize("override", ["GGUFLITE_GEMM_PATH=portable", "GGUFLITE_NO_VNNI=1",
                                      "GGUFLITE_PORTABLE_SIMD=1"])
def test_a_lowering_override_compiles_into_its_own_cache(tmp_path, override):
    """Code compiled under a lowering override must never be loaded by a run without it (Numba
    keys its cache on the file and the CPU only): such a run caches in a directory of its own,
    and a child process handed that directory keeps it."""
    key, value = override.split("=")
    probe = "import gguflite; from numba.core import config; print(config.CACHE_DIR)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GGUFLITE_")}
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    plain = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert plain == str(tmp_path)
    env[key] = value
    own = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert own == str(tmp_path / f"lowering-{key.removeprefix('GGUFLITE_').lower()}-{value}")
    env["NUMBA_CACHE_DIR"] = own
    child = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert child == own


# RoPE on fixed inputs as a prefill calls it, or (argv[1] == "decode") a decode step of the
# default model, which compiles RoPE inside the fused step.
ROPE_AFTER = """
import sys
import numpy as np
from gguflite.runtime import load, ops
if sys.argv[1] == "decode":
    with load(None, threads=1) as m:
        m.backend.forward(np.array([1]), 0)
    sys.exit()
rng = np.random.default_rng(0)
q = rng.standard_normal((32, 9, 64)).astype(np.float32)
k = rng.standard_normal((32, 3, 64)).astype(np.float32)
v = rng.standard_normal((32, 3, 64)).astype(np.float32)
ang = np.outer(np.arange(512), 1.0 / 10000 ** (np.arange(32) / 32)).astype(np.float32)
cache = [np.zeros((3, 512, 64), np.uint16) for _ in range(2)]
ops.rope_and_store(q, k, v, np.cos(ang), np.sin(ang), True, True, *cache, 0)
sys.stdout.write(q.tobytes().hex() + k.tobytes().hex())
"""


def test_rope_gives_the_same_bits_whichever_caller_compiled_it(tmp_path):
    """A run that compiled its kernels and one that loaded them rotate q and k alike: RoPE
    loaded from a cache that a decode step filled, and RoPE compiled on its own, give the same
    bits (ops.EXACT_FASTMATH; with contraction allowed they differed in the last bit)."""

    def run(mode: str, cache: Path) -> str:
        r = subprocess.run([sys.executable, "-c", ROPE_AFTER, mode],
                           env={**os.environ, "NUMBA_CACHE_DIR": str(cache)},
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    run("decode", tmp_path / "a")
    assert run("rope", tmp_path / "a") == run("rope", tmp_path / "b")


# The console script: run as a user does, with an atexit handler of its own that must still run.
CONSOLE = """
import atexit, sys
from pathlib import Path
atexit.register(lambda: Path(sys.argv[1]).write_text("atexit ran"))
from gguflite.cli.main import cli
cli(sys.argv[2:])
"""


def test_run_ends_without_teardown_but_with_atexit_and_all_output(tiny, tmp_path):
    """``gguflite run`` skips the interpreter's teardown (cli.main.skip_teardown): its output
    is complete, its exit code kept, the atexit handlers ran; a failing run exits 1 as before."""
    marker = tmp_path / "marker"
    args = ["run", str(tiny), "--raw", "-p", "the sea", "-n", "6", "--temp", "0", "-t", "1"]
    r = subprocess.run([sys.executable, "-c", CONSOLE, str(marker), *args], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    with load(tiny, threads=1) as m:
        text = m.generate("the sea", max_tokens=6, temperature=0, stream=False)
    assert r.stdout == text + "\n"
    assert "[prompt " in r.stderr  # the stats line, after the text
    assert marker.read_text() == "atexit ran"
    marker.unlink()
    bad = subprocess.run([sys.executable, "-c", CONSOLE, str(marker), "run", str(tiny), "--raw",
                          "-p", "the sea", "-n", "999999", "-t", "1"], capture_output=True,
                         text=True, timeout=900)
    assert bad.returncode == 1 and bad.stderr.startswith("error: "), bad.stderr[-3000:]
    assert marker.read_text() == "atexit ran"


@pytest.mark.parametrize("package,probe", [
    ("scipy.linalg", "numba.np.arraymath._HAVE_BLAS"),
    ("cffi", "numba.core.typing.cffi_utils.SUPPORTED")])
def test_the_cli_starts_numba_without_importing_what_it_never_uses(package, probe):
    """precompile.start_numba_target: Numba's probes for scipy.linalg's BLAS (0.1-0.3 s) and
    cffi (0.1 s) import neither, and both still import afterwards. (The console test above
    runs the kernels of a whole generation in such a process and gets the same text.)"""
    pytest.importorskip(package, reason=f"{package} is not installed: Numba has no probe of it "
                        "to answer")
    module, name = probe.rsplit(".", 1)
    code = ("import sys\n"
            "from gguflite.runtime.precompile import start_numba_target\n"
            "start_numba_target()\n"
            f"import {module} as probed\n"
            f"print(probed.{name}, {package!r} in sys.modules)\n"
            f"import {package} as again\n"
            "print(again.__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["False", "False", package]
