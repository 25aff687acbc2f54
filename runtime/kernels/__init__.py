"""Compute kernels of the CPU runtime (Numba): fused dequantize-and-dot mat-vec for decode,
mat-mul for prefill and embedding row lookup, straight from the memory-mapped weight bytes.

    from gguflite.runtime.kernels import Linear, get_rows, NATIVE_TYPES, prepare_weight
    lin = Linear(f.array(name), ti.type, shape=ti.shape, name=name)
    y = lin.matvec(x)                          # (in,) -> (out,)
    Y = lin.matmul(X)                          # (n_tok, in) -> (n_tok, out)
    Linear.matvec_many([lq, lk, lv], x, outs=[yq, yk, yv])
    E = get_rows(data, type, shape=(vocab, dim), ids=ids)
    km = KMLinear.from_gguf(f, name)           # gguflite's KM2/3/4 codebook tensors

Linear.matvec_many accepts KMLinear members (they run their own mat-vec).

Modules: vector_ir and vector_f32 (LLVM vector intrinsics), activations (int8 activation
quantization), legacy / kquants / ternary / floats (row kernels per type family), dispatch
(parallel drivers), linear (this API), km (KMLinear over gguflite.quants.km), threads (the omp
layer).
"""

from __future__ import annotations

from . import threads as _threads  # noqa: F401  (selects the omp layer first)
from .km import KMLinear
from .linear import (
    BLAS_MIN_TOKENS,
    NATIVE_TYPES,
    Linear,
    get_rows,
    prepare_weight,
)
from .threads import threading_layer
from .vector_ir import PORTABLE

__all__ = ["BLAS_MIN_TOKENS", "NATIVE_TYPES", "PORTABLE", "KMLinear", "Linear", "get_rows",
           "prepare_weight", "threading_layer"]
