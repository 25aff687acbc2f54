"""Numerics of the runtime kernels against the dequantized float64 reference (gguf-py).

Weights are random bytes (every bit pattern of the quants, with finite positive f16 scales), so
every code path of each unpacker is exercised. Tolerances:

- matvec / int8 matmul vs the exact product with the *quantized* activation (dx * xq, see
  activations.py), in float64: relative error (max |err| / max |ref|) <= 2e-6 — only float32
  accumulation error remains;
- the same vs the exact product with the float32 activation: <= 3e-2 (int8 activations carry up
  to dx / 2 = max|x| / 254 error per element, as llama.cpp's do);
- float weights (F32 / F16 / BF16) use float32 activations: <= 2e-6;
- matmul with BLAS (n_tok >= BLAS_MIN_TOKENS) dequantizes exactly: <= 2e-6;
- get_rows and Linear.dequantize are bit-exact (compared as uint32 bit patterns).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguflite.runtime.kernels import BLAS_MIN_TOKENS, NATIVE_TYPES, Linear, get_rows
from gguflite.runtime.kernels.activations import quantize_act, quantize_act_ref
from gguflite.runtime.kernels.ternary import quantize_act_k_ref
from gguflite.runtime.kernels.gemm import GEMM_TYPES

from gguflite.constants import GGML_TYPE_TRAITS, GGMLType

# Byte offsets of the f16 scale fields inside one block, per type.
F16_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "TQ1_0": [52], "TQ2_0": [64], "IQ4_NL": [0], "IQ4_XS": [0],
}
QUANT_TYPES = list(F16_FIELDS)
FLOAT_TYPES = ["F32", "F16", "BF16"]
# in_features per type: SmolLM2's 576 and 1536 and a 2048; super-block types need 256 | in.
# 608 = 19 blocks: an odd block count (the row kernels take blocks in pairs, then the last).
SHAPES = {t: [(37, 576), (83, 1536), (37, 608)] for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1",
                                                         "Q8_0", "IQ4_NL"]}
SHAPES.update({t: [(83, 1536), (21, 2048)] for t in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
                                                      "TQ1_0", "TQ2_0", "IQ4_XS"]})
SHAPES.update({t: [(37, 576), (19, 2048), (5, 45)] for t in FLOAT_TYPES})
CASES = [(t, o, i) for t in QUANT_TYPES + FLOAT_TYPES for (o, i) in SHAPES[t]]


def rand_weight(rng: np.random.Generator, name: str, out_f: int, in_f: int) -> np.ndarray:
    """A read-only weight as GGUFFile.array returns it, with random contents."""
    if name in FLOAT_TYPES:
        w = rng.standard_normal((out_f, in_f)).astype(np.float32)
        raw = {"F32": w, "F16": w.astype(np.float16),
               "BF16": (w.view(np.uint32) >> 16).astype(np.uint16)}[name]
    else:
        bs, ts = GGML_TYPE_TRAITS[GGMLType[name]]
        blocks = rng.integers(0, 256, (out_f, in_f // bs, ts), dtype=np.uint8)
        for f in F16_FIELDS[name]:
            scale = (rng.random((out_f, in_f // bs)) * 0.01 + 0.001).astype(np.float16)
            blocks[:, :, f:f + 2] = scale[..., None].view(np.uint8)
        raw = blocks.reshape(out_f, -1)
    raw.setflags(write=False)
    return raw


def reference(raw: np.ndarray, name: str) -> np.ndarray:
    """float32 (out, in) from gguf-py's dequantizers (the reference implementation)."""
    if name == "F32":
        return raw.copy()
    if name == "F16":
        return raw.astype(np.float32)
    if name == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[name])


def quantized_x(x: np.ndarray, block: int = 32) -> np.ndarray:
    """The activation the int8 kernels actually multiply: dx * xq, float64, one scale per
    ``block`` elements (256 for the ternary kernels: ternary.quantize_act_k)."""
    q, d, _ = quantize_act_ref(x) if block == 32 else quantize_act_k_ref(x)
    return (q.reshape(*x.shape[:-1], -1, block) * d[..., None].astype(np.float64)).reshape(x.shape)


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def test_every_required_type_is_native():
    for t in ["F32", "F16", "BF16", "Q8_0", "Q4_K", "Q6_K", "TQ1_0", "TQ2_0", "Q4_0", "Q4_1",
              "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K", "IQ4_NL", "IQ4_XS"]:
        assert GGMLType[t] in NATIVE_TYPES


