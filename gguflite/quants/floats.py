"""Unquantized float types: F32, F16, BF16 (block size 1)."""

from __future__ import annotations

import numpy as np

from ..constants import GGMLType
from ._numba_common import FP16_TO_F32
from .base import Codec


class F32(Codec):
    name = "f32"
    ggml_type = GGMLType.F32
    requantize_stable = True

    @classmethod
    def max_error(cls, blocks):
        return np.zeros(blocks.shape[0])  # exact

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return np.ascontiguousarray(blocks, dtype="<f4").view(np.uint8)  # (n, 4)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return np.ascontiguousarray(blocks).view("<f4").astype(np.float32)  # (n, 1)


class F16(Codec):
    name = "f16"
    ggml_type = GGMLType.F16
    requantize_stable = True

    @classmethod
    def max_error(cls, blocks):
        # half an fp16 ulp: 2**-11 relative, 2**-25 absolute below the normal range; inf on overflow
        a = np.abs(np.asarray(blocks, np.float64)).max(axis=1)
        return np.where(a >= 65520.0, np.inf, np.maximum(a * 2.0**-11, 2.0**-25))

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        # numpy rounds float32 -> float16 to nearest even (overflow -> inf), as ggml does
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(blocks.astype("<f2")).view(np.uint8)  # (n, 2)

    @classmethod
    def dequantize_blocks(cls, blocks):
        # ggml's table: exact, and a signalling NaN comes back quiet as in ggml_fp16_to_fp32
        return FP16_TO_F32[np.ascontiguousarray(blocks).view("<u2")]  # (n, 1)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; NaN stays quiet."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 64).astype(np.uint16), rounded)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


class BF16(Codec):
    name = "bf16"
    ggml_type = GGMLType.BF16
    requantize_stable = True

    @classmethod
    def max_error(cls, blocks):
        # half a bf16 ulp: 2**-8 relative (2**-134 absolute among subnormals); rounding up past
        # the float32 range gives inf
        a = np.abs(np.asarray(blocks, np.float64)).max(axis=1)
        return np.where(a >= 3.3961775e38, np.inf, np.maximum(a * 2.0**-8, 2.0**-134))

    @classmethod
    def quantize_blocks(cls, blocks, importance):
        return f32_to_bf16_bits(blocks).astype("<u2").view(np.uint8)  # (n, 2)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return bf16_bits_to_f32(np.ascontiguousarray(blocks).view("<u2"))  # (n, 1)
