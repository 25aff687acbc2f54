"""The public kernel API: ``Linear`` (mat-vec / mat-mul on stored weights), ``get_rows`` and
``prepare_weight``.

Weights stay in their stored encoding (memory-mapped, read-only) for every type in
``NATIVE_TYPES``; ``prepare_weight`` converts anything else once, at load time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...constants import GGML_TYPE_TRAITS, GGMLType
from ...errors import ModelError, UnsupportedTypeError
from . import dispatch, gemm
from .threads import ensure_threading_layer

NATIVE_TYPES: frozenset[GGMLType] = dispatch.KERNEL_TYPES
"""Types the kernels run in place, in their stored encoding."""

# Prefill of the float and KM types: weights are dequantized to float32 tiles of at most this
# many elements for BLAS.
_TILE_ELEMENTS = 1 << 20
# Token count from which matmul uses the dequantize + BLAS path instead of int8 mat-vecs (types
# outside gemm.GEMM_TYPES only: those use the int8 matrix product from 2 tokens on).
BLAS_MIN_TOKENS = 8

_F32 = np.dtype(np.float32)
_EMPTY_W = np.zeros(0, np.uint8)
_EMPTY_W.setflags(write=False)
_EMPTY_Y = np.zeros(0, np.float32)


def _kernel_array(a, dtype) -> np.ndarray:
    """``a`` as a C-contiguous *writable* array of ``dtype`` (copied only when needed), so each
    driver sees one array type and keeps a single compiled signature."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def _as_type(ggml_type: int | str | GGMLType, name: str) -> GGMLType:
    """The GGMLType of an id, a member or a type name such as "Q8_0"."""
    try:
        if isinstance(ggml_type, str):
            return GGMLType[ggml_type.upper()]
        return GGMLType(int(ggml_type))
    except (KeyError, ValueError, TypeError):
        raise UnsupportedTypeError(f"{name}: unknown tensor type {ggml_type!r}") from None


def _flat_weight(data: np.ndarray, ggml_type: GGMLType, shape: tuple[int, int],
                 name: str) -> tuple[np.ndarray, int]:
    """Validate ``data`` against ``shape`` and return (flat read-only uint8 view, row bytes)."""
    if len(shape) != 2 or shape[0] < 0 or shape[1] <= 0:
        raise ModelError(f"{name}: a linear weight needs a 2-D shape (out, in), got {shape}")
    out_f, in_f = (int(s) for s in shape)
    block, type_size = GGML_TYPE_TRAITS[ggml_type]
    if ggml_type not in dispatch.FLOAT_TYPES and in_f % 32:
        raise ModelError(f"{name}: in_features {in_f} is not a multiple of 32, which the int8 "
                         f"activation blocks need ({ggml_type.name})")
    if in_f % block:
        raise ModelError(f"{name}: in_features {in_f} is not a multiple of the {ggml_type.name} "
                         f"block size {block}")
    row_bytes = in_f // block * type_size
    arr = np.asarray(data)
    if arr.nbytes != out_f * row_bytes:
        raise ModelError(f"{name}: {ggml_type.name} weight of shape {shape} needs "
                         f"{out_f * row_bytes} bytes, got {arr.nbytes} (array shape {arr.shape})")
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    flat = arr.reshape(-1).view(np.uint8)
    flat = flat.view()  # a view we may mark read-only without touching the caller's array
    flat.setflags(write=False)
    return flat, row_bytes


