"""KM2/KM3/KM4 (KM v2 rows): layout against the spec, quantizer, quality, storage, edge cases."""

from __future__ import annotations

import gguf
import numba
import numpy as np
import pytest
from click.testing import CliRunner
from ggml_ref import ggml_dequantize, ggml_quantize

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite.cli.main import cli
from gguflite.errors import MetadataError, QuantizationError, TensorInfoError
from gguflite.quants import dequantize as q_dequantize
from gguflite.quants import km
from gguflite.quants import quantize as q_quantize
from gguflite.quants.km_reference import quantize_rows_reference
from gguflite.validate import validate


def _matrix(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Heavy-tailed weights with a few outliers, like real projection matrices."""
    rng = np.random.default_rng(seed)
    w = rng.standard_t(4, size=(rows, cols)).astype(np.float32) * 0.02
    w[rng.random((rows, cols)) < 0.01] *= 8
    return w


def _rel(w: np.ndarray, w2: np.ndarray, a: np.ndarray | None = None) -> np.ndarray:
    """Per-row (importance-weighted) squared error, float64: (rows,)."""
    a = np.ones(w.shape[1]) if a is None else a.astype(np.float64)
    return (((w.astype(np.float64) - w2) ** 2) * a).sum(axis=1)


# -- the layout, read from the spec text ------------------------------------------------------
def _spec_row(d, dmin, cb, s, m, q, bits, cols) -> bytes:
    """One row built byte by byte from /tmp-free prose of spec/extensions-km.md (not km.py)."""
    out = bytearray(np.array([d, dmin], "<f2").tobytes()) + bytes(int(c) for c in cb)
    for j in range(-(-cols // 64)):
        v = s[2 * j] | m[2 * j] << 6 | s[2 * j + 1] << 12 | m[2 * j + 1] << 18
        out += bytes([v & 255, v >> 8 & 255, v >> 16])
        t = q[64 * j: 64 * j + 64]
        if bits == 4:
            out += bytes(t[i] | t[32 + i] << 4 for i in range(32))
        else:
            out += bytes(sum((t[16 * u + i] & 3) << 2 * u for u in range(4)) for i in range(16))
            if bits == 3:
                out += bytes(sum((t[8 * u + i] >> 2) << u for u in range(8)) for i in range(8))
    return bytes(out)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("cols", [1, 64, 100, 130])
def test_hand_built_rows_decode_as_the_spec_says(bits, cols):
    rng = np.random.default_rng(bits * 1000 + cols)
    k, nc = 1 << bits, -(-cols // 64)
    rows, want = [], []
    for _ in range(3):
        d, dmin = np.float16(rng.uniform(-1e-3, 1e-3)), np.float16(rng.uniform(-0.05, 0.05))
        cb = np.sort(rng.integers(0, 128, k))
        s, m = rng.integers(0, 64, 2 * nc), rng.integers(0, 64, 2 * nc)
        q = rng.integers(0, k, 64 * nc)
        q[cols:] = 0  # padding codes are 0
        rows.append(np.frombuffer(_spec_row(d, dmin, cb, s, m, q, bits, cols), np.uint8))
        c = np.arange(cols)
        a = np.float32(d) * s[c // 32].astype(np.float32)  # (cols,) d * s, float32
        b = np.float32(dmin) * m[c // 32].astype(np.float32)
        want.append(a * cb[q[:cols]].astype(np.float32) - b)
    data = np.stack(rows)
    assert data.shape == (3, km.row_bytes(cols, bits))
    for got in (km.dequantize_rows(data, bits, cols), km.dequantize_rows_fast(data, bits, cols),
                q_dequantize(data, f"km{bits}", (3, cols))):
        assert np.array_equal(got.view(np.uint32), np.stack(want).view(np.uint32))
    f = km.split_rows(data, bits, cols)  # the NumPy encoder is the decoder's inverse
    assert np.array_equal(km.encode_rows(f["d"], f["dmin"], f["cb"], f["s"], f["m"], f["q"],
                                         bits), data)


def test_row_bytes_and_bits_per_weight():
    assert km.row_bytes(1536, 4) == 4 + 16 + 24 * 35  # 4.479 bpw, Q4_K: 4.5
    assert km.row_bytes(576, 4) == 4 + 16 + 9 * 35  # 4.653 bpw
    assert 8 * km.row_bytes(4096, 3) / 4096 == 3.375 + 96 / 4096
    assert 8 * km.row_bytes(4096, 2) / 4096 == 2.375 + 64 / 4096
    assert km.row_bytes(1, 2) == 4 + 4 + 19
    assert km.quantize(_matrix(3, 1536), 4).bpw == pytest.approx(8 * 860 / 1536)


# -- the quantizer ------------------------------------------------------------------------------
CASES = [  # (rows, cols, bits, kind, importance): odd lengths, flat and one-signed rows
    (3, 100, 4, "t", False), (2, 1, 3, "t", True), (2, 130, 2, "t", True),
    (1, 64, 4, "const", False), (2, 33, 3, "abs", False), (1, 200, 4, "t", True),
    (2, 64, 2, "zero", True),
]


@pytest.mark.parametrize("rows,cols,bits,kind,weighted", CASES)
def test_numba_equals_numpy_reference(rows, cols, bits, kind, weighted):
    rng = np.random.default_rng(cols + bits)
    w = _matrix(rows, cols, seed=cols)
    w = {"t": w, "abs": np.abs(w), "const": np.full_like(w, -0.3), "zero": 0 * w}[kind]
    imp = rng.uniform(0.05, 3.0, cols).astype(np.float32) if weighted else None
    fast = km.quantize(w, bits, importance=imp).data
    x, a = km._check_input(w, imp, "t")
    ref = quantize_rows_reference(x, a, bits, km.MAX_ITER)
    bad = np.flatnonzero((fast != ref).any(axis=1))
    assert bad.size == 0, f"row {bad[0]} differs: {np.flatnonzero(fast[bad[0]] != ref[bad[0]])}"


def test_registry_codec_is_the_file_rows_and_deterministic():
    w = _matrix(5, 100)
    packed = q_quantize(w, "km3")
    assert packed.shape == (5, km.row_bytes(100, 3))
    assert np.array_equal(packed, km.quantize(w, 3).data)
    assert np.array_equal(q_dequantize(packed, "km3", w.shape), km.quantize(w, 3).dequantize())
    w3 = _matrix(24, 40).reshape(2, 12, 40)  # leading dims are rows
    assert q_dequantize(q_quantize(w3, "km4"), "km4", w3.shape).shape == w3.shape
    with pytest.raises(QuantizationError, match="needs"):
        q_dequantize(packed[:, :-1], "km3", w.shape)
    # deterministic, and independent of the thread count (rows are independent)
    big = _matrix(64, 300, seed=5)
    a = km.quantize(big, 4).data
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert np.array_equal(km.quantize(big.copy(), 4).data, a)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_learning_never_loses_to_the_uniform_start(bits):
    """Per row, the final (weighted) error <= that of the Q4_K-like start, and it drops overall."""
    w = _matrix(48, 512, seed=bits)
    imp = np.random.default_rng(9).gamma(0.5, 1.0, 512).astype(np.float32)
    for a in (None, imp):
        start = _rel(w, km.quantize(w, bits, importance=a, max_iter=0).dequantize(), a)
        final = _rel(w, km.quantize(w, bits, importance=a).dequantize(), a)
        assert (final <= start * (1 + 1e-12)).all()
        assert final.sum() < 0.995 * start.sum()
    plain = _rel(w, km.quantize(w, bits).dequantize(), imp).sum()
    assert _rel(w, km.quantize(w, bits, importance=imp).dequantize(), imp).sum() < plain


def test_every_weight_is_within_its_block_grid_bound():
    """Nearest-code assignment: |w - w'| <= half the largest codebook gap of the block (times
    d*s), or the distance outside the block's grid, plus float32 rounding."""
    w = _matrix(6, 200)
    for bits in (2, 3, 4):
        data = km.quantize(w, bits).data
        f = km.split_rows(data, bits, 200)
        c = np.arange(200) // 32
        a = (f["d"][:, None] * f["s"][:, c]).astype(np.float64)  # (rows, cols)
        b = (f["dmin"][:, None] * f["m"][:, c]).astype(np.float64)
        lo, hi = a * f["cb"][:, :1] - b, a * f["cb"][:, -1:] - b
        gap = np.diff(f["cb"], axis=1).max(axis=1)[:, None] * a / 2
        bound = np.maximum(lo - w, 0) + np.maximum(w - hi, 0) + gap + 1e-6 * np.abs(w).max()
        assert (np.abs(km.dequantize_rows(data, bits, 200) - w) <= bound).all()


