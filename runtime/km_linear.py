"""KM codebook tensors (``gguflite.quants.km``) behind the kernels' ``Linear`` interface.

A KM tensor ``NAME`` is stored as the companions ``NAME.kmc`` (packed codes) and ``NAME.kmb``
(codebooks) plus ``gguflite.km.NAME.*`` keys (spec/extensions-km.md). Decode (one token) uses
the fused Numba code-lookup-and-dot kernel ``km.matvec`` straight from the memory map; prefill
(many tokens) decodes the weight once to float32 on first use and goes through BLAS, since a
mat-vec per token would be far slower. Both compute ``W x`` with the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gguflite.errors import ModelError
from gguflite.quants import km
from gguflite.reader import GGUFFile


def is_km_tensor(f: GGUFFile, name: str) -> bool:
    """True when ``name`` is stored as KM companions (and not as a plain tensor)."""
    return name not in f.tensors and name + km.CODES_SUFFIX in f.tensors and (
        f"{km.KEY_PREFIX}{name}.bits" in f.metadata)


class KMLinear:
    """``y = W x`` for a KM tensor of numpy shape (out, in).

    Parameters
    ----------
    kmt : km.KMTensor
        Zero-copy views into the file (``km.from_gguf``).
    name : str
        Tensor name, for error messages.
    """

    def __init__(self, kmt: km.KMTensor, *, name: str = "tensor"):
        self.kmt = kmt
        self.name = name
        self.shape = kmt.shape
        self.book = np.ascontiguousarray(kmt.codebook_f32())  # (n_codebooks, 2**bits) f32
        self._dense: np.ndarray | None = None  # (out, in) f32, decoded on first matmul

    @classmethod
    def from_file(cls, f: GGUFFile, name: str, shape: tuple[int, int]) -> KMLinear:
        kmt = km.from_gguf(f, name)
        if tuple(kmt.shape) != tuple(shape):
            raise ModelError(f"KM tensor {name!r} has shape {kmt.shape}, expected {shape} "
                             "from the metadata")
        return cls(kmt, name=name)

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(in,) f32 -> (out,) f32 by the fused code-lookup kernel."""
        return km.matvec(self.kmt, x, out=out, codebook_f32=self.book)

    def matmul(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n_tok, in) f32 -> (n_tok, out) f32 through the decoded weight and BLAS."""
        if self._dense is None:
            self._dense = self.kmt.dequantize()  # (out, in) f32
        return np.dot(x, self._dense.T, out=out)

    @staticmethod
    def matvec_many(linears: Sequence[KMLinear], x: np.ndarray,
                    outs: Sequence[np.ndarray]) -> None:
        """Several products of the same activation (q, k, v or gate, up)."""
        for lin, o in zip(linears, outs, strict=True):
            lin.matvec(x, out=o)
