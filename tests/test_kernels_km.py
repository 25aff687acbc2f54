"""The KM v2 row kernels (runtime/kernels/km_rows.py) and KMLinear, against the spec.

Rows are packed here from random fields with a NumPy encoder written from the format text
(spec/extensions-km.md), independently of gguflite.quants.km, and decoded with a NumPy
reference written the same way; gguflite.quants.km's own reference decoder is cross-checked.
Tolerances (as tests/test_kernels_matvec.py):

- mat-vec vs the float64 product of the exactly decoded rows with the *quantized* activation
  (x padded with zeros to a multiple of 64, quantized with a step per 256 columns, the last
  group shorter, times an integer multiplier per 32, by a NumPy reference of
  km_rows.quantize_act_km): relative error (max |err| / max |ref|) <= 2e-6, float32
  accumulation only; and vs the float activation: |err_r| <= sum_i |W_ri| * step_i / 2 with
  step_i <= (max |x| over its block + max |x| over its group / 64) / 127;
- dequantize / embedding rows / BLAS prefill tiles: bit-exact (compared as uint32 patterns).
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from gguflite.runtime import load
from gguflite.runtime.kernels import BLAS_MIN_TOKENS, KMLinear, Linear, dispatch
from gguflite.runtime.kernels.km_rows import KM_KINDS, quantize_act_km, row_bytes
from gguflite.runtime.reference import reference_logits
from portable_check import run_portable_check
from test_kernels_matvec import rand_weight
from tiny_models import TinyConfig, make_tiny_llama

import gguflite
from gguflite.cli.info import summarize
from gguflite.constants import GGMLType
from gguflite.errors import ModelError
from gguflite.quants import km

# -- a spec-level encoder and decoder ---------------------------------------------------------


def pack_rows(d, dmin, cb, s, m, q, bits: int) -> np.ndarray:
    """Rows from fields: d, dmin (rows,) f16; cb (rows, 2**bits) <= 127 ascending;
    s, m (rows, n_chunks, 2) in [0, 64) (blocks A, B); q (rows, n_chunks, 64) codes."""
    rows, nch, _ = q.shape
    head = np.concatenate([np.asarray(d, "<f2").reshape(rows, 1).view(np.uint8),
                           np.asarray(dmin, "<f2").reshape(rows, 1).view(np.uint8),
                           np.asarray(cb, np.uint8)], axis=1)  # (rows, 4 + K)
    s, m = np.asarray(s, np.uint32), np.asarray(m, np.uint32)
    v = s[..., 0] | m[..., 0] << 6 | s[..., 1] << 12 | m[..., 1] << 18  # (rows, nch) 24 bits
    word = np.stack([v & 255, (v >> 8) & 255, v >> 16], -1).astype(np.uint8)  # (rows, nch, 3)
    q = np.asarray(q, np.uint8)
    if bits == 4:  # byte i = q(32 + i) << 4 | q(i)
        codes = q[..., :32] | q[..., 32:] << 4  # (rows, nch, 32)
    else:  # byte i = q(48 + i) << 6 | q(32 + i) << 4 | q(16 + i) << 2 | q(i), low 2 bits
        lo = q & 3
        codes = lo[..., :16] | lo[..., 16:32] << 2 | lo[..., 32:48] << 4 | lo[..., 48:] << 6
        if bits == 3:  # 8 more bytes: byte i, bit u = bit 2 of q(8u + i)
            hi = np.zeros(q.shape[:-1] + (8,), np.uint8)
            for u in range(8):
                hi |= ((q[..., 8 * u:8 * u + 8] >> 2) & 1) << u
            codes = np.concatenate([codes, hi], -1)
    body = np.concatenate([word, codes.astype(np.uint8)], -1).reshape(rows, -1)
    return np.ascontiguousarray(np.concatenate([head, body], axis=1))


def random_rows(rng, rows: int, cols: int, bits: int) -> np.ndarray:
    """Random valid rows: any d sign, dmin > 0, codebooks in [0, 127], padding codes 0."""
    k, nch = 1 << bits, (cols + 63) // 64
    d = rng.uniform(2e-6, 2e-5, rows) * rng.choice([-1, 1], rows)
    dmin = rng.uniform(1e-5, 1e-4, rows)
    cb = np.sort(rng.integers(0, 128, (rows, k)), axis=1)
    cb[:, -1] = np.where(rng.random(rows) < 0.3, 127, cb[:, -1])  # the largest entry
    s, m = rng.integers(0, 64, (rows, nch, 2)), rng.integers(0, 64, (rows, nch, 2))
    q = rng.integers(0, k, (rows, nch, 64))
    q.reshape(rows, -1)[:, cols:] = 0
    return pack_rows(d, dmin, cb, s, m, q, bits)


def decode_rows(data: np.ndarray, bits: int, cols: int):
    """Fields of packed rows: d, dmin (rows, 1) f32; cb (rows, K); s, m (rows, nch, 2);
    q (rows, nch, 64)."""
    rows, k, nch = data.shape[0], 1 << bits, (cols + 63) // 64
    d = data[:, 0:2].copy().view("<f2").astype(np.float32)
    dmin = data[:, 2:4].copy().view("<f2").astype(np.float32)
    ch = data[:, 4 + k:].reshape(rows, nch, 3 + 8 * bits).astype(np.int64)
    v = ch[..., 0] | ch[..., 1] << 8 | ch[..., 2] << 16
    s = np.stack([v & 63, (v >> 12) & 63], -1)
    m = np.stack([(v >> 6) & 63, (v >> 18) & 63], -1)
    b = ch[..., 3:]
    if bits == 4:
        q = np.concatenate([b & 15, b >> 4], -1)
    else:
        q = np.concatenate([(b[..., :16] >> (2 * u)) & 3 for u in range(4)], -1)
        if bits == 3:
            q |= np.concatenate([((b[..., 16:24] >> u) & 1) << 2 for u in range(8)], -1)
    return d, dmin, data[:, 4:4 + k].astype(np.int64), s, m, q


def dequantize_ref(data: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """(rows, cols) float32: (d * s) * cb[q] - dmin * m, each step rounded to float32."""
    d, dmin, cb, s, m, q = decode_rows(data, bits, cols)
    rows, nch = q.shape[:2]
    val = np.take_along_axis(cb, q.reshape(rows, -1), 1).astype(np.float32)
    a = (d[:, :, None] * s.astype(np.float32)).astype(np.float32)  # (rows, nch, 2)
    c = (dmin[:, :, None] * m.astype(np.float32)).astype(np.float32)
    w = val.reshape(rows, nch, 2, 32) * a[..., None] - c[..., None]
    return w.reshape(rows, -1)[:, :cols].astype(np.float32)


def quantized_act(x: np.ndarray):
    """xq, xd, xsd of x padded with zeros to n_p, a multiple of 64, in the KM kernels' layout
    (km_rows.quantize_act_km): per group k of 256 columns (the last one 64, 128 or 192 wide)
    the step xd[k] = max |x| * float32(1 / 127) / 64; per block b of 32 the multiplier
    t = ceil(64 * max |x| over b / max |x| over k) in [1, 64] and xq = rint(x / (xd[k] * t));
    xsd's bytes as int16: the sums of xq per block, then the t, then 16 spare bytes.
    Also returns the (n_p,) float64 step of each column, xd[k] * t."""
    n_p = (x.size + 63) // 64 * 64
    xp = np.zeros(n_p, np.float32)
    xp[:x.size] = x
    xq, xd = np.zeros(n_p, np.int8), np.zeros(n_p // 32, np.float32)
    xsd = np.zeros(n_p // 16 + 4, np.float32)
    t = np.zeros(n_p // 32, np.int16)
    for k in range(0, n_p, 256):
        amax = np.abs(xp[k:k + 256]).max()
        xd[k // 256] = np.float32(amax * np.float32(1.0 / 127.0)) * np.float32(1.0 / 64.0)
        rel = np.float32(64.0) / amax if amax > 0 else np.float32(0.0)
        for b in range(k // 32, min(k + 256, n_p) // 32):
            blk = xp[32 * b:32 * b + 32]
            t[b] = min(max(int(np.ceil(np.float32(np.abs(blk).max() * rel))), 1), 64)
            d = np.float32(xd[k // 256] * np.float32(t[b]))
            inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
            xq[32 * b:32 * b + 32] = np.clip(np.rint(blk * inv), -127, 127)
    xs16 = xsd.view(np.int16)
    xs16[:n_p // 32] = xq.reshape(-1, 32).astype(np.int32).sum(1)
    xs16[n_p // 32:n_p // 16] = t
    step = np.repeat(np.repeat(xd[:(n_p + 255) // 256].astype(np.float64), 8)[:n_p // 32] * t, 32)
    return xq, xd, xsd, step


def dot_ref(data: np.ndarray, bits: int, cols: int, x: np.ndarray) -> np.ndarray:
    """float64 W @ (step * xq), W decoded exactly, with the padded int8 activation."""
    xq, _, _, step = quantized_act(x)
    return dequantize_ref(data, bits, cols).astype(np.float64) @ (step * xq)[:cols]


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


# -- kernels ----------------------------------------------------------------------------------
# (rows, cols): one 4-chunk group; groups plus a tail; a tail only; partial chunks (cols % 64)
SHAPES = [(19, 256), (37, 576), (5, 64), (23, 100), (9, 33), (17, 448 + 32)]


@pytest.mark.parametrize("bits", [4, 3, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_matvec_and_dequantize_match_the_spec_reference(bits, shape):
    rng = np.random.default_rng(bits * 1000 + shape[1])
    rows, cols = shape
    data = random_rows(rng, rows, cols, bits)
    assert data.shape[1] == row_bytes(cols, bits) == km.row_bytes(cols, bits)
    lin = KMLinear(km.KMTensor(bits, (rows, cols), readonly(data)), name="blk.0.ffn_up.weight")
    ref_w = dequantize_ref(data, bits, cols)
    np.testing.assert_array_equal(km.dequantize_rows(data, bits, cols).view(np.uint32),
                                  ref_w.view(np.uint32))  # the format module agrees
    np.testing.assert_array_equal(lin.dequantize().view(np.uint32), ref_w.view(np.uint32))
    ids = rng.integers(0, rows, 7)
    np.testing.assert_array_equal(lin.rows(ids).view(np.uint32), ref_w[ids].view(np.uint32))
    x = readonly(rng.standard_normal(cols).astype(np.float32))
    out = np.empty(rows, np.float32)
    assert lin.matvec(x, out=out) is out
    assert rel_err(out, dot_ref(data, bits, cols, x)) <= 2e-6
    # against the float activation: x_i is off by at most half its step, and a block's step is
    # at most its own max |x| / 127 plus 1/64 of its group's (any quantizer meeting the layout)
    xp = np.zeros((cols + 63) // 64 * 64)
    xp[:cols] = x
    bmax = np.repeat(np.abs(xp.reshape(-1, 32)).max(1), 32)  # (n_p,)
    gmax = np.repeat([np.abs(xp[k:k + 256]).max() for k in range(0, xp.size, 256)], 256)
    step = (bmax + gmax[:xp.size] / 64)[:cols] / 127 * (1 + 1e-6)
    exact = ref_w.astype(np.float64) @ x
    assert (np.abs(out - exact) <= 0.5 * np.abs(ref_w) @ step + 2e-6 * np.abs(exact).max()).all()
    X = rng.standard_normal((BLAS_MIN_TOKENS + 1, cols)).astype(np.float32)
    np.testing.assert_allclose(lin.matmul(X), X @ ref_w.T, rtol=1e-5,
                               atol=1e-5 * np.abs(X @ ref_w.T).max())  # exact tiles, BLAS
    few = lin.matmul(X[:3])  # below BLAS_MIN_TOKENS: the int8 mat-vec per token
    for t in range(3):
        assert rel_err(few[t], dot_ref(data, bits, cols, X[t])) <= 2e-6


@pytest.mark.parametrize("cols", [32, 100, 200, 576, 1000])
def test_activation_has_per_256_steps_and_per_32_multipliers(cols):
    x = np.random.default_rng(cols).standard_normal(cols).astype(np.float32)
    x[:64] *= 50  # groups and blocks of different scales
    x[-40:] *= 1e-3
    n_p = (cols + 63) // 64 * 64
    got = np.zeros(n_p, np.int8), np.zeros(n_p // 32, np.float32), np.zeros(n_p // 16 + 4,
                                                                            np.float32)
    quantize_act_km(x, *got)
    want = quantized_act(x)
    np.testing.assert_array_equal(got[0], want[0])  # xq
    np.testing.assert_array_equal(got[1][:(n_p + 255) // 256], want[1][:(n_p + 255) // 256])
    np.testing.assert_array_equal(got[2].view(np.int16)[:n_p // 16],
                                  want[2].view(np.int16)[:n_p // 16])  # sums, multipliers
    t = got[2].view(np.int16)[n_p // 32:n_p // 16]
    assert t.min() >= 1 and t.max() == 64 and np.abs(got[0]).max() == 127


def test_extreme_codebook_and_activation_do_not_saturate():
    """cb = 127 everywhere and |xq| = 127: vpmaddubsw's pair sums reach 2 * 127 * 127."""
    rows, cols, bits = 3, 256, 4
    nch = cols // 64
    data = pack_rows(np.full(rows, 1e-3), np.zeros(rows), np.full((rows, 16), 127),
                     np.full((rows, nch, 2), 63), np.zeros((rows, nch, 2)),
                     np.full((rows, nch, 64), 15), bits)
    lin = KMLinear(km.KMTensor(bits, (rows, cols), data))
    for sign in (1.0, -1.0):
        x = np.full(cols, sign, np.float32)
        np.testing.assert_allclose(lin.matvec(x), dot_ref(data, bits, cols, x), rtol=1e-6)