def test_beats_ggml_q4_k_on_real_ffn_down():
    from gguflite.default_model import default_model_path

    with gguflite.open(default_model_path()) as f:
        w = np.ascontiguousarray(f.dequantize("blk.7.ffn_down.weight")[:64])  # (64, 1536)
    q4k = ggml_dequantize(int(GGMLType.Q4_K), ggml_quantize(int(GGMLType.Q4_K), w), w.size)
    err_q4k = _rel(w, q4k.reshape(w.shape)).sum()
    kmt = km.quantize(w, 4)
    assert kmt.bpw < 4.5
    assert _rel(w, kmt.dequantize()).sum() < 0.9 * err_q4k


# -- edge cases (one line each says why) ------------------------------------------------------
def test_edge_cases():
    # all-zero rows are exact
    assert not km.quantize(np.zeros((3, 70), np.float32), 2).dequantize().any()
    # constant rows, either sign, come back within fp16-and-6-bit rounding; tiny weights lose
    # precision (d = range / 7560 is an fp16 subnormal below range 0.46, zero below 2e-4 or so)
    for v, tol in ((0.25, 2e-3), (-3.0, 2e-3), (2e-3, 2e-2), (1e-4, 0.1)):
        w = np.full((2, 50), v, np.float32)
        assert np.abs(km.quantize(w, 4).dequantize() - v).max() <= tol * abs(v), v
    # empty tensors: no rows, no columns
    for shape in ((0, 7), (5, 0), (0, 0)):
        kmt = km.quantize(np.zeros(shape, np.float32), 3)
        assert kmt.dequantize().shape == shape and kmt.data.shape[0] == shape[0]
        assert km.matvec(kmt, np.zeros(shape[1], np.float32)).shape == (shape[0],)
    # a 1-D array is one row; odd lengths work
    assert km.quantize(np.linspace(-1, 1, 7, dtype=np.float32), 4).shape == (1, 7)
    # matvec is the decoded matrix times x
    kmt = km.quantize(_matrix(9, 100), 4)
    x = np.random.default_rng(1).standard_normal(100).astype(np.float32)
    assert np.allclose(km.matvec(kmt, x), kmt.dequantize().astype(np.float64) @ x, rtol=1e-6)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, 1e9])
