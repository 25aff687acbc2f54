"""The KV cache of the Numba backend: float16 by default (float32 as an option), grown as the
context fills instead of allocated for the whole context up front.

Numba's CPU target has no float16 type, so an f16 cache is stored as uint16 bit patterns and
converted with LLVM's ``fptrunc`` / ``fpext`` (one ``vcvtps2ph`` / ``vcvtph2ps`` with F16C,
which every x86-64 machine this runs on has; the weight kernels rely on it too). ``kv_load``
and ``kv_store`` dispatch on the cache's dtype at compile time, so one attention kernel serves
both layouts (compiled once per layout actually used).

Rounding: float32 -> float16 rounds to nearest even, as ggml's ``GGML_FP32_TO_FP16`` (llama.cpp
keeps its cache in F16 by default too).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

KV_TYPES = {"f16": np.uint16, "f32": np.float32}
GROW_MIN = 256  # first allocation (tokens); then doubled up to n_ctx


@intrinsic
def _half_bits(typingctx, x):
    """float32 -> the IEEE half's bits (uint16), rounding to nearest even."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def _half_value(typingctx, u):
    """The IEEE half with bits u (uint16) -> float32 (exact)."""

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


def kv_load(row, d):
    """row[d] of a cache row as float32 (f16 or f32 cache)."""


def kv_store(row, d, value):
    """row[d] = value (float32) in the cache's own type."""


@overload(kv_load, inline="always")
def _kv_load(row, d):
    if row.dtype == types.uint16:
        return lambda row, d: _half_value(row[d])
    return lambda row, d: row[d]


@overload(kv_store, inline="always")
def _kv_store(row, d, value):
    if row.dtype == types.uint16:
        def store_half(row, d, value):
            row[d] = _half_bits(np.float32(value))
        return store_half

    def store(row, d, value):
        row[d] = value
    return store


class KVCache:
    """Keys and values of every layer, (n_layer, n_kv_head, capacity, head_dim) each.

    ``reserve(n)`` makes room for positions 0 .. n - 1, doubling the capacity (at most
    ``n_ctx``) and copying what is cached; kernels take ``k``/``v`` afresh on every call.
    """

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_ctx: int,
                 kv_type: str = "f16"):
        if kv_type not in KV_TYPES:
            from gguflite.errors import ModelError

            raise ModelError(f"KV cache type {kv_type!r}: choose one of {', '.join(KV_TYPES)}")
        self.kv_type, self.dtype = kv_type, KV_TYPES[kv_type]
        self.shape = (n_layer, n_kv_head, 0, head_dim)
        self.n_ctx = n_ctx
        self.k = np.zeros(self.shape, self.dtype)
        self.v = np.zeros(self.shape, self.dtype)

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def reserve(self, n: int) -> None:
        """Room for n positions (n <= n_ctx)."""
        if n <= self.capacity:
            return
        cap = min(self.n_ctx, max(n, GROW_MIN, 2 * self.capacity))
        layer, heads, _, hd = self.shape
        k = np.zeros((layer, heads, cap, hd), self.dtype)
        v = np.zeros_like(k)
        k[:, :, :self.capacity] = self.k
        v[:, :, :self.capacity] = self.v
        self.k, self.v = k, v

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes
