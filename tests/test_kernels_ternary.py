"""The ternary (TQ1_0 / TQ2_0) mat-vec kernels: the per-256 activation quantization, the byte
tricks they rest on (checked on every byte value), the int16 block accumulation at its worst-case
bound, the portable lowering, and a whole model through the fused decode step."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from gguflite.runtime import load
from gguflite.runtime.kernels import Linear, ternary
from gguflite.runtime.kernels.dispatch import kernel_sources_fingerprint
from gguflite.runtime.kernels.vector_ir import load_u8x32, store_affine
from gguflite.runtime.kernels.vector_tq import pow3_halves, trit_cmp, xor_halves
from gguflite.runtime.reference import reference_logits
from numba import njit
from portable_check import run_portable_check
from test_kernels_matvec import quantized_x, rand_weight, reference, rel_err
from tiny_models import TinyConfig, make_tiny_llama

import gguflite
from gguflite.constants import GGMLType

TERNARY = [("TQ1_0", ternary.dot_tq1_0), ("TQ2_0", ternary.dot_tq2_0)]


def _act_k(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xq, xd, xsd buffers (the scratch sizes of dispatch) filled by quantize_act_k."""
    n = x.size
    xq, xd, xsd = np.empty(n, np.int8), np.zeros(n // 32, np.float32), np.zeros(n // 16,
                                                                                np.float32)
    ternary.quantize_act_k(x, xq, xd, xsd)
    return xq, xd, xsd


def test_activation_quantization_per_256_matches_reference():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(1024).astype(np.float32) * 3
    x[:256] = 0.0  # an all-zero block: scale 0, all codes 0, sums 0
    x[256:512] = 1e-30  # tiny but non-zero
    x[700] = -50.0  # one outlier sets its block's scale
    xq, xd, xsd = _act_k(x)
    q, d, s = ternary.quantize_act_k_ref(x)
    np.testing.assert_array_equal(xq, q)
    np.testing.assert_array_equal(xd[:16], np.repeat(d, 4))  # 4 copies per block (scale4)
    np.testing.assert_array_equal(xsd.view(np.int16)[:32], s)  # one sum per 32
    assert np.abs(quantized_x(x, 256) - x).max() <= d.max() / 2 * (1 + 1e-6)


@njit(cache=True)
def _byte_ops(src, out):
    """out[k] = float of op k applied to the 256 bytes of src (8 vectors of 32 lanes)."""
    for v in range(8):
        q = load_u8x32(src, 32 * v)
        store_affine(out[0], 32 * v, pow3_halves(q, 1, 1), 0, 1.0, 0.0, 1.0, 0.0)
        store_affine(out[1], 32 * v, pow3_halves(q, 2, 2), 0, 1.0, 0.0, 1.0, 0.0)
        store_affine(out[2], 32 * v, pow3_halves(q, 0, 1), 0, 1.0, 0.0, 1.0, 0.0)
        store_affine(out[3], 32 * v, pow3_halves(q, 4, 3), 0, 1.0, 0.0, 1.0, 0.0)
        store_affine(out[4], 32 * v, trit_cmp(xor_halves(q, 128, 128)), 0, 1.0, 0.0, 1.0, 0.0)
        store_affine(out[5], 32 * v, xor_halves(q, 0, 128), 0, 1.0, 0.0, 1.0, 0.0)


def test_byte_tricks_on_every_byte():
    """trit_cmp (on q ^ 128) is (3q) >> 8, pow3_halves a wrapping multiply and xor_halves a
    per-half xor, for all 256 byte values."""
    q = np.arange(256, dtype=np.uint8)
    out = np.zeros((6, 256), np.float32)
    _byte_ops(q, out)
    qi = q.astype(np.int64)
    lanes = np.arange(256) % 32 < 16  # lanes 0..15 of each vector take the first power
    want = [3 * qi % 256, 9 * qi % 256, np.where(lanes, qi, 3 * qi) % 256,
            np.where(lanes, 81 * qi, 27 * qi) % 256, (3 * qi) >> 8, np.where(lanes, qi, qi ^ 128)]
    for k, w in enumerate(want):
        np.testing.assert_array_equal(out[k], w.astype(np.float32), err_msg=f"op {k}")


