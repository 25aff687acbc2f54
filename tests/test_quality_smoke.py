"""The quality benchmark (benchmarks/quality.py) end to end on a tiny model with two types."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
from tiny_models import TinyConfig, make_tiny_llama

ROOT = Path(__file__).resolve().parents[1]


def _quality_module():
    spec = importlib.util.spec_from_file_location("quality_bench",
                                                  ROOT / "benchmarks" / "quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_quality_pipeline_tiny(tmp_path: Path) -> None:
    q = _quality_module()
    src, _, _ = make_tiny_llama(tmp_path / "tiny.gguf", TinyConfig(dim=64, hidden_dim=256))
    out = tmp_path / "out"
    rc = q.main(["--model", str(src), "--workdir", str(tmp_path / "work"), "--out-dir",
                 str(out), "--types", "f16,q8_0,km4+imat", "--ctx", "32", "--chunks", "2",
                 "--cal-chunks", "2", "--decode", "2", "--no-llama-cpp", "--no-png",
                 "--threads", "1"])
    assert rc == 0
    result = json.loads((out / "quality.json").read_text())
    rows = {r["label"]: r for r in result["rows"]}
    assert set(rows) == {"f16", "q8_0", "km4+imat"}
    assert result["scored_tokens"] == 2 * (32 - 1 - 16)
    # The reference compared with itself: zero divergence (float32 log-probs), full agreement.
    assert abs(rows["f16"]["kld"]) < 1e-6 and rows["f16"]["top1"] == 1.0
    # Q8_0 is close to F16; KM4 (4 bits) further away; both finite perplexities.
    assert 0 < rows["q8_0"]["kld"] < rows["km4+imat"]["kld"]
    assert all(math.isfinite(r["ppl"]) and r["decode_tps"] > 0 for r in rows.values())
    # Bits per weight from the files: F16 16 bits for matrices (norms F32 add a little).
    assert 16.0 <= rows["f16"]["bpw"] < 16.5
    assert rows["km4+imat"]["types"].startswith("KM4")
    assert np.isclose(rows["q8_0"]["bpw_blocks"], 8.5)
    assert (work := tmp_path / "work" / "imatrix.gguf").exists() and work.stat().st_size > 0
    md = (out / "quality.md").read_text()
    assert "| km4+imat | gguflite | gguflite |" in md
    assert not (out / "quality.png").exists()
