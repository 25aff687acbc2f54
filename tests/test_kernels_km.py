"""KMLinear: gguflite's KM2/3/4 codebook tensors behind the Linear interface."""

from __future__ import annotations

import numpy as np
import pytest
from gguflite.runtime.kernels import BLAS_MIN_TOKENS, KMLinear, Linear
from test_kernels_matvec import rand_weight

from gguflite.constants import GGMLType
from gguflite.errors import ModelError
from gguflite.quants import km


def rel_err(y: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.mark.parametrize("bits,granularity,shape", [
    (4, "row", (37, 576)),
    (3, "row", (20, 203)),  # a row length that is not a multiple of 8
    (2, (4, 64), (19, 256)),  # codebooks shared by 4 rows x 64 columns
])
def test_km_linear_matches_decoded_weights(bits, granularity, shape):
    rng = np.random.default_rng(bits)
    w = rng.standard_normal(shape).astype(np.float32)
    kmt = km.quantize(w, bits, granularity=granularity, max_iter=5)
    lin = KMLinear(kmt, name="blk.0.ffn_up.weight")
    ref_w = kmt.dequantize(reference=True).astype(np.float64)
    np.testing.assert_array_equal(lin.dequantize(), ref_w.astype(np.float32))
    x = rng.standard_normal(shape[1]).astype(np.float32)
    out = np.empty(shape[0], np.float32)
    assert lin.matvec(x, out=out) is out
    assert rel_err(out, ref_w @ x) <= 2e-6  # exact weights, float32 sums
    X = rng.standard_normal((BLAS_MIN_TOKENS + 1, shape[1])).astype(np.float32)
    assert rel_err(lin.matmul(X), X.astype(np.float64) @ ref_w.T) <= 2e-6
    assert rel_err(lin.matmul(X[:2]), X[:2].astype(np.float64) @ ref_w.T) <= 2e-6
    with pytest.raises(ModelError, match="blk.0.ffn_up.weight"):
        lin.matvec(np.zeros(shape[1] + 1, np.float32))


def test_matvec_many_mixes_km_and_quantized_weights():
    rng = np.random.default_rng(9)
    kml = KMLinear(km.quantize(rng.standard_normal((24, 576)).astype(np.float32), 4,
                               max_iter=3), name="km")
    q = Linear(rand_weight(rng, "Q8_0", 16, 576), GGMLType.Q8_0, (16, 576), name="q")
    q2 = Linear(rand_weight(rng, "Q8_0", 8, 576), GGMLType.Q8_0, (8, 576), name="q2")
    x = rng.standard_normal(576).astype(np.float32)
    ys = Linear.matvec_many([q, kml, q2], x)
    np.testing.assert_array_equal(ys[0], q.matvec(x))
    np.testing.assert_array_equal(ys[1], kml.matvec(x))
    np.testing.assert_array_equal(ys[2], q2.matvec(x))