@pytest.mark.parametrize("name,fn", TERNARY)
@pytest.mark.parametrize("n", [256, 1536, 2048])  # TQ2_0: 4 blocks per iteration, 1536 has a tail
def test_row_kernel_matches_reference(name, fn, n):
    """Random bytes (every code, TQ2_0's invalid 3 included) against float64 math on gguf-py's
    dequantized weights and the quantized activation: only float32 rounding remains."""
    rng = np.random.default_rng(n + len(name))
    raw = rand_weight(rng, name, 13, n)
    x = rng.standard_normal(n).astype(np.float32)
    xq, xd, xsd = _act_k(x)
    flat = raw.reshape(-1)
    y = np.array([fn(flat, r * raw.shape[1], n // 32, xq, xd, xsd) for r in range(13)])
    ref_w = reference(raw, name).astype(np.float64)
    assert rel_err(y, ref_w @ quantized_x(x, 256)) <= 2e-6
    assert rel_err(y, ref_w @ x.astype(np.float64)) <= 3e-2


@pytest.mark.parametrize("name", ["TQ1_0", "TQ2_0"])
def test_row_range_kernel_equals_row_kernel(name):
    """rows_<type> (the drivers' form) gives dot_<type>'s numbers on rows lo..hi-1 and leaves
    the other outputs alone."""
    rng = np.random.default_rng(5)
    raw = rand_weight(rng, name, 11, 768)  # 3 blocks per row
    xq, xd, xsd = _act_k(rng.standard_normal(768).astype(np.float32))
    flat = raw.reshape(-1)
    dot = getattr(ternary, f"dot_{name.lower()}")
    rows = getattr(ternary, f"rows_{name.lower()}")
    y = np.full(11, -7.0, np.float32)
    rows(flat, raw.shape[1], 24, 2, 9, y, xq, xd, xsd)
    want = [dot(flat, r * raw.shape[1], 24, xq, xd, xsd) for r in range(2, 9)]
    np.testing.assert_array_equal(y[2:9], np.array(want, np.float32))
    assert np.all(y[:2] == -7.0) and np.all(y[9:] == -7.0)


@pytest.mark.parametrize("name,fn", TERNARY)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_int16_accumulation_at_its_bound(name, fn, sign):
    """The largest codes (TQ2_0: 3 everywhere; TQ1_0: byte 255, trits 2) times the largest
    activations (127 everywhere): the int16 block sums stay exact."""
    n = 512
    bs = ternary.TQ2_0_BYTES if name == "TQ2_0" else ternary.TQ1_0_BYTES
    raw = np.full((3, (n // 256) * bs), 255, np.uint8)
    for blk in range(n // 256):  # f16 scales 0.5, 0.25, ...
        raw[:, blk * bs + bs - 2:blk * bs + bs] = np.array([0.5 ** (blk + 1)] * 3, np.float16
                                                           ).view(np.uint8).reshape(3, 2)
    raw.setflags(write=False)
    x = np.full(n, sign * 2.0, np.float32)
    xq, xd, xsd = _act_k(x)
    assert np.all(np.abs(xq) == 127)
    flat = raw.reshape(-1)
    y = np.array([fn(flat, r * raw.shape[1], n // 32, xq, xd, xsd) for r in range(3)])
    ref = reference(raw, name).astype(np.float64) @ quantized_x(x, 256)
    assert rel_err(y, ref) <= 1e-6


_PORTABLE_CHECK = textwrap.dedent("""
    import numpy as np
    from gguflite.runtime.kernels import PORTABLE, ternary
    from test_kernels_matvec import quantized_x, rand_weight, reference
    from test_kernels_ternary import _act_k, _byte_ops
    assert PORTABLE
    q = np.arange(256, dtype=np.uint8)
    out = np.zeros((7, 256), np.float32)
    _byte_ops(q, out)
    print("bytes", out.astype(np.int64).tobytes().hex())
    rng = np.random.default_rng(7)
    for name, fn in [("TQ1_0", ternary.dot_tq1_0), ("TQ2_0", ternary.dot_tq2_0)]:
        raw = rand_weight(rng, name, 9, 1536)  # 6 blocks: TQ2_0's 4-block loop and its tail
        x = rng.standard_normal(1536).astype(np.float32)
        xq, xd, xsd = _act_k(x)
        flat = raw.reshape(-1)
        y = np.array([fn(flat, r * raw.shape[1], 48, xq, xd, xsd) for r in range(9)])
        ref = reference(raw, name).astype(np.float64) @ quantized_x(x, 256)
        err = np.abs(y - ref).max() / np.abs(ref).max()
        assert err <= 2e-6, (name, err)
    print("portable ok")
""")


def test_portable_lowering_gives_the_same_numbers(request, tmp_path):
    """The generic vector IR (non-x86 hosts) computes the same bytes and dot products. Its
    Numba cache lives apart (keyed on the kernel sources), never mixed with the AVX2 one: in
    pytest's cache directory, or a fresh one when the cache plugin is off."""
    name = f"numba-portable-{kernel_sources_fingerprint()}"
    store = getattr(request.config, "cache", None)
    cache = store.mkdir(name) if store is not None else tmp_path / name
    stdout = run_portable_check(_PORTABLE_CHECK, cache)
    out = np.zeros((7, 256), np.float32)
    _byte_ops(np.arange(256, dtype=np.uint8), out)
    assert f"bytes {out.astype(np.int64).tobytes().hex()}" in stdout


def test_matvec_group_and_matmul_int8_use_the_same_activation():
    """q, k, v sharing one quantized activation (matvec_many), and few-token matmul, give the
    numbers of single mat-vecs."""
    rng = np.random.default_rng(11)
    lins = [Linear(rand_weight(rng, "TQ1_0", o, 512), GGMLType.TQ1_0, (o, 512), name=f"w{o}")
            for o in (16, 8, 8)]
    x = rng.standard_normal(512).astype(np.float32)
    outs = Linear.matvec_many(lins, x)
    for lin, y in zip(lins, outs, strict=True):
        np.testing.assert_allclose(y, lin.matvec(x), rtol=1e-6, atol=1e-6 * np.abs(y).max())
    X = rng.standard_normal((3, 512)).astype(np.float32)
    Y = lins[0].matmul_int8(X)
    for t in range(3):
        np.testing.assert_array_equal(Y[t], lins[0].matvec(X[t]))


@pytest.mark.parametrize("wtype", [GGMLType.TQ1_0, GGMLType.TQ2_0], ids=lambda t: t.name)
def test_ternary_model_decodes_through_the_fused_step(tmp_path, wtype):
    """A tiny Llama with every block matrix ternary: prompt logits and one decode step (the
    single-call llama_decode path) against float64 math on the decoded weights."""
    cfg = TinyConfig(dim=256, hidden_dim=512, n_layer=1, n_head=4, n_kv_head=2)
    path, _, _ = make_tiny_llama(tmp_path / "t.gguf", cfg, wtype=wtype)
    ids = [1, 5, 300, 17, 42, 99, 7, 8]
    with load(path) as model, gguflite.open(path) as f:
        assert f.tensors["blk.0.ffn_down.weight"].type == wtype
        assert model.backend.plan is not None  # the fused decode step is in use
        model.eval(ids[:-1])
        last = model.eval(ids)  # one token: decode_step
        ref = reference_logits(f, ids)
    err = np.abs(last - ref[-1]).max() / np.abs(ref[-1]).max()
    assert err < 0.03, f"{wtype.name}: relative logit error {err:.3e}"