def test_matvec_many_groups_km_weights_with_each_other_and_with_ggml_types():
    rng = np.random.default_rng(9)
    a = KMLinear(km.KMTensor(4, (24, 576), random_rows(rng, 24, 576, 4)), name="a")
    b = KMLinear(km.KMTensor(4, (40, 576), random_rows(rng, 40, 576, 4)), name="b")
    c = KMLinear(km.KMTensor(2, (8, 576), random_rows(rng, 8, 576, 2)), name="c")
    q = Linear(rand_weight(rng, "Q8_0", 16, 576), GGMLType.Q8_0, (16, 576), name="q")
    x = rng.standard_normal(576).astype(np.float32)
    ys = Linear.matvec_many([a, b, q, c], x)
    for lin, y in zip([a, b, q, c], ys, strict=True):
        np.testing.assert_array_equal(y, lin.matvec(x))


def test_errors_name_the_tensor():
    rng = np.random.default_rng(3)
    data = random_rows(rng, 4, 100, 3)
    lin = KMLinear(km.KMTensor(3, (4, 100), data), name="blk.1.attn_k.weight")
    with pytest.raises(ModelError, match="blk.1.attn_k.weight.*activation"):
        lin.matvec(np.zeros(101, np.float32))
    with pytest.raises(ModelError, match="row id 4 outside"):
        lin.rows(np.array([4]))
    with pytest.raises(ModelError, match="bytes each"):
        KMLinear(km.KMTensor(3, (4, 129), data), name="t")
    assert repr(lin) == "KMLinear('blk.1.attn_k.weight', KM3, out=4, in=100)"