def test_bad_values_name_the_index(value):
    w = _matrix(4, 10)
    w[2, 7] = value
    with pytest.raises(QuantizationError, match=r"blk\.3\.ffn_up\.weight.*index \(2, 7\)"):
        km.quantize(w, 4, name="blk.3.ffn_up.weight")


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=5), "bits must be"),
    (dict(importance=np.ones(3)), r"importance must have shape \(10,\)"),
    (dict(importance=-np.ones(10)), r"importance\[0\]"),
    (dict(importance=np.full(10, np.nan)), "finite"),
    (dict(max_iter=-1), "max_iter"),
])
def test_bad_arguments(kwargs, match):
    kw = dict(bits=4) | kwargs
    with pytest.raises(QuantizationError, match=match):
        km.quantize(_matrix(4, 10), kw.pop("bits"), **kw)


# -- storage ----------------------------------------------------------------------------------
def _write(path, tensors, items_edit=None, skip_companion=False):
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama", gguflite.GGUFValueType.STRING)
        w.add_tensor("plain.weight", shape=(2, 3), type=GGMLType.F32,
                     data=np.arange(6, dtype=np.float32).reshape(2, 3))
        for name, kmt in tensors.items():
            if not skip_companion:
                for tname, shape, ttype, data in km.to_gguf_tensors(name, kmt):
                    w.add_tensor(tname, shape=shape, type=ttype, data=data)
            items = km.metadata_items(name, kmt)
            w.add_items(items_edit(items) if items_edit else items)


