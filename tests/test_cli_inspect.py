"""``gguflite info / dump / validate``: output, JSON, exit codes, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_user_error
from click.testing import CliRunner
from gguf_bytes import build, f32s, gstr, kv, tensor_info

from gguflite.cli.main import cli
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.default_model import default_model_path

VECTORS_DIR = Path(__file__).resolve().parents[1] / "spec" / "vectors"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_info_default_model():
    code, out, _ = run("info", "--default")
    assert code == 0
    assert "architecture  llama" in out
    assert "134.5M (134515008)" in out  # parameters
    assert "49152 tokens (gpt2, pre smollm)" in out
    assert "Q4_1" in out and "Q8_0" in out and "context       8192" in out
    from gguflite.cli.info import _runtime_native_types

    native = _runtime_native_types()  # the runtime's hook: None until it exposes NATIVE_TYPES
    assert ("runtime       native:" in out) == (native is not None)


def test_info_json():
    code, out, _ = run("info", "--json", str(default_model_path()))
    assert code == 0
    s = json.loads(out)
    assert s["architecture"] == "llama" and s["block_count"] == 30
    assert s["parameters"] == 134515008 and s["vocab_size"] == 49152
    assert s["tensor_types"]["Q4_1"]["tensors"] == 210
    assert s["tensor_types"]["Q8_0"]["bits_per_weight"] == 8.5
    assert 5.0 < s["bits_per_weight"] < 6.0


def test_dump_abbreviates_unless_full():
    code, out, _ = run("dump", "--metadata", "--json", "--default")
    assert code == 0
    tokens = json.loads(out)["metadata"]["tokenizer.ggml.tokens"]
    assert tokens["length"] == 49152 and len(tokens["value"]) == 8 and tokens["truncated"]
    code, out, _ = run("dump", "--metadata", "--json", "--full", "--default")
    tokens = json.loads(out)["metadata"]["tokenizer.ggml.tokens"]
    assert len(tokens["value"]) == 49152 and "truncated" not in tokens
    code, out, _ = run("dump", "--default")
    assert "[STRING x 49152]" in out and "(49144 more)" in out


def test_dump_sections_and_hash():
    path = str(VECTORS_DIR / "tensors.gguf")
    code, out, _ = run("dump", "--tensors", "--json", "--hash", path)
    d = json.loads(out)
    assert code == 0 and "metadata" not in d and len(d["tensors"]) == 6
    expected = json.loads((VECTORS_DIR / "tensors.json").read_text())
    assert d["tensors"] == expected["tensors"]
    code, out, _ = run("dump", "--metadata", path)
    assert code == 0 and "\ntensors\n" not in out and "general.name" in out
    code, _, err = run("dump", "--metadata", "--tensors", path)
    assert code == 2


def test_validate_exit_codes(tmp_path):
    good = str(VECTORS_DIR / "tensors.gguf")
    bad = tmp_path / "hole.gguf"
    bad.write_bytes(build([kv("general.architecture", T.STRING, gstr("x"))],
                          [tensor_info("a", [4], GGMLType.F32, 32)], bytes(32) + f32s(1, 2, 3, 4)))
    code, out, _ = run("validate", good)
    assert code == 0 and "OK (0 errors, 0 warnings)" in out
    code, out, _ = run("validate", good, str(bad))
    assert code == 1
    assert "INVALID (1 error" in out and "V16" in out
    code, out, _ = run("validate", "--json", str(bad))
    [report] = json.loads(out)
    assert code == 1 and report["findings"][0]["rule"] == "V16" and report["ok"] is False
    code, _, _ = run("validate")
    assert code == 2  # usage: no FILE
    code, _, _ = run("validate", "--default", good)
    assert code == 2  # usage: both


def test_validate_default_and_deep():
    code, out, _ = run("validate", "--deep", "--default")
    assert code == 0 and "OK (0 errors, 0 warnings)" in out


def test_validate_warnings_keep_exit_0(tmp_path):
    path = tmp_path / "trailing.gguf"
    path.write_bytes((VECTORS_DIR / "tensors.gguf").read_bytes() + b"junk")
    code, out, _ = run("validate", str(path))
    assert code == 0 and "1 warning" in out and "V18" in out


# -- user errors: one clear line on stderr, a non-zero exit, never a traceback ---------------
def _bad_inputs(tmp_path: Path) -> dict[str, str]:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"this is not a model file at all" * 10)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((VECTORS_DIR / "tensors.gguf").read_bytes()[:200])
    return {"missing": str(tmp_path / "nope.gguf"), "directory": str(tmp_path),
            "garbage": str(garbage), "truncated": str(truncated)}


# what each bad input's one error line must say
WORDS = {"missing": ["nope.gguf", "no such file"], "directory": ["is a directory"],
         "garbage": ["[V1]", "not a GGUF file"], "truncated": ["[V3]"]}


@pytest.mark.parametrize("command", ["info", "dump"])
def test_user_errors_are_one_line(tmp_path, command):
    for label, path in _bad_inputs(tmp_path).items():
        assert_user_error(command, path, words=WORDS[label])


def test_validate_reports_unreadable_files_per_file(tmp_path):
    inputs = _bad_inputs(tmp_path)
    code, out, err = run("validate", *inputs.values())
    assert code == 1 and "Traceback" not in out + err
    assert out.count("INVALID") == 4
    assert "[V1]" not in out and "V1 " in out and "V3" in out and "IO" in out


def test_subprocess_errors_and_no_torch(tmp_path):
    """Through the real entry point: a garbage file is one line on stderr, exit 1; and
    ``import gguflite`` + ``gguflite info`` never import torch."""
    garbage = _bad_inputs(tmp_path)["garbage"]
    proc = subprocess.run([sys.executable, "-m", "gguflite.cli.main", "info", garbage],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: [V1]")
    probe = (
        "import sys, gguflite\n"
        "from gguflite.cli.main import cli\n"
        "assert 'torch' not in sys.modules, 'import gguflite imported torch'\n"
        "try:\n"
        "    cli(['info', '--default'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'gguflite info imported torch'\n"
        "print('no torch')\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "architecture  llama" in proc.stdout and "no torch" in proc.stdout