_PORTABLE_CHECK = textwrap.dedent("""
    import sys
    import numpy as np
    from gguflite.runtime.kernels import PORTABLE, km_rows
    from test_kernels_km import dot_ref, dequantize_ref, quantized_act, random_rows
    assert PORTABLE
    rng = np.random.default_rng(5)
    for bits, fn, deq in [(4, km_rows.dot_km4, km_rows.deq_km4),
                          (3, km_rows.dot_km3, km_rows.deq_km3),
                          (2, km_rows.dot_km2, km_rows.deq_km2)]:
        rows, cols = 6, 448 + 32  # a 4-chunk group, tail chunks and a partial chunk
        data = random_rows(rng, rows, cols, bits)
        flat = data.reshape(-1)
        x = rng.standard_normal(cols).astype(np.float32)
        xq, xd, xsd, _ = quantized_act(x)
        rb = data.shape[1]
        y = np.array([fn(flat, r * rb, xq.size // 32, xq, xd, xsd) for r in range(rows)])
        ref = dot_ref(data, bits, cols, x)
        assert np.abs(y - ref).max() <= 2e-6 * np.abs(ref).max(), bits
        out = np.empty(rows * cols, np.float32)
        for r in range(rows):
            deq(flat, r * rb, cols, out, r * cols)
        assert (out.reshape(rows, cols).view(np.uint32)
                == dequantize_ref(data, bits, cols).view(np.uint32)).all(), bits
    print("portable ok")
""")