def test_activation_quantization_matches_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(2048).astype(np.float32) * 3
    x[:32] = 0.0  # an all-zero block: scale 0, all codes 0
    x[32:64] = 1e-30
    xq, xd, xsd = np.empty(2048, np.int8), np.empty(64, np.float32), np.empty(128, np.float32)
    quantize_act(x, xq, xd, xsd)
    q, d, s = quantize_act_ref(x)
    np.testing.assert_array_equal(xq, q)
    np.testing.assert_array_equal(xd, d)
    np.testing.assert_array_equal(xsd, s)
    assert np.abs(quantized_x(x) - x).max() <= xd.max() / 2 * (1 + 1e-6)


def test_activation_quantization_is_ggml_q8_0_up_to_ties():
    """The int8 activations are llama.cpp's: ggml's ``quantize_row_q8_0_ref`` gives the same
    codes and, rounded to fp16, the same scales. ggml rounds exact ties away from zero where
    ``rint`` rounds them to even (activations.py documents it), so codes may differ there, by
    one, and nowhere else."""
    from ggml_ref import ggml_quantize_ref

    rng = np.random.default_rng(2)
    x = (rng.standard_normal(64 * 32) * 3).astype(np.float32)
    x[:32] = 0.0
    x[32:64] = 1e-30
    halves = (rng.integers(-254, 255, 64 * 32) / 2).astype(np.float32)  # d = 1: many ties
    halves[::32] = 127
    for v in (x, halves):
        q, d, _ = quantize_act_ref(v)
        g = ggml_quantize_ref(int(GGMLType.Q8_0), v).reshape(-1, 34)  # d fp16 | qs int8[32]
        gq = np.ascontiguousarray(g[:, 2:]).view(np.int8).reshape(-1)
        np.testing.assert_array_equal(d.astype(np.float16), np.ascontiguousarray(g[:, :2])
                                      .view("<f2")[:, 0])
        amax = np.abs(v.reshape(-1, 32)).max(axis=1)  # ggml: id = 1 / (amax / 127)
        with np.errstate(divide="ignore"):
            gid = np.where(amax > 0, np.float32(1) / (amax / np.float32(127)), np.float32(0))
        scaled = v.reshape(-1, 32) * gid[:, None].astype(np.float32)  # (nb, 32) float32
        tie = (np.abs(scaled) % 1 == 0.5).reshape(-1)
        differ = q != gq
        assert (differ <= tie).all(), np.flatnonzero(differ & ~tie)[:8]
        assert (np.abs(q.astype(int) - gq)[differ] == 1).all()
    assert differ.any()  # the ties case does exercise the difference


@pytest.mark.parametrize("name,out_f,in_f", CASES)
def test_matvec_matches_reference(name, out_f, in_f):
    rng = np.random.default_rng(out_f * 7 + in_f)
    raw = rand_weight(rng, name, out_f, in_f)
    lin = Linear(raw, GGMLType[name], (out_f, in_f), name=f"blk.0.{name}")
    ref_w = reference(raw, name).astype(np.float64)
    x = rng.standard_normal(in_f).astype(np.float32)
    y = lin.matvec(x)
    assert y.shape == (out_f,) and y.dtype == np.float32
    exact = ref_w @ x.astype(np.float64)
    if name in FLOAT_TYPES:
        assert rel_err(y, exact) <= 2e-6
    else:
        assert rel_err(y, ref_w @ quantized_x(x, 256 if name.startswith("TQ") else 32)) <= 2e-6
        assert rel_err(y, exact) <= 3e-2
    # out= writes in place and returns the same buffer
    buf = np.full(out_f, np.nan, np.float32)
    assert lin.matvec(x, out=buf) is buf
    np.testing.assert_array_equal(buf, y)


