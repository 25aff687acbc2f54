"""``KMLinear``: a ``Linear`` over gguflite's KM v2 tensors (KM2 / KM3 / KM4).

A KM tensor (spec/extensions-km.md, :mod:`gguflite.quants.km`) has no ggml type id: it is read
with :func:`gguflite.quants.km.from_gguf` (a zero-copy, validated view of the mapped file) and
runs in the same parallel drivers as every ggml type, under a pseudo kind id (km_rows.KM_KINDS:
1002 / 1003 / 1004). So KM weights take part in ``Linear.matvec_many`` groups and in the fused
single-call decode step (runtime/llama_decode.py) exactly like Q4_K weights:

- decode: the fused int8 mat-vec of km_rows (vpshufb codebook lookup, vpmaddubsw), the
  activation padded with zeros to a multiple of 64 columns inside the driver;
- prefill (``BLAS_MIN_TOKENS`` tokens and more): float32 tiles dequantized exactly, then BLAS;
- ``rows(ids)``: embedding rows, exactly dequantized.

    kml = KMLinear.from_gguf(f, "blk.0.ffn_down.weight", shape=(576, 1536))
    y = kml.matvec(x)                    # (1536,) -> (576,)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import ModelError
from ...quants import km as _km
from . import dispatch
from .km_rows import KM_KINDS, row_bytes
from .linear import Linear, _kernel_array
from .threads import ensure_threading_layer

KM_TYPE_NAMES = tuple(f"KM{b}" for b in sorted(KM_KINDS))
"""The KM types the kernels run in place (``gguflite info`` lists them as native)."""


class KMLinear(Linear):
    """y = W @ x for a KM tensor, in place on its stored rows (a ``Linear`` with a KM kind).

    Parameters
    ----------
    kmt : gguflite.quants.km.KMTensor
        ``bits``, ``shape`` (rows, cols) and ``data``, the (rows, row_bytes) uint8 rows, typically
        a read-only view of a mapped file; nothing is copied when ``data`` is C-contiguous.
    name : the tensor name, for error messages.
    """

    __slots__ = ("bits",)

    def __init__(self, kmt: Any, *, name: str = "weight"):
        # Linear.__init__ is not called: it needs a ggml type id. The same slots are set here.
        bits = int(kmt.bits)
        if bits not in KM_KINDS:
            raise ModelError(f"{name}: KM bits must be 2, 3 or 4, got {bits}")
        rows, cols = (int(s) for s in kmt.shape)
        if rows < 0 or cols <= 0:
            raise ModelError(f"{name}: a KM weight needs a shape (out, in) with in > 0, "
                             f"got {(rows, cols)}")
        rb = row_bytes(cols, bits)
        data = np.asarray(kmt.data)
        if data.nbytes != rows * rb or data.dtype.itemsize != 1:
            raise ModelError(f"{name}: KM{bits} rows of {cols} columns are {rb} bytes each; got "
                             f"{data.dtype} data of shape {data.shape} for {rows} rows")
        if not data.flags.c_contiguous:
            data = np.ascontiguousarray(data)
        flat = data.reshape(-1).view(np.uint8).view()  # a view we may mark read-only
        flat.setflags(write=False)
        self.name = name
        self.type = None  # no ggml type; ``kind`` selects the row kernels
        self.bits = bits
        self.kind = KM_KINDS[bits]
        self._kinds = dispatch.kinds_of(self.kind)
        self.out_features, self.in_features = rows, cols
        self.row_bytes = rb
        self._w = flat
        self._scratch = np.zeros(dispatch.scratch_bytes(cols), np.uint8)
        self._xshape = (cols,)
        ensure_threading_layer()

    @classmethod
    def from_gguf(cls, f: Any, name: str, shape: tuple[int, int] | None = None) -> KMLinear:
        """The KM tensor ``name`` of an open GGUFFile (see ``km.km_tensor_names``), zero-copy;
        with ``shape``, a ModelError unless the stored tensor has that (out, in) shape."""
        kmt = _km.from_gguf(f, name)
        if shape is not None and tuple(kmt.shape) != tuple(shape):
            raise ModelError(f"KM tensor {name!r} has shape {tuple(kmt.shape)}, expected "
                             f"{tuple(shape)} from the metadata")
        return cls(kmt, name=name)

    def __repr__(self) -> str:
        return (f"KMLinear({self.name!r}, KM{self.bits}, out={self.out_features}, "
                f"in={self.in_features})")

    @property
    def type_name(self) -> str:
        """'KM2', 'KM3' or 'KM4'."""
        return f"KM{self.bits}"

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (n,) of W as float32 (n, in), exactly dequantized (embedding lookup).

        Raises ModelError for an id outside [0, out_features).
        """
        ids = _kernel_array(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.out_features):
            bad = ids[(ids < 0) | (ids >= self.out_features)][0]
            raise ModelError(f"{self.name}: row id {int(bad)} outside [0, {self.out_features})")
        out = np.empty((ids.size, self.in_features), np.float32)
        if ids.size:
            dispatch.dequant_rows(self.kind, self._w, self.row_bytes, self.in_features, ids, 0,
                                  out, self._kinds)
        return out