def test_portable_lowering_gives_the_same_numbers(tmp_path):
    """GGUFLITE_PORTABLE_SIMD=1: the lookup as a compare-select chain, no x86 intrinsics."""
    run_portable_check(_PORTABLE_CHECK, tmp_path)


# -- a model --------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg", [
    TinyConfig(dim=128, hidden_dim=256, n_layer=2),
    TinyConfig(dim=96, hidden_dim=160, n_layer=1, n_head=4, n_kv_head=2),  # cols % 64 != 0
], ids=["dim128", "dim96"])
def test_km4_model_runs_fused_and_per_op(tmp_path, cfg):
    """A tiny Llama requantized with the km4 recipe (blocks KM4, embeddings Q8_0) loads with
    KMLinear weights in the fused decode plan; fused decode == per-op decode, and the logits
    are close to the float64 reference over the decoded KM weights."""
    from gguflite.converters.requantize import requantize

    src, _, _ = make_tiny_llama(tmp_path / "f32.gguf", cfg)
    path = tmp_path / "km4.gguf"
    requantize(src, path, type="km4", embedding_type="km4")
    ids = [1, 5, 300, 17, 42, 99, 7, 8]
    with load(path, kv_type="f32") as model, gguflite.open(path) as f:  # exact cache
        assert km.is_km_tensor(f, "blk.0.ffn_down.weight")
        assert km.is_km_tensor(f, "token_embd.weight")  # embedding rows from KM too
        backend = model.backend
        assert isinstance(backend.w.blocks[0].w_down, KMLinear)
        assert backend.plan is not None
        fused = np.stack([backend.forward(np.array([t]), i).copy() for i, t in enumerate(ids)])
        backend.reset()
        backend.enable_timers()  # timers select the per-op path
        per_op = np.stack([backend.forward(np.array([t]), i).copy() for i, t in enumerate(ids)])
        backend.enable_timers(False)
        ref = reference_logits(f, ids)  # GGUFFile.dequantize decodes KM tensors too
        backend.reset()
        prefill = model.logits(ids)  # KM: BLAS over exactly decoded tiles; others: int8 GEMM
    with gguflite.open(path) as f:  # gguflite info: KM tensors as their own, native type
        summary = summarize(f)
    assert summary["tensor_types"]["KM4"]["tensors"] == 7 * cfg.n_layer + 1  # + token_embd
    assert summary["tensor_types"]["KM4"]["parameters"] == (
        cfg.vocab_size * cfg.dim + cfg.n_layer * cfg.dim * (
            2 * cfg.dim + 2 * cfg.n_kv_head * cfg.head_dim + 3 * cfg.hidden_dim))
    assert "KM4" in summary["runtime_native_types"]
    assert rel_err(fused, per_op) < 0.05  # int8 activations: see test_runtime_model
    assert (fused.argmax(-1) == per_op.argmax(-1)).mean() >= 0.9
    assert rel_err(fused, ref) < 0.03  # activation quantization error only
    assert rel_err(prefill, ref) < 0.03  # the non-KM output head multiplies int8 activations


def test_kinds_are_distinct_from_ggml_type_ids():
    assert set(KM_KINDS.values()).isdisjoint(int(t) for t in GGMLType)
    assert dispatch.KM4 == KM_KINDS[4]
