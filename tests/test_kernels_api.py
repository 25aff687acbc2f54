"""The kernel API contract: read-only inputs, one compiled signature, the omp layer, errors,
and the portable (non-x86) SIMD lowering."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from gguflite.runtime.kernels import Linear, dispatch, get_rows, prepare_weight, threading_layer
from portable_check import run_portable_check
from test_kernels_matvec import rand_weight, reference

from gguflite.constants import GGMLType
from gguflite.errors import ModelError, UnsupportedTypeError


def test_memmapped_read_only_weights(tmp_path):
    rng = np.random.default_rng(0)
    raw = rand_weight(rng, "Q4_1", 40, 576)
    path = tmp_path / "w.bin"
    raw.tofile(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    assert not mm.flags.writeable
    lin = Linear(mm, GGMLType.Q4_1, (40, 576), name="blk.0.attn_q.weight")
    x = rng.standard_normal(576).astype(np.float32)
    x.setflags(write=False)  # read-only activations too
    np.testing.assert_array_equal(lin.matvec(x), Linear(raw, GGMLType.Q4_1, (40, 576)).matvec(x))
    rows = get_rows(mm, GGMLType.Q4_1, (40, 576), np.array([1, 39]))
    np.testing.assert_array_equal(rows, reference(raw, "Q4_1")[[1, 39]])
    X = np.ascontiguousarray(np.broadcast_to(x, (9, 576)))
    X.setflags(write=False)
    assert lin.matmul(X).shape == (9, 40)


def test_one_signature_per_driver_and_omp_layer():
    rng = np.random.default_rng(1)
    for name, shape in [("Q8_0", (33, 576)), ("Q6_K", (7, 1536)), ("F16", (5, 2048)),
                        ("Q4_K", (300, 2048)), ("BF16", (3, 45))]:
        raw = rand_weight(rng, name, *shape)
        lin = Linear(raw, GGMLType[name], shape)
        x = rng.standard_normal(shape[1]).astype(np.float32)
        lin.matvec(x)
        lin.matmul(np.stack([x] * 2))
        lin.matmul(np.stack([x] * 9))
        Linear.matvec_many([lin, lin], x)
        get_rows(raw, GGMLType[name], shape, np.array([0]))
    for driver in (dispatch.matvec_group, dispatch.matvec_one, dispatch.dequant_rows):
        # one signature per kind set: the arrays' types (read-only weights, writable
        # buffers) and the integers never add a second one
        assert len({sig[:-1] for sig in driver.signatures}) == 1, (driver, driver.signatures)
        assert all(isinstance(sig[-1], dispatch.KindsType) for sig in driver.signatures)
    for name in ("Q6_K", "F16", "BF16"):  # each Linear compiled its own kind's kernels only
        kinds = dispatch.kinds_of(int(GGMLType[name]))._numba_type_
        assert any(sig[-1] == kinds for sig in dispatch.matvec_one.signatures), name
    assert threading_layer() == "omp"


def test_unsupported_type_names_the_tensor():
    raw = np.zeros((4, 66), np.uint8)
    with pytest.raises(UnsupportedTypeError, match="blk.3.ffn_up.weight.*IQ2_XXS"):
        Linear(raw, GGMLType.IQ2_XXS, (4, 256), name="blk.3.ffn_up.weight")
    with pytest.raises(UnsupportedTypeError, match="output.weight"):
        get_rows(raw, GGMLType.IQ2_XXS, (4, 256), np.array([0]), name="output.weight")
    with pytest.raises(UnsupportedTypeError, match="blk.0.x"):
        Linear(raw, 77, (4, 256), name="blk.0.x")
    with pytest.raises(UnsupportedTypeError, match="blk.0.y.*'Q9_9'"):  # a name, not an id
        Linear(raw, "Q9_9", (4, 256), name="blk.0.y")


def test_type_by_name():
    raw = rand_weight(np.random.default_rng(3), "Q8_0", 3, 64)
    x = np.random.default_rng(4).standard_normal(64).astype(np.float32)
    np.testing.assert_array_equal(Linear(raw, "q8_0", (3, 64)).matvec(x),
                                  Linear(raw, GGMLType.Q8_0, (3, 64)).matvec(x))


def test_prepare_weight_identity_for_native_types():
    raw = rand_weight(np.random.default_rng(2), "Q5_0", 3, 576)
    data, t = prepare_weight(raw, GGMLType.Q5_0, (3, 576))
    assert data is raw and t == GGMLType.Q5_0


def test_prepare_weight_refuses_undecodable_types():
    raw = np.zeros((2, 66), np.uint8)
    with pytest.raises(UnsupportedTypeError, match="blk.1.attn_v.weight"):
        prepare_weight(raw, GGMLType.IQ2_XXS, (2, 256), name="blk.1.attn_v.weight")


@pytest.mark.parametrize("bad", [
    dict(shape=(40, 575)),  # in_features not a multiple of 32
    dict(shape=(41, 576)),  # byte count does not match the shape
    dict(shape=(40,)),  # not 2-D
])
def test_shape_errors_name_the_tensor(bad):
    raw = rand_weight(np.random.default_rng(3), "Q8_0", 40, 576)
    with pytest.raises(ModelError, match="blk.0.attn_k.weight"):
        Linear(raw, GGMLType.Q8_0, bad["shape"], name="blk.0.attn_k.weight")


def test_call_errors():
    rng = np.random.default_rng(4)
    lin = Linear(rand_weight(rng, "Q8_0", 8, 64), GGMLType.Q8_0, (8, 64), name="w")
    with pytest.raises(ModelError, match="activation of shape"):
        lin.matvec(np.zeros(65, np.float32))
    with pytest.raises(ModelError, match="out must be"):
        lin.matvec(np.zeros(64, np.float32), out=np.zeros(8, np.float64))
    with pytest.raises(ModelError, match="out must be"):
        lin.matvec(np.zeros(64, np.float32), out=np.zeros(9, np.float32))
    with pytest.raises(ModelError, match="activations of shape"):
        lin.matmul(np.zeros((3, 65), np.float32))
    other = Linear(rand_weight(rng, "Q8_0", 8, 96), GGMLType.Q8_0, (8, 96), name="v")
    with pytest.raises(ModelError, match="in_features"):
        Linear.matvec_many([lin, other], np.zeros(64, np.float32))
    with pytest.raises(ModelError, match="row id 8 outside"):
        get_rows(rand_weight(rng, "Q8_0", 8, 64), GGMLType.Q8_0, (8, 64), np.array([8]))
    # float64 activations are converted, not refused
    assert lin.matvec(np.zeros(64)).dtype == np.float32


_PORTABLE_CHECK = textwrap.dedent("""
    import numpy as np
    from gguflite.runtime.kernels import PORTABLE, kquants, legacy
    from gguflite.runtime.kernels.activations import quantize_act
    from test_kernels_matvec import quantized_x, rand_weight, reference
    assert PORTABLE
    rng = np.random.default_rng(7)
    for name, fn in [("Q8_0", legacy.dot_q8_0), ("Q4_1", legacy.dot_q4_1),
                     ("Q4_K", kquants.dot_q4_k), ("Q6_K", kquants.dot_q6_k)]:
        raw = rand_weight(rng, name, 9, 512)
        x = rng.standard_normal(512).astype(np.float32)
        xq, xd, xsd = np.empty(512, np.int8), np.empty(16, np.float32), np.empty(32, np.float32)
        quantize_act(x, xq, xd, xsd)
        flat = raw.reshape(-1)
        y = np.array([fn(flat, r * raw.shape[1], 16, xq, xd, xsd) for r in range(9)])
        ref = reference(raw, name).astype(np.float64) @ quantized_x(x)
        err = np.abs(y - ref).max() / np.abs(ref).max()
        assert err <= 2e-6, (name, err)
    print("portable ok")
""")


def test_portable_lowering_gives_the_same_numbers(tmp_path):
    """The generic vector IR path (non-x86 hosts) computes the same integer dot products."""
    run_portable_check(_PORTABLE_CHECK, tmp_path)


def test_driver_source_fingerprint_is_current():
    """dispatch.py carries a fingerprint of the row-kernel sources it inlines; Numba's cache is
    keyed on dispatch.py's text, so an outdated fingerprint would let a stale cached driver run
    after a kernel edit. Update SOURCES_FINGERPRINT in dispatch.py to the value shown."""
    assert dispatch.SOURCES_FINGERPRINT == dispatch.kernel_sources_fingerprint()


@pytest.mark.parametrize("env,load,expected", [
    ({}, 99.0, "PASSIVE"),  # oversubscribed: spinning would stall every region
    ({}, 0.1, None),  # idle: keep libgomp's spin-then-sleep default
    ({"OMP_WAIT_POLICY": "ACTIVE"}, 99.0, None),  # the user's setting wins
    ({"GGUFLITE_OMP_WAIT": "active"}, 99.0, "ACTIVE"),
    ({"GGUFLITE_OMP_WAIT": "default"}, 99.0, None),
])
def test_omp_wait_policy_choice(monkeypatch, env, load, expected):
    from gguflite.runtime.kernels import threads

    for key in ("OMP_WAIT_POLICY", "GGUFLITE_OMP_WAIT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    assert threads._choose_wait_policy() == expected