class Linear:
    """y = W @ x for a weight W of shape (out_features, in_features) in its stored encoding.

    Parameters
    ----------
    data : the tensor bytes as GGUFFile.array gives them: uint8 (out, row_bytes) for block
        types, float32 / float16 (out, in) for F32 / F16, uint16 (out, in) for BF16. Read-only
        arrays are fine; nothing is copied when ``data`` is C-contiguous.
    ggml_type : the tensor type; must be in ``NATIVE_TYPES`` (see ``prepare_weight``).
    shape : (out_features, in_features).
    name : the tensor name, for error messages.
    """

    __slots__ = ("name", "type", "kind", "out_features", "in_features", "row_bytes", "_w",
                 "_scratch", "_xshape", "_kinds")

    def __init__(self, data: np.ndarray, ggml_type: int | str | GGMLType, shape: Sequence[int], *,
                 name: str = "weight"):
        self.name = name
        self.type = _as_type(ggml_type, name)
        if self.type not in NATIVE_TYPES:
            raise UnsupportedTypeError(
                f"{name}: no kernel for {self.type.name}; convert it once with prepare_weight()"
            )
        shape = tuple(int(s) for s in shape)
        self._w, self.row_bytes = _flat_weight(data, self.type, shape, name)
        self.out_features, self.in_features = shape
        self.kind = int(self.type)
        self._kinds = dispatch.kinds_of(self.kind)  # compile this type's kernels only
        self._scratch = np.zeros(dispatch.scratch_bytes(self.in_features), np.uint8)
        self._xshape = (self.in_features,)
        ensure_threading_layer()

    def __repr__(self) -> str:
        return (f"Linear({self.name!r}, {self.type.name}, out={self.out_features}, "
                f"in={self.in_features})")

    # -- decode -----------------------------------------------------------------------------
    def _check_x(self, x: np.ndarray) -> np.ndarray:
        if (x.__class__ is not np.ndarray or x.dtype is not _F32 or x.shape != self._xshape
                or not x.flags.c_contiguous or not x.flags.writeable):
            x = _kernel_array(x, np.float32)
        if x.shape != self._xshape:
            raise ModelError(f"{self.name}: activation of shape {x.shape}, expected "
                             f"({self.in_features},)")
        return x

    def _check_out(self, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return np.empty(self.out_features, np.float32)
        if (out.__class__ is not np.ndarray or out.dtype is not _F32
                or out.shape != (self.out_features,) or not out.flags.c_contiguous
                or not out.flags.writeable):
            raise ModelError(f"{self.name}: out must be a writable C-contiguous float32 array of "
                             f"shape ({self.out_features},)")
        return out

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(in,) float32 -> (out,) float32. With ``out``, writes there and allocates nothing."""
        x = self._check_x(x)
        y = self._check_out(out)
        dispatch.matvec_one(self.kind, self._w, y, self.row_bytes, x, self._scratch,
                            self._kinds)
        return y

    @staticmethod
    def matvec_many(linears: Sequence[Linear], x: np.ndarray,
                    outs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Several mat-vecs on the same activation (q, k, v; gate, up).

        The activation is quantized once per group of up to 4 weights of one type, and each
        group runs in a single parallel region. All weights need the same in_features.
        """
        if not linears:
            return []
        lin0 = linears[0]
        x = _kernel_array(x, np.float32)
        if x.shape != (lin0.in_features,):
            raise ModelError(f"{lin0.name}: activation of shape {x.shape}, expected "
                             f"({lin0.in_features},)")
        for lin in linears[1:]:
            if lin.in_features != lin0.in_features:
                raise ModelError(f"matvec_many: {lin.name} has in_features {lin.in_features}, "
                                 f"{lin0.name} has {lin0.in_features}")
        if outs is None:
            ys = [np.empty(lin.out_features, np.float32) for lin in linears]
        else:
            if len(outs) != len(linears):
                raise ModelError(f"matvec_many: {len(linears)} weights but {len(outs)} outputs")
            ys = [lin._check_out(o) if isinstance(lin, Linear) else o
                  for lin, o in zip(linears, outs, strict=True)]
        i = 0
        while i < len(linears):
            if not isinstance(linears[i], Linear):  # e.g. a KMLinear: its own mat-vec
                linears[i].matvec(x, out=ys[i])
                i += 1
                continue
            j = i + 1  # a run of up to 4 weights of one type
            while j < len(linears) and j - i < 4 and isinstance(linears[j], Linear) \
                    and linears[j].kind == linears[i].kind \
                    and linears[j].row_bytes == linears[i].row_bytes:
                j += 1
            group = linears[i:j]
            pad = 4 - len(group)
            ws = tuple(lin._w for lin in group) + (_EMPTY_W,) * pad
            gy = tuple(ys[i:j]) + (_EMPTY_Y,) * pad
            if len(group) == 1:
                group[0].matvec(x, out=ys[i])
            else:
                dispatch.matvec_group(group[0].kind, ws, gy, group[0].row_bytes, x,
                                      group[0]._scratch, group[0]._kinds)
            i = j
        return ys

    # -- prefill ----------------------------------------------------------------------------
    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n_tok, in) float32 -> (n_tok, out) float32.

        The block types of ``gemm.GEMM_TYPES`` use the int8 matrix product (int8 activations,
        as the mat-vec and llama.cpp) from 2 tokens on. For the others, from
        ``BLAS_MIN_TOKENS`` tokens on, weight tiles are dequantized to float32 (exactly, as
        ggml does) and multiplied with BLAS in float32; below that, and for one token, the
        int8 mat-vec kernels run once per token.
        """
        X = _kernel_array(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ModelError(f"{self.name}: activations of shape {X.shape}, expected "
                             f"(n_tok, {self.in_features})")
        n_tok = X.shape[0]
        if out is None:
            out = np.empty((n_tok, self.out_features), np.float32)
        elif (out.shape != (n_tok, self.out_features) or out.dtype != np.float32
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise ModelError(f"{self.name}: out must be C-contiguous float32 of shape "
                             f"({n_tok}, {self.out_features})")
        if n_tok == 0 or self.out_features == 0:
            return out
        if n_tok > 1 and self.type in gemm.GEMM_TYPES:
            gemm.gemm(self.kind, self._w, self.row_bytes, X, out, gemm.gemm_kinds(self._kinds))
            return out
        if n_tok < BLAS_MIN_TOKENS:
            return self.matmul_int8(X, out=out)
        if self.type == GGMLType.F32:
            np.matmul(X, self._w.view(np.float32).reshape(self.out_features, -1).T, out=out)
            return out
        step = max(1, _TILE_ELEMENTS // self.in_features)
        tile = np.empty((min(step, self.out_features), self.in_features), np.float32)
        no_ids = np.zeros(0, np.int64)
        for r0 in range(0, self.out_features, step):
            r1 = min(r0 + step, self.out_features)
            t = tile[: r1 - r0]
            dispatch.dequant_rows(self.kind, self._w, self.row_bytes, self.in_features, no_ids,
                                  r0, t, self._kinds)
            if r1 - r0 == self.out_features:
                np.matmul(X, t.T, out=out)
            else:
                out[:, r0:r1] = X @ t.T
        return out

    def matmul_int8(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n_tok, in) -> (n_tok, out), one int8 mat-vec per token (the same numbers as matvec).
        Used below ``BLAS_MIN_TOKENS`` tokens."""
        X = _kernel_array(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ModelError(f"{self.name}: activations of shape {X.shape}, expected "
                             f"(n_tok, {self.in_features})")
        n_tok = X.shape[0]
        if out is None:
            out = np.empty((n_tok, self.out_features), np.float32)
        elif (out.__class__ is not np.ndarray or out.shape != (n_tok, self.out_features)
              or out.dtype is not _F32 or not out.flags.c_contiguous or not out.flags.writeable):
            raise ModelError(f"{self.name}: out must be writable C-contiguous float32 of shape "
                             f"({n_tok}, {self.out_features})")
        for t in range(n_tok):  # few tokens: one mat-vec each
            dispatch.matvec_one(self.kind, self._w, out[t], self.row_bytes, X[t], self._scratch,
                                self._kinds)
        return out

    def dequantize(self) -> np.ndarray:
        """The whole weight as float32 (out, in), bit-exact with ggml's dequantization."""
        out = np.empty((self.out_features, self.in_features), np.float32)
        dispatch.dequant_rows(self.kind, self._w, self.row_bytes, self.in_features,
                              np.zeros(0, np.int64), 0, out, self._kinds)
        return out


def share_kinds(linears: Sequence[Linear]) -> dispatch.Kinds:
    """Make every Linear of a model compile (and call) its drivers for the union of their
    kinds, so the drivers are compiled once per model, not once per type, and the fused
    decode step (which switches over all of them) reuses the same compiled code. Returns that
    set, for ``get_rows(..., kinds=)`` and the decode step."""
    kinds = dispatch.kinds_of(*(lin.kind for lin in linears))
    for lin in linears:
        lin._kinds = kinds
    return kinds


def get_rows(data: np.ndarray, ggml_type: int | str | GGMLType, shape: Sequence[int],
             ids: np.ndarray, *, name: str = "token_embd.weight",
             kinds: dispatch.Kinds | None = None) -> np.ndarray:
    """Rows ``ids`` of a (vocab, dim) weight as float32 (n, dim), bit-exact with ggml.

    ``kinds``: the kind set to compile the gather for (share_kinds); default this type alone.
    Raises ModelError for an id outside [0, vocab).
    """
    t = _as_type(ggml_type, name)
    if t not in NATIVE_TYPES:
        raise UnsupportedTypeError(f"{name}: no kernel for {t.name}; convert it once with "
                                   "prepare_weight()")
    shape = tuple(int(s) for s in shape)
    flat, row_bytes = _flat_weight(data, t, shape, name)
    ids = _kernel_array(ids, np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= shape[0]):
        bad = ids[(ids < 0) | (ids >= shape[0])][0]
        raise ModelError(f"{name}: row id {int(bad)} outside [0, {shape[0]})")
    out = np.empty((ids.size, shape[1]), np.float32)
    if ids.size:
        ensure_threading_layer()
        if kinds is None or int(t) not in kinds.ids:
            kinds = dispatch.kinds_of(int(t))
        dispatch.dequant_rows(int(t), flat, row_bytes, shape[1], ids, 0, out, kinds)
    return out


def prepare_weight(data: np.ndarray, ggml_type: int | str | GGMLType, shape: Sequence[int], *,
                   name: str = "weight") -> tuple[np.ndarray, GGMLType]:
    """Make a weight runnable: identity for ``NATIVE_TYPES``; any other type that gguflite can
    decode is converted once to F16 (float16 (out, in)); anything else raises
    UnsupportedTypeError naming the tensor.
    """
    t = _as_type(ggml_type, name)
    if t in NATIVE_TYPES:
        return data, t
    from ...quants import dequantize  # the codecs are only needed for non-native types

    shape = tuple(int(s) for s in shape)
    try:
        full = dequantize(np.asarray(data).reshape(-1).view(np.uint8), t, shape, name=name)
    except UnsupportedTypeError as e:
        raise UnsupportedTypeError(f"{name}: {t.name} has no kernel and cannot be decoded: "
                                   f"{e}") from None
    return full.astype(np.float16), GGMLType.F16
