"""Importance matrices from the runtime (runtime/imatrix.py): statistics, file, use in Q4_K/KM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error
from ggml_ref import ggml_quantize
from tiny_models import TinyConfig, make_tiny_llama

import gguflite
from gguflite import quants
from gguflite.constants import GGMLType
from gguflite.converters.imatrix import load_imatrix
from gguflite.errors import ModelError
from gguflite.models.rope import rope_tables
from gguflite.quants import km
from gguflite.runtime import load
from gguflite.runtime.imatrix import ImatrixCollector, collect_imatrix
from gguflite.runtime.reference import rope_reference

CFG = TinyConfig(dim=64, hidden_dim=256, n_layer=2, n_head=4, n_kv_head=2)
CTX = 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _, _ = make_tiny_llama(tmp_path_factory.mktemp("imatrix") / "tiny.gguf", CFG, seed=3)
    return path


def _ids(n: int) -> np.ndarray:
    return np.random.default_rng(7).integers(3, CFG.vocab_size, n).astype(np.int64)


def numpy_inputs(f: gguflite.GGUFFile, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs (n, cols) float64 of every block weight, by a plain NumPy forward pass."""
    from gguflite.models import hparams_from_metadata

    hp = hparams_from_metadata(f.metadata)

    def w(name: str) -> np.ndarray:
        return f.dequantize(name).astype(np.float64)

    def rmsnorm(v: np.ndarray, g: np.ndarray) -> np.ndarray:
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + hp.norm_eps) * g

    n = ids.size
    x = w("token_embd.weight")[ids]  # (n, dim)
    causal = np.triu(np.full((n, n), -np.inf), k=1)  # (n, n)
    out = {}
    for layer in range(hp.n_layer):
        b = f"blk.{layer}."
        h = rmsnorm(x, w(b + "attn_norm.weight"))  # (n, dim)
        out[b + "attn_q.weight"] = out[b + "attn_k.weight"] = out[b + "attn_v.weight"] = h
        q = (h @ w(b + "attn_q.weight").T).reshape(n, hp.n_head, hp.head_dim)
        k = (h @ w(b + "attn_k.weight").T).reshape(n, hp.n_kv_head, hp.head_dim)
        v = (h @ w(b + "attn_v.weight").T).reshape(n, hp.n_kv_head, hp.head_dim)
        cos, sin = (t[0, :n].astype(np.float64) for t in rope_tables(hp, n))
        q = rope_reference(q, cos, sin, hp.rope_neox)
        k = np.repeat(rope_reference(k, cos, sin, hp.rope_neox), hp.n_rep, axis=1)
        v = np.repeat(v, hp.n_rep, axis=1)
        s = np.einsum("qhd,khd->hqk", q, k) * hp.kq_scale + causal  # (heads, n, n)
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        a = np.einsum("hqk,khd->qhd", p, v).reshape(n, hp.q_dim)  # (n, q_dim)
        out[b + "attn_output.weight"] = a
        x = x + a @ w(b + "attn_output.weight").T
        h = rmsnorm(x, w(b + "ffn_norm.weight"))
        out[b + "ffn_gate.weight"] = out[b + "ffn_up.weight"] = h
        gate, up = h @ w(b + "ffn_gate.weight").T, h @ w(b + "ffn_up.weight").T  # (n, hidden)
        hb = gate / (1 + np.exp(-gate)) * up
        out[b + "ffn_down.weight"] = hb
        x = x + hb @ w(b + "ffn_down.weight").T
    return out


def test_statistics_equal_numpy(tiny: Path) -> None:
    ids = _ids(2 * CTX + 5)  # 2 chunks; the 5 extra tokens are not used (as llama.cpp)
    with load(tiny, n_ctx=CTX, threads=1, kv_type="f32") as m:
        stats = collect_imatrix(m, ids, ctx=CTX)
        with gguflite.open(tiny) as f:
            chunks = [ids[i * CTX:(i + 1) * CTX].copy() for i in range(2)]
            for c in chunks:
                c[0] = m.tokenizer.bos_id  # the perplexity chunking: BOS first
            want = {}
            for c in chunks:
                for name, x in numpy_inputs(f, c).items():
                    want[name] = want.get(name, 0) + (x * x).sum(axis=0)
    got = stats.tensor_stats()
    assert set(got) == set(want) and len(got) == 7 * CFG.n_layer
    assert stats.chunk_count == 2 and stats.chunk_size == CTX
    for name, (s, count) in got.items():
        assert count == 2 * CTX, name
        np.testing.assert_allclose(s, want[name], rtol=2e-4, err_msg=name)
    imp = stats.importance()
    np.testing.assert_allclose(imp["blk.1.ffn_down.weight"],
                               want["blk.1.ffn_down.weight"] / (2 * CTX), rtol=2e-4)


