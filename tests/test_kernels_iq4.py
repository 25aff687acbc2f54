"""The IQ4_NL / IQ4_XS row kernels (runtime/kernels/vector_iq4.py): dequantization bit-exact
with ggml's ``to_float`` (libggml through ctypes), mat-vecs against the float64 product with the
quantized activation (the tolerances of test_kernels_matvec.py), the portable lowering, and a
tiny model quantized to each type by the llama.cpp mixes, run natively end to end (fused decode
== per-op decode == the float64 oracle's logits, then generate)."""

from __future__ import annotations

import numpy as np
import pytest
from ggml_ref import ggml_dequantize
from portable_check import run_portable_check
from test_kernels_matvec import quantized_x, rel_err
from tiny_models import TinyConfig, make_tiny_llama

from gguflite.cli.info import summarize
from gguflite.constants import GGML_TYPE_TRAITS, IQ4NL_VALUES, GGMLType
from gguflite.quants import iq4, quantize
from gguflite.runtime.kernels import NATIVE_TYPES, Linear, get_rows, vector_iq4

TYPES = ["IQ4_NL", "IQ4_XS"]
# in_features: SmolLM2's 576 (IQ4_NL only: IQ4_XS needs 256 | in), an odd block count (608 =
# 19 blocks: the NL row kernel takes blocks in pairs, then the last), 1536 and 2048
SHAPES = {"IQ4_NL": [(37, 576), (37, 608), (21, 2048)], "IQ4_XS": [(83, 1536), (21, 2048)]}
CASES = [(t, o, i) for t in TYPES for (o, i) in SHAPES[t]]