@pytest.mark.parametrize("name,out_f,in_f", CASES)
def test_matmul_and_rows_match_reference(name, out_f, in_f):
    rng = np.random.default_rng(out_f * 11 + in_f)
    raw = rand_weight(rng, name, out_f, in_f)
    lin = Linear(raw, GGMLType[name], (out_f, in_f), name=f"blk.0.{name}")
    ref32 = reference(raw, name)
    ref_w = ref32.astype(np.float64)
    # dequantization is bit-exact with the reference, -0.0 included
    np.testing.assert_array_equal(lin.dequantize().view(np.uint32), ref32.view(np.uint32))
    ids = np.array([out_f - 1, 0, out_f // 2, 0])
    rows = get_rows(raw, GGMLType[name], (out_f, in_f), ids, name="token_embd.weight")
    np.testing.assert_array_equal(rows.view(np.uint32), ref32[ids].view(np.uint32))
    X = rng.standard_normal((BLAS_MIN_TOKENS + 3, in_f)).astype(np.float32)
    Y = lin.matmul(X)
    assert Y.shape == (X.shape[0], out_f)
    k_act = 256 if name.endswith(("_K", "_XS")) or name.startswith("TQ") else 32  # per 256
    if GGMLType[name] in GEMM_TYPES:  # prefill through the int8 matrix product (test_gemm.py)
        assert rel_err(Y, quantized_x(X, k_act) @ ref_w.T) <= 2e-5
    else:  # prefill through BLAS: exact weights, float32 activations
        assert rel_err(Y, X.astype(np.float64) @ ref_w.T) <= 2e-6
    # few tokens: the int8 kernels, the same numbers as one matvec per token (up to float32
    # summation order: the drivers are compiled separately with fastmath)
    Xs = X[:3]
    Ys = lin.matmul(Xs)
    for t in range(3):
        if k_act == 256 and GGMLType[name] in GEMM_TYPES:  # the GEMM quantizes x per 256
            assert rel_err(Ys[t], quantized_x(Xs[t], 256) @ ref_w.T) <= 2e-5
        else:
            assert rel_err(Ys[t], lin.matvec(Xs[t])) <= (1e-5 if GGMLType[name] in GEMM_TYPES
                                                          else 1e-6)


def test_matmul_tiles_large_weights():
    """A weight larger than one float32 tile (2**20 elements) is multiplied tile by tile."""
    rng = np.random.default_rng(5)
    raw = rand_weight(rng, "F16", 2000, 576)  # a type that takes the dequantize + BLAS path
    lin = Linear(raw, GGMLType.F16, (2000, 576))
    X = rng.standard_normal((BLAS_MIN_TOKENS, 576)).astype(np.float32)
    ref = X.astype(np.float64) @ reference(raw, "F16").astype(np.float64).T
    assert rel_err(lin.matmul(X), ref) <= 2e-6


@pytest.mark.parametrize("names", [["Q8_0", "Q8_0", "Q8_0"], ["Q4_1", "Q8_0", "Q4_1", "Q4_1",
                                                             "Q4_1", "Q4_1"]])
def test_matvec_many_equals_single_matvecs(names):
    rng = np.random.default_rng(3)
    lins = [Linear(rand_weight(rng, n, o, 576), GGMLType[n], (o, 576), name=f"w{k}")
            for k, (n, o) in enumerate(zip(names, [64, 17, 17, 40, 33, 9], strict=False))]
    x = rng.standard_normal(576).astype(np.float32)
    outs = [np.empty(lin.out_features, np.float32) for lin in lins]
    got = Linear.matvec_many(lins, x, outs=outs)
    # the same numbers as single matvecs, up to float32 summation order (the group driver is
    # compiled separately, with fastmath)
    for lin, y, o in zip(lins, got, outs, strict=True):
        assert y is o
        assert rel_err(y, lin.matvec(x).astype(np.float64)) <= 1e-6
    got2 = Linear.matvec_many(lins, x)
    for a, b in zip(got, got2, strict=True):
        np.testing.assert_array_equal(a, b)


ROW_KERNELS = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


@pytest.mark.parametrize("name", ROW_KERNELS)
def test_row_range_kernel_equals_single_row_kernel(name):
    """rows_<type> (the drivers' row-range form) and dot_<type> (one row) compute the same
    numbers on rows lo..hi-1 of a weight, and leave the other outputs alone."""
    from gguflite.runtime.kernels import kquants, legacy

    mod = legacy if name[1:] in ("4_0", "4_1", "5_0", "5_1", "8_0") else kquants
    dot, rows = getattr(mod, "dot_" + name.lower()), getattr(mod, "rows_" + name.lower())
    in_f = 608 if mod is legacy else 512
    rng = np.random.default_rng(len(name) + in_f)
    raw = rand_weight(rng, name, 6, in_f)
    flat, rb, nb = raw.reshape(-1), raw.shape[1], in_f // 32
    xq, xd, xsd = quantize_act_ref(rng.standard_normal(in_f).astype(np.float32))
    y = np.full(6, np.nan, np.float32)
    rows(flat, rb, nb, 1, 5, y, xq, xd, xsd)
    single = np.array([dot(flat, r * rb, nb, xq, xd, xsd) for r in range(1, 5)], np.float32)
    assert np.isnan(y[0]) and np.isnan(y[5])
    assert rel_err(y[1:5], single) <= 1e-6
    qx = xq.astype(np.float64) * np.repeat(xd.astype(np.float64), 32)  # (in_f,) dx * xq
    assert rel_err(y[1:5], reference(raw, name).astype(np.float64)[1:5] @ qx) <= 2e-6