def test_decode_steps_observed_like_prefill(tiny: Path) -> None:
    """Single-token steps (matvec / matvec_many) add the same rows as one prefill."""
    ids = _ids(CTX)
    with load(tiny, n_ctx=CTX, threads=1) as m:
        with ImatrixCollector(m.backend) as prefill:
            m.backend.forward(ids, 0)
        plan = m.backend.plan
        with ImatrixCollector(m.backend) as steps:
            for i, t in enumerate(ids):
                m.backend.forward(np.array([t]), i)
        assert m.backend.plan is plan  # the fused decode step is restored
        assert not hasattr(m.backend.w.blocks[0].wq, "stats")  # the linears are restored
    a, b = prefill.tensor_stats(), steps.tensor_stats()
    for name in a:
        assert a[name][1] == b[name][1] == CTX
        np.testing.assert_allclose(b[name][0], a[name][0], rtol=1e-4, err_msg=name)


def test_file_round_trip(tiny: Path, tmp_path: Path) -> None:
    with load(tiny, n_ctx=CTX, threads=1) as m:
        stats = collect_imatrix(m, _ids(2 * CTX), ctx=CTX, dataset="random ids")
    path = stats.save(tmp_path / "imatrix.gguf")
    back = load_imatrix(path)
    imp = stats.importance()
    assert set(back) == set(imp)
    for name in imp:
        np.testing.assert_allclose(back[name], imp[name], rtol=1e-6)
    with gguflite.open(path) as f:  # llama.cpp's layout: in_sum2 (1, cols) and counts (1, 1)
        assert f.metadata["general.type"] == "imatrix"
        assert list(f.metadata["imatrix.datasets"]) == ["random ids"]
        assert f.metadata["imatrix.chunk_count"] == 2
        ti = f.tensors["blk.0.ffn_down.weight.in_sum2"]
        assert ti.type == GGMLType.F32 and tuple(ti.shape) == (1, CFG.hidden_dim)
        assert float(f.array("blk.0.ffn_down.weight.counts")[0, 0]) == 2 * CTX


def test_q4_k_with_real_statistics_equals_ggml(tiny: Path) -> None:
    with load(tiny, n_ctx=CTX, threads=1) as m:
        imp = collect_imatrix(m, _ids(2 * CTX), ctx=CTX).importance()
    with gguflite.open(tiny) as f:
        for layer in range(CFG.n_layer):
            name = f"blk.{layer}.ffn_down.weight"  # 256 columns: one Q4_K super-block per row
            w = f.dequantize(name)  # (dim, hidden) f32
            ours = quants.quantize(w, "q4_k", importance=imp[name], name=name)
            ref = ggml_quantize(int(GGMLType.Q4_K), w, imp[name])
            np.testing.assert_array_equal(np.asarray(ours).reshape(ref.shape), ref)
            plain = ggml_quantize(int(GGMLType.Q4_K), w, None)
            assert not np.array_equal(plain, ref)  # the statistics change the encoding


def test_km_weighting_lowers_weighted_error(tiny: Path) -> None:
    with load(tiny, n_ctx=CTX, threads=1) as m:
        imp = collect_imatrix(m, _ids(2 * CTX), ctx=CTX).importance()
    name = "blk.0.ffn_gate.weight"
    with gguflite.open(tiny) as f:
        w = f.dequantize(name)  # (hidden, dim)
    err = {}
    for weighted in (False, True):
        kmt = km.quantize(w, 3, importance=imp[name] if weighted else None)
        err[weighted] = float((((kmt.dequantize() - w) ** 2) * imp[name]).sum())
    assert err[True] < err[False]


def test_collector_needs_numba_backend() -> None:
    with pytest.raises(ModelError, match="Numba backend"):
        ImatrixCollector(object())


def test_cli_imatrix_then_quantize(tiny: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gguflite.cli.main import cli

    text = tmp_path / "cal.txt"
    text.write_text("the sea is blue and the sky is warm; " * 8, encoding="utf-8")
    out = tmp_path / "tiny.imatrix.gguf"
    r = CliRunner().invoke(cli, ["imatrix", str(tiny), "--text", str(text), "-o", str(out),
                                 "--ctx", str(CTX), "--threads", "1"])
    assert r.exit_code == 0, r.output
    imp = load_imatrix(out)
    assert len(imp) == 7 * CFG.n_layer and imp["blk.0.ffn_down.weight"].shape == (256,)
    q = tmp_path / "tiny.q4_k.gguf"
    r = CliRunner().invoke(cli, ["quantize", str(tiny), str(q), "--type", "q4_k", "--imatrix",
                                 str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    with gguflite.open(q) as f, gguflite.open(tiny) as src:
        w = src.dequantize("blk.0.ffn_down.weight")
        want = ggml_quantize(int(GGMLType.Q4_K), w, imp["blk.0.ffn_down.weight"])
        np.testing.assert_array_equal(f.array("blk.0.ffn_down.weight").reshape(want.shape),
                                      want)
    short = tmp_path / "short.txt"
    short.write_text("the sea", encoding="utf-8")
    assert_user_error("imatrix", tiny, "--text", short, "-o", tmp_path / "x.gguf", "--ctx", CTX,
                      words=["needs at least"])
