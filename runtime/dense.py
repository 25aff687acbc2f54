"""A float32 weight matrix with the kernels' ``Linear`` interface, decoded once at load.

Used for tensor types the fused kernels do not cover (after ``prepare_weight``) and as the
interim path while a type has no kernel: the tensor is dequantized to float32 once, and products
go through NumPy's BLAS (which uses every core by itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gguflite import quants
from gguflite.constants import GGMLType


class DenseLinear:
    """``y = W x`` with W (out, in) float32 held in memory.

    Parameters
    ----------
    data : array
        The tensor as ``GGUFFile.array`` returns it (typed view or uint8 rows).
    ggml_type : GGMLType
        The stored type.
    shape : (out, in)
    name : str
        Tensor name, for error messages.
    """

    def __init__(self, data: np.ndarray, ggml_type: GGMLType, *, shape: tuple[int, int],
                 name: str = "tensor"):
        self.name = name
        self.shape = shape
        self.ggml_type = ggml_type
        if ggml_type == GGMLType.F32:
            w = np.asarray(data, dtype=np.float32).reshape(shape)  # zero copy when mapped
        else:
            raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            w = quants.dequantize(raw, ggml_type, shape, name=name)  # (out, in) f32
        self.w = w  # (out, in) float32

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(in,) f32 -> (out,) f32."""
        return np.dot(self.w, x, out=out)

    def matmul(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n_tok, in) f32 -> (n_tok, out) f32."""
        return np.dot(x, self.w.T, out=out)

    @staticmethod
    def matvec_many(linears: Sequence[DenseLinear], x: np.ndarray,
                    outs: Sequence[np.ndarray]) -> None:
        """Several products of the same activation (q, k, v or gate, up)."""
        for lin, o in zip(linears, outs, strict=True):
            np.dot(lin.w, x, out=o)