def test_gguf_round_trip_and_other_readers(tmp_path):
    tensors = {
        "blk.0.ffn_down.weight": km.quantize(_matrix(24, 192), 4),
        "blk.0.attn_q.weight": km.quantize(_matrix(16, 100), 3),
        "blk.0.ffn_up.weight": km.quantize(_matrix(9, 1), 2),
        "empty.weight": km.quantize(np.zeros((0, 40), np.float32), 4),
    }
    path = tmp_path / "km.gguf"
    _write(path, tensors)
    with gguflite.open(path) as f:
        assert km.km_tensor_names(f) == list(tensors)
        assert km.is_km_tensor(f, "blk.0.ffn_down.weight") and not km.is_km_tensor(f, "plain")
        for name, kmt in tensors.items():
            back = km.from_gguf(f, name)
            assert (back.bits, back.shape) == (kmt.bits, kmt.shape)
            assert np.array_equal(back.data, kmt.data) and not back.data.flags.writeable
            assert np.array_equal(back.dequantize(), kmt.dequantize())  # read-only input
    assert validate(path, deep=True).findings == []
    r = gguf.GGUFReader(path)  # another GGUF reader sees a standard I8 tensor and keys
    by_name = {t.name: t for t in r.tensors}
    for name, kmt in tensors.items():
        t = by_name[name + km.COMPANION_SUFFIX]
        assert t.tensor_type == gguf.GGMLQuantizationType.I8
        assert list(t.shape) == [kmt.data.shape[1], kmt.data.shape[0]]  # ne0 first
        assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(kmt.data.shape),
                              kmt.data)
        field = r.fields[f"{km.KEY_PREFIX}{name}.bits"]
        assert int(field.parts[field.data[0]][0]) == kmt.bits


def _poke(kmt: km.KMTensor, row: int, byte: int, value: int) -> km.KMTensor:
    data = kmt.data.copy()
    data[row, byte] = value
    return km.KMTensor(kmt.bits, kmt.shape, data)


def test_corrupt_files_raise_format_errors_and_v26(tmp_path):
    name = "blk.0.attn_k.weight"
    kmt = km.quantize(_matrix(8, 100), 4)
    wrong_len = km.KMTensor(4, (8, 100), np.zeros((8, km.row_bytes(100, 4) + 1), np.uint8))

    def set_key(suffix, value):
        return lambda items: [(k, value if k.endswith(suffix) else v, t, e)
                              for k, v, t, e in items]

    cases = {  # label: (tensor, key edit, skip companion) -> error class, rule
        "wrong row_bytes": (wrong_len, None, False, TensorInfoError, "KM4"),
        "codebook > 127": (_poke(kmt, 5, 4 + 15, 200), None, False, TensorInfoError, "KM5"),
        "descending codebook": (_poke(kmt, 2, 4 + 3, 0), None, False, TensorInfoError, "KM5"),
        "d is inf": (_poke(kmt, 1, 1, 0x7C), None, False, TensorInfoError, "KM5"),
        "bits 5": (kmt, set_key(".bits", 5), False, MetadataError, "KM2"),
        "bits 3 (row length)": (kmt, set_key(".bits", 3), False, TensorInfoError, "KM4"),
        "missing shape key": (kmt, lambda items: items[:1], False, MetadataError, "KM1"),
        "missing companion": (kmt, None, True, TensorInfoError, "KM3"),
    }
    for label, (t, edit, skip, error, rule) in cases.items():
        path = tmp_path / f"{label}.gguf"
        _write(path, {name: t}, edit, skip)
        with gguflite.open(path) as f, pytest.raises(error) as exc:
            km.from_gguf(f, name)
        assert exc.value.rule == rule, label
        assert name in str(exc.value), label
        found = [x for x in validate(path).findings if x.rule == "V26"]
        assert found and rule in found[0].message, (label, found)
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "codebook > 127.gguf")])
    assert result.exit_code != 0 and "V26" in result.stdout + result.stderr
