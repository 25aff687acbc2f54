"""The spec and its mirrors agree: the tensor type table of spec/gguflite-v1.md equals
gguflite/constants.py, the rule table equals the validator's RULES, every golden vector is
declared, dumped, small, valid and seeds the fuzzer. (Golden bytes and dumps themselves:
tests/test_writer_core.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gguflite.constants import GGML_TYPE_TRAITS, GGMLType, GGUFValueType
from gguflite.validate import RULES, validate

ROOT = Path(__file__).resolve().parents[1]
SPEC = (ROOT / "spec" / "gguflite-v1.md").read_text(encoding="utf-8")
VECTORS_DIR = ROOT / "spec" / "vectors"


def _section(title_start: str) -> str:
    start = SPEC.index(title_start)
    end = SPEC.find("\n## ", start + 1)
    return SPEC[start:end if end > 0 else None]


def test_tensor_type_table_mirrors_constants():
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (\d+) \| (\d+) \| `([^`]+)` \|",
                      _section("## 6."), re.M)
    table = {int(i): (name, int(block), int(size), expr) for i, name, block, size, expr in rows}
    assert set(table) == {int(t) for t in GGMLType}
    for t in GGMLType:
        name, block, size, expr = table[int(t)]
        assert name == t.name
        assert (block, size) == tuple(GGML_TYPE_TRAITS[t]), t.name
        assert eval(expr, {"QK_K": 256}) == size, (t.name, expr)  # noqa: S307 (spec text)


def test_value_types_mirror_constants():
    enum = re.search(r"enum gguf_value_type : uint32_t \{[^}]*\}", SPEC).group(0)
    pairs = dict(re.findall(r"(\w+) = (\d+)", enum))
    assert {k: int(v) for k, v in pairs.items()} == {t.name: int(t) for t in GGUFValueType}


def test_rule_table_mirrors_validator():
    rules = re.findall(r"^\| (V\d+) \|", _section("## 7."), re.M)
    assert rules == list(RULES)


VECTORS = sorted(p.stem for p in VECTORS_DIR.glob("*.gguf"))


def test_every_vector_is_declared_and_dumped():
    from test_writer_core import make_vectors

    assert VECTORS == sorted(make_vectors.VECTORS)
    assert sorted(p.stem for p in VECTORS_DIR.glob("*.json")) == VECTORS
    for name in VECTORS:
        assert f"`{name}`" in _section("## 13."), f"{name} is not described in the spec"


@pytest.mark.parametrize("name", VECTORS)
def test_vector_is_small_valid_and_a_fuzz_seed(name):
    data = (VECTORS_DIR / f"{name}.gguf").read_bytes()
    assert len(data) <= 2048
    report = validate(VECTORS_DIR / f"{name}.gguf", deep=True)
    assert report.errors == []
    assert report.rules <= ({"V25"} if name == "empty" else set())
    assert (ROOT / "fuzz" / "corpus" / f"{name}.gguf").read_bytes() == data
