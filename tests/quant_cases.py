"""Shared inputs and bitwise assertions for the codec tests (legacy, ternary, properties)."""

from __future__ import annotations

import numpy as np
import pytest


def input_cases() -> dict[str, np.ndarray]:
    """Named float32 inputs of shape (rows, 256): 8 legacy blocks or 1 ternary block per row."""
    rng = np.random.default_rng(20261125)
    c: dict[str, np.ndarray] = {}
    # Gaussian weights: the common case
    c["normal"] = rng.standard_normal((32, 256))
    # a large offset and a small range: the min of Q4_1 / Q5_1 dominates
    c["offset"] = rng.uniform(10, 11, (8, 256))
    # heavy tails (Student t, 2 degrees of freedom)
    c["heavy"] = rng.standard_t(2, (8, 256))
    # all-zero blocks: scale 0, and Q4_0 stores d = -0.0 (0.0 / -8)
    c["zeros"] = np.zeros((1, 256))
    # -0.0 everywhere: C's loops keep max = +0.0 but min = -0.0
    c["neg_zeros"] = np.full((1, 256), -0.0)
    # mixed signed zeros: the first zero decides the sign of Q4_1's stored min
    c["mixed_zeros"] = rng.choice([0.0, -0.0], (2, 256))
    # exact halves with scale 1 in Q8_0 (roundf rounds them away from zero, np.round to even)
    h = rng.integers(-253, 254, (4, 256)) / 2
    h[:, ::32] = 127
    c["halves_q8"] = h
    # exact truncation boundaries in Q4_0 (d = 1: x + 8.5 is an integer)
    h = rng.integers(-16, 16, (4, 256)) / 2
    h[:, ::32] = -8
    c["halves_q4"] = h
    # the same for Q5_0 (d = 1: x + 16.5 is an integer)
    h = rng.integers(-32, 32, (4, 256)) / 2
    h[:, ::32] = -16
    c["halves_q5"] = h
    # equal magnitudes with opposite signs: Q4_0 / Q5_0 take the sign of the first
    t = rng.uniform(-1, 1, (4, 256))
    t[:2, 3::32], t[:2, 7::32], t[2:, 3::32], t[2:, 7::32] = 2.0, -2.0, -2.0, 2.0
    c["sign_ties"] = t
    # subnormal blocks: 1/d overflows to inf and C's float->int casts see inf/NaN
    c["subnormal"] = rng.standard_normal((2, 256)) * 1e-40
    # tiny scales: fp16 subnormal scales, scales that round to 0
    c["tiny"] = rng.standard_normal((4, 256)) * np.array([1e-6, 1e-8, 1e-30, 1e-37])[:, None]
    # large values: the fp16 scale overflows to inf (ggml stores inf; so do we)
    c["huge"] = rng.standard_normal((4, 256)) * np.array([1e5, 1e7, 1e10, 1e30])[:, None]
    # max - min overflows float32: Q4_1 / Q5_1 scale is inf and 1/d is 0
    e = rng.uniform(-3e38, 3e38, (2, 256))
    e[:, ::32], e[:, 1::32] = 3.4e38, -3.4e38
    c["extreme"] = e
    # one outlier per block
    o = rng.standard_normal((4, 256))
    o[:, 5::32] *= 1000
    c["outlier"] = o
    # constant blocks: max == min, so Q4_1's d is 0
    c["constant"] = np.stack([np.full(256, 0.7), np.full(256, -3.2)])
    return {name: v.astype(np.float32) for name, v in c.items()}


CASES = input_cases()
# The gguf package's NumPy quantizers ignore C's signed-zero order; elsewhere they match ggml.
GGUF_SIGNED_ZERO_CASES = {"neg_zeros", "mixed_zeros"}


def assert_same_bytes(got: np.ndarray, want: np.ndarray, block_bytes: int, what: str,
                      inputs: np.ndarray | None = None) -> None:
    """Bytewise equality of two packed tensors; on failure name the worst block.

    The worst block is the one with the most differing bytes; its input values are shown when
    ``inputs`` (the float tensor that was quantized) is given.
    """
    g = np.ascontiguousarray(got).view(np.uint8).reshape(-1, block_bytes)
    w = np.ascontiguousarray(want).view(np.uint8).reshape(-1, block_bytes)
    assert g.shape == w.shape, f"{what}: {g.shape} blocks != {w.shape}"
    diff = g != w  # (n_blocks, block_bytes)
    bad = np.flatnonzero(diff.any(axis=1))
    if bad.size:
        b = int(np.argmax(diff.sum(axis=1)))
        cols = np.flatnonzero(diff[b])
        msg = (f"{what}: {bad.size} of {g.shape[0]} blocks differ (first {int(bad[0])}); worst "
               f"is block {b} with {cols.size} bytes, at {cols[:8].tolist()}: got "
               f"{g[b, cols[:8]].tolist()}, want {w[b, cols[:8]].tolist()}")
        if inputs is not None:
            x = inputs.reshape(g.shape[0], -1)[b]
            msg += f"; its input starts {x[:8].tolist()}"
        pytest.fail(msg)


def assert_same_floats(got: np.ndarray, want: np.ndarray, block_size: int, what: str) -> None:
    """Bitwise float32 equality (NaN payloads included); on failure name the worst block."""
    g = np.ascontiguousarray(got, dtype=np.float32).reshape(-1, block_size)
    w = np.ascontiguousarray(want, dtype=np.float32).reshape(-1, block_size)
    diff = g.view(np.uint32) != w.view(np.uint32)
    if diff.any():
        with np.errstate(invalid="ignore"):
            err = np.where(diff, np.abs(g.astype(np.float64) - w), 0.0)
        err = np.where(np.isnan(err), np.inf, err).max(axis=1)
        b = int(np.argmax(err))
        j = np.flatnonzero(diff[b])[:4]
        pytest.fail(f"{what}: {int(diff.any(axis=1).sum())} of {g.shape[0]} blocks differ; "
                    f"worst is block {b} (max |diff| {err[b]}), values {j.tolist()}: got "
                    f"{g[b, j].tolist()}, want {w[b, j].tolist()}")
