"""Compute kernels of the CPU runtime (Numba): fused dequantize-and-dot mat-vec for decode,
mat-mul for prefill and embedding row lookup, straight from the memory-mapped weight bytes.

    from gguflite.runtime.kernels import Linear, get_rows, NATIVE_TYPES, prepare_weight
    lin = Linear(f.array(name), ti.type, shape=ti.shape, name=name)
    y = lin.matvec(x)                          # (in,) -> (out,)
    Y = lin.matmul(X)                          # (n_tok, in) -> (n_tok, out)
    Linear.matvec_many([lq, lk, lv], x, outs=[yq, yk, yv])
    E = get_rows(data, type, shape=(vocab, dim), ids=ids)
    km = KMLinear.from_gguf(f, name)           # gguflite's KM2/3/4 tensors (a Linear)

KMLinear is a Linear whose ``kind`` is a KM pseudo kind (km_rows.KM_KINDS), so KM weights run
in the same drivers, matvec_many groups and fused decode step as the ggml types.

Modules: vector_ir, vector_f32 and vector_km (LLVM vector intrinsics), activations (int8
activation quantization), legacy / kquants / ternary / km_rows / floats (row kernels per type
family), dispatch (parallel drivers), linear (this API), km (KMLinear over gguflite.quants.km),
threads (the omp layer).
"""

from __future__ import annotations

from . import threads as _threads  # noqa: F401  (selects the omp layer first)
from .km import KM_TYPE_NAMES, KMLinear
from .linear import (
    BLAS_MIN_TOKENS,
    NATIVE_TYPES,
    Linear,
    get_rows,
    prepare_weight,
    share_kinds,
)
from .threads import threading_layer
from .vector_ir import PORTABLE

__all__ = ["BLAS_MIN_TOKENS", "KM_TYPE_NAMES", "NATIVE_TYPES", "PORTABLE", "KMLinear", "Linear",
           "get_rows", "prepare_weight", "share_kinds", "threading_layer"]