def random_bytes(rng: np.random.Generator, name: str, out_f: int, in_f: int,
                 signed: bool = False) -> np.ndarray:
    """Random blocks (every index and 6-bit scale pattern) with finite f16 super-scales d;
    ``signed``: d of either sign, with zeros and subnormals among them. Read-only (out, bytes)."""
    bs, ts = GGML_TYPE_TRAITS[GGMLType[name]]
    blocks = rng.integers(0, 256, (out_f, in_f // bs, ts), dtype=np.uint8)
    d = rng.random((out_f, in_f // bs)) * 0.01 + 0.001
    if signed:
        d *= rng.choice([-1.0, 1.0], d.shape)
        d.flat[::7] = 0.0
        d.flat[3::11] = 3e-7  # an f16 subnormal
    blocks[:, :, 0:2] = d.astype(np.float16)[..., None].view(np.uint8)
    raw = blocks.reshape(out_f, -1)
    raw.setflags(write=False)
    return raw


def ggml_rows(raw: np.ndarray, name: str, in_f: int) -> np.ndarray:
    """(out, in) float32 from ggml's own dequantizer."""
    out_f = raw.shape[0]
    return ggml_dequantize(int(GGMLType[name]), raw.reshape(-1), out_f * in_f).reshape(out_f, in_f)


def test_iq4_types_are_native_and_share_the_codec_table():
    assert GGMLType.IQ4_NL in NATIVE_TYPES and GGMLType.IQ4_XS in NATIVE_TYPES
    np.testing.assert_array_equal(iq4.KVALUES, np.array(IQ4NL_VALUES, np.int8))


@pytest.mark.parametrize("name,out_f,in_f", CASES)
def test_dequantize_is_ggml_bit_for_bit(name, out_f, in_f):
    rng = np.random.default_rng(out_f + in_f + len(name))
    for raw in (random_bytes(rng, name, out_f, in_f, signed=True),
                quantize(rng.standard_normal((out_f, in_f)).astype(np.float32) *
                         rng.lognormal(0, 2, (out_f, 1)).astype(np.float32), GGMLType[name])):
        raw = raw.reshape(out_f, -1)
        want = ggml_rows(raw, name, in_f)
        lin = Linear(raw, GGMLType[name], (out_f, in_f), name=f"blk.0.{name}")
        np.testing.assert_array_equal(lin.dequantize().view(np.uint32), want.view(np.uint32))
        ids = np.array([out_f - 1, 0, out_f // 2, 0])
        rows = get_rows(raw, GGMLType[name], (out_f, in_f), ids, name="token_embd.weight")
        np.testing.assert_array_equal(rows.view(np.uint32), want[ids].view(np.uint32))


@pytest.mark.parametrize("name,out_f,in_f", CASES)
def test_matvec_matches_reference(name, out_f, in_f):
    rng = np.random.default_rng(out_f * 7 + in_f)
    raw = random_bytes(rng, name, out_f, in_f)
    lin = Linear(raw, GGMLType[name], (out_f, in_f), name=f"blk.0.{name}")
    ref_w = ggml_rows(raw, name, in_f).astype(np.float64)
    x = rng.standard_normal(in_f).astype(np.float32)
    y = lin.matvec(x)
    assert rel_err(y, ref_w @ quantized_x(x)) <= 2e-6  # float32 accumulation only
    assert rel_err(y, ref_w @ x.astype(np.float64)) <= 3e-2  # the int8 activation's error
    # a group of weights in one region: the same numbers up to
    # float32 summation order (drivers compiled separately, with fastmath)
    y2, y3 = Linear.matvec_many([lin, lin], x)
    assert rel_err(y2, y) <= 1e-6 and rel_err(y3, y) <= 1e-6
    X = rng.standard_normal((3, in_f)).astype(np.float32)
    Y = lin.matmul(X)  # the int8 matrix product: IQ4_XS activations per 256 (as llama.cpp)
    block = 256 if name == "IQ4_XS" else 32
    for t in range(3):
        assert rel_err(Y[t], ref_w @ quantized_x(X[t], block)) <= 2e-5


@pytest.mark.parametrize("name", TYPES)
def test_row_range_kernel_equals_single_row_kernel(name):
    """rows_<type> computes dot_<type> on rows lo..hi-1 and leaves the other outputs alone."""
    dot = getattr(vector_iq4, "dot_" + name.lower())
    rows = getattr(vector_iq4, "rows_" + name.lower())
    in_f = 512
    rng = np.random.default_rng(len(name))
    raw = random_bytes(rng, name, 6, in_f)
    flat, rb, nb = raw.reshape(-1), raw.shape[1], in_f // 32
    from gguflite.runtime.kernels.activations import quantize_act_ref

    xq, xd, xsd = quantize_act_ref(rng.standard_normal(in_f).astype(np.float32))
    y = np.full(6, np.nan, np.float32)
    rows(flat, rb, nb, 1, 5, y, xq, xd, xsd)
    single = np.array([dot(flat, r * rb, nb, xq, xd, xsd) for r in range(1, 5)], np.float32)
    assert np.isnan(y[0]) and np.isnan(y[5])
    assert rel_err(y[1:5], single) <= 1e-6


_PORTABLE_CHECK = """
import os
import numpy as np
from gguflite.runtime.kernels import PORTABLE, Linear
from gguflite.runtime.kernels.vector_ir import VNNI
from gguflite.constants import GGMLType
from test_kernels_iq4 import ggml_rows, random_bytes
from test_kernels_matvec import quantized_x
assert PORTABLE == (os.environ.get("GGUFLITE_PORTABLE_SIMD") == "1") and not VNNI
rng = np.random.default_rng(7)
for name in ("IQ4_NL", "IQ4_XS"):
    raw = random_bytes(rng, name, 9, 512, signed=True)
    lin = Linear(raw, GGMLType[name], (9, 512))
    want = ggml_rows(raw, name, 512)
    assert (lin.dequantize().view(np.uint32) == want.view(np.uint32)).all(), name
    x = rng.standard_normal(512).astype(np.float32)
    ref = want.astype(np.float64) @ quantized_x(x)
    err = np.abs(lin.matvec(x) - ref).max() / np.abs(ref).max()
    assert err <= 2e-6, (name, err)
print("portable ok")
"""


def test_portable_lowering_gives_the_same_numbers(tmp_path):
    """The select-tree table lookup (non-AVX2 hosts) gives the same bytes as pshufb."""
    run_portable_check(_PORTABLE_CHECK, tmp_path)


def test_avx2_lowering_without_vnni_gives_the_same_numbers(tmp_path):
    """The AVX2 dot products without vpdpbusd (hosts without AVX512-VNNI)."""
    from gguflite.runtime.kernels import PORTABLE

    if PORTABLE:
        pytest.skip("this host has no AVX2: only the portable lowering runs here")
    run_portable_check(_PORTABLE_CHECK, tmp_path, lowering={"GGUFLITE_NO_VNNI": "1"})


@pytest.mark.parametrize("mix,want", [("iq4_nl", {"IQ4_NL"}), ("iq4_xs", {"IQ4_XS"})])
def test_tiny_model_runs_natively_end_to_end(mix, want, tmp_path):
    from gguflite.converters.requantize import requantize
    from gguflite.runtime import load
    from gguflite.runtime.reference import reference_logits

    cfg = TinyConfig(dim=256, hidden_dim=512, n_head=4, n_kv_head=2)  # rows fit IQ4_XS
    src, _, _ = make_tiny_llama(tmp_path / "f32.gguf", cfg, seed=3)
    requantize(src, tmp_path / "q.gguf", type=mix)
    m = load(tmp_path / "q.gguf", n_ctx=64)
    try:
        be = m.backend
        lins = [getattr(b, a) for b in be.w.blocks for a in ("wq", "wk", "wv", "wo", "w_gate",
                                                              "w_up", "w_down")]
        got = {lin.type.name for lin in lins}
        assert want <= got and got <= {"IQ4_NL", "IQ4_XS", "Q5_K", "Q6_K", "Q8_0"}, got
        assert be.fused and set(want) <= {GGMLType(k).name for k in be.plan.kset.ids
                                          if k < 1000}  # (the KM kinds have no GGMLType)
        ids = [5, 17, 42, 7, 99, 3, 64, 12]
        fused = np.stack([be.forward([t], i) for i, t in enumerate(ids)])
        be.enable_timers()  # the per-op path
        per_op = np.stack([be.forward([t], i) for i, t in enumerate(ids)])
        be.enable_timers(False)
        assert np.abs(fused - per_op).max() <= 1e-4
        # the float64 oracle on the same (exactly dequantized) weights: the int8 activations'
        # error only
        oracle = reference_logits(m.file, ids)
        assert np.abs(fused - oracle).max() <= 2e-2 * np.abs(oracle).max()
        # prefill: the IQ4 weights and the Q6_K output through the int8 matrix product
        # (gemm.py, packed by their dequantizers): the int8 activations' error again
        prefill = m.logits(ids)
        assert np.abs(prefill - oracle).max() <= 2e-2 * np.abs(oracle).max()
        text = m.generate("the sea", max_tokens=6, temperature=0, stream=False)
        assert isinstance(text, str)
        assert want <= set(summarize(m.file)["runtime_native_types"])  # gguflite info
    finally:
        m.file.close()
