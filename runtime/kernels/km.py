"""``KMLinear``: the ``Linear`` interface over gguflite's k-means codebook tensors (KM2/3/4).

A KM tensor (spec/extensions-km.md) has no ggml type id, so it does not go through
``Linear(data, ggml_type, shape)``; it is read with :func:`gguflite.quants.km.from_gguf` and
wrapped here. Decode uses the fused codebook mat-vec of :mod:`gguflite.quants.km_numba`
(eight codes looked up in registers per step, float32 activations, exact weights); prefill
decodes the weight exactly and multiplies with BLAS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ModelError
from ...quants import km as _km
from ...quants import km_numba as _km_nb
from .linear import _F32, BLAS_MIN_TOKENS, Linear, _kernel_array


class KMLinear:
    """y = W @ x for a KM tensor, with the methods of ``Linear`` (matvec, matmul, dequantize).

    Parameters
    ----------
    kmt : the KM tensor (codes and codebooks, typically zero-copy views of a mapped file).
    name : the tensor name, for error messages.
    """

    __slots__ = ("name", "bits", "out_features", "in_features", "_kmt", "_codes", "_book",
                 "_xshape")

    def __init__(self, kmt: _km.KMTensor, *, name: str = "weight"):
        self.name = name
        self.bits = kmt.bits
        self.out_features, self.in_features = (int(s) for s in kmt.shape)
        self._kmt = kmt
        self._codes = np.ascontiguousarray(kmt.codes).view(np.uint8)  # (rows, packed_bytes)
        self._book = kmt.codebook_f32()  # (n_codebooks, 2**bits) float32, converted once
        self._xshape = (self.in_features,)

    @classmethod
    def from_gguf(cls, f: Any, name: str, shape: tuple[int, int] | None = None) -> KMLinear:
        """The KM tensor ``name`` of an open GGUFFile (see ``km.km_tensor_names``); with
        ``shape``, a ModelError unless the stored tensor has that (out, in) shape."""
        kmt = _km.from_gguf(f, name)
        if shape is not None and tuple(kmt.shape) != tuple(shape):
            raise ModelError(f"KM tensor {name!r} has shape {tuple(kmt.shape)}, expected "
                             f"{tuple(shape)} from the metadata")
        return cls(kmt, name=name)

    @staticmethod
    def matvec_many(linears: Sequence[Any], x: np.ndarray,
                    outs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Several products of one activation; ``Linear.matvec_many`` takes KM members too."""
        return Linear.matvec_many(linears, x, outs=outs)

    def __repr__(self) -> str:
        return (f"KMLinear({self.name!r}, KM{self.bits}, out={self.out_features}, "
                f"in={self.in_features})")

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(in,) float32 -> (out,) float32."""
        if (x.__class__ is not np.ndarray or x.dtype is not _F32 or x.shape != self._xshape
                or not x.flags.c_contiguous):
            x = np.ascontiguousarray(x, dtype=np.float32)
            if x.shape != self._xshape:
                raise ModelError(f"{self.name}: activation of shape {x.shape}, expected "
                                 f"({self.in_features},)")
        if out is None:
            out = np.empty(self.out_features, np.float32)
        elif (out.__class__ is not np.ndarray or out.dtype is not _F32
              or out.shape != (self.out_features,) or not out.flags.c_contiguous
              or not out.flags.writeable):
            raise ModelError(f"{self.name}: out must be a writable C-contiguous float32 array of "
                             f"shape ({self.out_features},)")
        if self.out_features and self.in_features:
            _km_nb.km_matvec(self._codes, self._book, x, out, self._kmt.group_rows,
                             self._kmt.group_cols)
        else:
            out[:] = 0.0
        return out

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n_tok, in) float32 -> (n_tok, out) float32: one mat-vec per token below
        ``BLAS_MIN_TOKENS`` tokens, else the exactly decoded weight times X with BLAS."""
        X = _kernel_array(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ModelError(f"{self.name}: activations of shape {X.shape}, expected "
                             f"(n_tok, {self.in_features})")
        n_tok = X.shape[0]
        if out is None:
            out = np.empty((n_tok, self.out_features), np.float32)
        elif out.shape != (n_tok, self.out_features) or out.dtype != np.float32:
            raise ModelError(f"{self.name}: out must be float32 of shape "
                             f"({n_tok}, {self.out_features})")
        if n_tok < BLAS_MIN_TOKENS:
            for t in range(n_tok):
                out[t] = self.matvec(X[t])
            return out
        np.matmul(X, self.dequantize().T, out=out)
        return out

    def dequantize(self) -> np.ndarray:
        """(out, in) float32, exact (the stored codebook values)."""
        return self._kmt.dequantize()
