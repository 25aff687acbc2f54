"""KM2 / KM3 / KM4 (KM v2): affine 32-weight blocks over a learned per-row codebook.

KM v2 is Q4_K's structure (per 32 weights a 6-bit scale and a 6-bit min under per-row fp16
super-scales) with the uniform levels 0..K-1 replaced by a learned per-row codebook of
``K = 2**bits`` integers in 0..127 (a 1-D k-means of the block-normalised weights, in the
spirit of SqueezeLLM's per-channel sensitivity-weighted k-means)::

    W[r, c] = (d_r * s_rb) * cb_r[q_rc] - dmin_r * m_rb        b = c // 32

With the codebook set to uniform levels this *is* a Q4_K-like grid; the quantizer starts there
and accepts only changes that lower the row's (importance-weighted) squared error.

    >>> kmt = km.quantize(w, 4, importance=imatrix_column)   # w (rows, cols) float32
    >>> w2 = kmt.dequantize()                                 # (rows, cols) float32
    >>> km.add_to_writer(writer, "blk.0.ffn_down.weight", kmt)

Rows are byte strings of ``row_bytes(cols, bits)`` (layout drawn in :mod:`.km_numba`,
normative in spec/extensions-km.md). In a file a KM tensor ``<name>`` is one I8 companion
tensor ``<name>.km`` of shape (rows, row_bytes) plus the keys ``gguflite.km.<name>.bits``
(UINT32) and ``gguflite.km.<name>.shape`` (UINT64[2]), so every GGUF reader reads the file.
``gguflite.quants.quantize(w, "km4")`` returns the same (rows, row_bytes) rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..constants import GGMLType, GGUFValueType
from ..errors import MetadataError, QuantizationError, TensorInfoError
from . import km_numba as _nb
from .base import Codec

COMPANION_SUFFIX = ".km"
KEY_PREFIX = "gguflite.km."
BITS = (2, 3, 4)
QK = 32  # weights per block
CHUNK = 64  # columns per chunk: two blocks sharing 3 bytes of scales and mins
IMPORTANCE_FLOOR = 1e-6  # importance + 1e-6 * mean(importance): no column is ignored outright
MAX_ITER = 8  # codebook / block-search rounds after the start (each must lower the error)
# |w| above this overflows an fp16 super-scale: dmin = max min / 63 <= 65504
MAX_ABS = 65504.0 * 63 / 2


def row_bytes(cols: int, bits: int) -> int:
    """Bytes of one KM row: 4 (d, dmin) + 2**bits (codebook) + ceil(cols/64) * (3 + 8*bits)."""
    return 4 + (1 << bits) + -(-cols // CHUNK) * (3 + 8 * bits)


@dataclass(frozen=True)
class KMTensor:
    """A KM v2 matrix.

    Attributes
    ----------
    bits : int
        2, 3 or 4.
    shape : (rows, cols)
    data : (rows, row_bytes(cols, bits)) uint8
        The rows (typically a read-only view of a mapped file).
    """

    bits: int
    shape: tuple[int, int]
    data: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes stored (everything: super-scales, codebooks, block scales, codes)."""
        return int(self.data.nbytes)

    @property
    def bpw(self) -> float:
        """Stored bits per weight."""
        n = self.shape[0] * self.shape[1]
        return 8.0 * self.nbytes / n if n else float("nan")

    bits_per_weight = bpw

    def dequantize(self, *, reference: bool = False) -> np.ndarray:
        """(rows, cols) float32 weights (Numba, or the NumPy reference: equal bit for bit)."""
        fn = dequantize_rows if reference else dequantize_rows_fast
        return fn(self.data, self.bits, self.shape[1])


# -- decoding ----------------------------------------------------------------------------------
def _check_rows(data: np.ndarray, bits: int, cols: int) -> np.ndarray:
    raw = np.asarray(data)
    if raw.dtype != np.uint8:
        raw = raw.view(np.uint8)
    if bits not in BITS:
        raise QuantizationError(f"KM bits must be 2, 3 or 4, got {bits!r}")
    if raw.ndim != 2 or raw.shape[1] != row_bytes(cols, bits):
        raise QuantizationError(f"KM{bits} rows of {cols} columns are {row_bytes(cols, bits)} "
                                f"bytes each; got data of shape {raw.shape}")
    return raw


def unpack_codes(chunks: np.ndarray, bits: int) -> np.ndarray:
    """(n, n_chunks, 8*bits) code bytes -> (n, n_chunks * 64) codes (NumPy reference)."""
    b = chunks.astype(np.int64)
    n, nc = b.shape[:2]
    if bits == 4:
        q = np.concatenate([b & 15, b >> 4], axis=2)  # (n, nc, 64): q_i, then q_{32+i}
    else:
        lo = b[..., :16]  # (n, nc, 16): bits 1..0 of q_{16u+i} at bits 2u+1..2u
        q = np.concatenate([(lo >> (2 * u)) & 3 for u in range(4)], axis=2)  # (n, nc, 64)
        if bits == 3:
            hi = b[..., 16:24]  # (n, nc, 8): bit u of byte i = bit 2 of q_{8u+i}
            q |= np.concatenate([((hi >> u) & 1) << 2 for u in range(8)], axis=2)
    return q.reshape(n, nc * CHUNK)


def pack_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """(n, n_chunks * 64) codes -> (n, n_chunks, 8*bits) uint8 (NumPy reference)."""
    n = q.shape[0]
    c = np.asarray(q, np.int64).reshape(n, -1, CHUNK)  # (n, nc, 64)
    if bits == 4:
        return (c[..., :32] | c[..., 32:] << 4).astype(np.uint8)
    lo = sum((c[..., 16 * u:16 * u + 16] & 3) << (2 * u) for u in range(4))  # (n, nc, 16)
    if bits == 2:
        return lo.astype(np.uint8)
    hi = sum(((c[..., 8 * u:8 * u + 8] >> 2) & 1) << u for u in range(8))  # (n, nc, 8)
    return np.concatenate([lo, hi], axis=2).astype(np.uint8)


def split_rows(data: np.ndarray, bits: int, cols: int) -> dict[str, np.ndarray]:
    """Fields of (n, row_bytes) rows: d, dmin (n,) f32; cb (n, K); s, m (n, nb); q (n, nb*32)."""
    raw = _check_rows(data, bits, cols)
    n, k = raw.shape[0], 1 << bits
    nc = -(-cols // CHUNK)
    d = np.ascontiguousarray(raw[:, 0:2]).view("<f2").astype(np.float32)[:, 0]  # (n,)
    dmin = np.ascontiguousarray(raw[:, 2:4]).view("<f2").astype(np.float32)[:, 0]
    cb = raw[:, 4:4 + k].astype(np.int64)  # (n, K)
    chunks = raw[:, 4 + k:].reshape(n, nc, 3 + 8 * bits)  # (n, nc, 3 + 8 bits)
    v = chunks[..., 0].astype(np.int64) | chunks[..., 1].astype(np.int64) << 8 | (
        chunks[..., 2].astype(np.int64) << 16)  # (n, nc): m1 | s1 | m0 | s0, 6 bits each
    s = np.stack([v & 63, (v >> 12) & 63], axis=2).reshape(n, 2 * nc)  # (n, nb)
    m = np.stack([(v >> 6) & 63, (v >> 18) & 63], axis=2).reshape(n, 2 * nc)
    return dict(d=d, dmin=dmin, cb=cb, s=s, m=m, q=unpack_codes(chunks[..., 3:], bits))


def encode_rows(d: np.ndarray, dmin: np.ndarray, cb: np.ndarray, s: np.ndarray, m: np.ndarray,
                q: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`split_rows` (NumPy reference; used to build rows by hand)."""
    n = cb.shape[0]
    s, m = np.asarray(s, np.int64), np.asarray(m, np.int64)
    sm = s[:, 0::2] | m[:, 0::2] << 6 | s[:, 1::2] << 12 | m[:, 1::2] << 18  # (n, nc)
    scales = np.stack([sm & 255, (sm >> 8) & 255, sm >> 16], axis=2).astype(np.uint8)
    head = [np.asarray(d, "<f2").reshape(n, 1).view(np.uint8),
            np.asarray(dmin, "<f2").reshape(n, 1).view(np.uint8),
            np.asarray(cb, np.uint8).reshape(n, 1 << bits)]
    body = np.concatenate([scales, pack_codes(q, bits)], axis=2).reshape(n, -1)
    return np.concatenate(head + [body], axis=1)


def dequantize_rows(data: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """(n, row_bytes) uint8 -> (n, cols) float32: the plain NumPy reference decoder."""
    f = split_rows(data, bits, cols)
    n = f["cb"].shape[0]
    a = f["d"][:, None] * f["s"].astype(np.float32)  # (n, nb) d * s
    b = f["dmin"][:, None] * f["m"].astype(np.float32)  # (n, nb) dmin * m
    cbq = np.take_along_axis(f["cb"], f["q"], axis=1).astype(np.float32)  # (n, nb * 32)
    w = np.repeat(a, QK, axis=1) * cbq - np.repeat(b, QK, axis=1)  # (n, nb * 32)
    return np.ascontiguousarray(w[:, :cols].astype(np.float32)).reshape(n, cols)


def dequantize_rows_fast(data: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """Numba twin of :func:`dequantize_rows` (parallel over rows, equal bit for bit)."""
    raw = _check_rows(data, bits, cols)
    out = np.empty((raw.shape[0], cols), np.float32)
    if raw.shape[0] and cols:
        _nb.dequantize_rows(raw, bits, cols, out)
    return out


def matvec(kmt: KMTensor, x: np.ndarray) -> np.ndarray:
    """``W @ x`` (simple exact reference, float64 sums): (cols,) -> (rows,) float32."""
    xv = np.asarray(x, np.float64)
    if xv.shape != (kmt.shape[1],):
        raise QuantizationError(f"matvec: x must have shape ({kmt.shape[1]},), got {xv.shape}")
    return (kmt.dequantize().astype(np.float64) @ xv).astype(np.float32)


# -- quantizing ------------------------------------------------------------------------------
def _check_input(w: np.ndarray, importance: np.ndarray | None, name: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.asarray(w, dtype=np.float32)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise QuantizationError(f"{name}: KM quantizes 2-D (rows, cols) matrices, got shape "
                                f"{x.shape}")
    x = np.ascontiguousarray(x)
    if x.size:
        finite = np.isfinite(x)
        if not finite.all():
            bad = np.unravel_index(int(np.argmin(finite.reshape(-1))), x.shape)
            raise QuantizationError(
                f"{name}: non-finite value {x[bad]!r} at index {tuple(int(i) for i in bad)}; "
                "nothing was quantized")
        big = np.abs(x) > MAX_ABS
        if big.any():
            bad = np.unravel_index(int(np.argmax(big.reshape(-1))), x.shape)
            raise QuantizationError(
                f"{name}: value {x[bad]!r} at index {tuple(int(i) for i in bad)} is beyond the KM "
                f"range (|w| <= {MAX_ABS:g}: the fp16 super-scales would overflow)")
    if importance is None:
        return x, None
    cols = x.shape[1]
    imp = np.ascontiguousarray(importance, dtype=np.float32)
    if imp.shape != (cols,):
        raise QuantizationError(f"{name}: importance must have shape ({cols},) (one value per "
                                f"column), got {imp.shape}")
    if imp.size and not (np.isfinite(imp).all() and (imp >= 0).all()):
        j = int(np.argmin(np.isfinite(imp) & (imp >= 0)))
        raise QuantizationError(f"{name}: importance[{j}] = {imp[j]!r}; importance must be "
                                "finite and >= 0")
    mean = float(imp.mean(dtype=np.float64)) if imp.size else 0.0
    if not mean > 0:
        return x, None
    return x, (imp + np.float32(IMPORTANCE_FLOOR * mean)).astype(np.float32)


def quantize(w: np.ndarray, bits: int, *, importance: np.ndarray | None = None,
             max_iter: int = MAX_ITER, name: str = "tensor") -> KMTensor:
    """Quantize a (rows, cols) float matrix to KM``bits``.

    Parameters
    ----------
    w : (rows, cols) float
        Finite weights, |w| <= MAX_ABS (a 1-D array is one row). Any row length.
    bits : {2, 3, 4}
    importance : (cols,) float, optional
        Per-column importance (an imatrix: mean squared input activation). The quantizer then
        minimises ``sum_c a_c (w[r, c] - w2[r, c])**2`` per row with
        ``a = importance + 1e-6 * mean(importance)``; without it, the plain squared error.
    max_iter : int
        Rounds of (codebook Lloyd step, per-block scale search) after the Q4_K-like start;
        0 keeps the start (the uniform codebook). Each round must lower the error to be kept.
    name : str
        Tensor name used in error messages.

    The result is a pure function of the inputs (rows are independent; no randomness).
    """
    if bits not in BITS:
        raise QuantizationError(f"{name}: bits must be 2, 3 or 4, got {bits!r}")
    if not (isinstance(max_iter, int | np.integer) and 0 <= max_iter <= 1000):
        raise QuantizationError(f"{name}: max_iter must be an integer in [0, 1000]")
    x, imp = _check_input(w, importance, name)
    rows, cols = x.shape
    out = np.zeros((rows, row_bytes(cols, bits)), np.uint8)
    if rows and cols:
        use = imp is not None
        errs = np.empty((rows, 2), np.float64)
        _nb.quantize_rows(_readonly(x), _readonly(imp if use else np.ones(cols, np.float32)),
                          use, bits, int(max_iter), out, errs)
    return KMTensor(bits, (rows, cols), out)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view, so each kernel compiles once (Numba specialises on writability)."""
    v = a.view()
    v.flags.writeable = False
    return v


# -- GGUF storage ----------------------------------------------------------------------------
MetadataItem = tuple[str, Any, GGUFValueType, "GGUFValueType | None"]


def to_gguf_tensors(name: str, kmt: KMTensor) -> list[tuple[str, tuple[int, int], GGMLType,
                                                             np.ndarray]]:
    """The companion tensor of ``name``: [(tensor name, shape, type, data)], for add_tensor."""
    data = np.ascontiguousarray(kmt.data).view(np.int8)
    return [(name + COMPANION_SUFFIX, tuple(data.shape), GGMLType.I8, data)]


def metadata_items(name: str, kmt: KMTensor) -> list[MetadataItem]:
    """The keys describing ``name``: [(key, value, type, element type)], for GGUFWriter.add."""
    T = GGUFValueType
    return [
        (f"{KEY_PREFIX}{name}.bits", kmt.bits, T.UINT32, None),
        (f"{KEY_PREFIX}{name}.shape", list(kmt.shape), T.ARRAY, T.UINT64),
    ]


def add_to_writer(writer: Any, name: str, kmt: KMTensor) -> None:
    """Declare ``name`` as a KM tensor on a :class:`gguflite.GGUFWriter`."""
    for tname, shape, ttype, data in to_gguf_tensors(name, kmt):
        writer.add_tensor(tname, shape=shape, type=ttype, data=data)
    writer.add_items(metadata_items(name, kmt))


def km_tensor_names(f: Any) -> list[str]:
    """Names of the KM tensors of an open GGUFFile, in file order of their companions."""
    n = len(COMPANION_SUFFIX)
    return [t[:-n] for t in f.tensors
            if t.endswith(COMPANION_SUFFIX) and f"{KEY_PREFIX}{t[:-n]}.bits" in f.metadata]


def is_km_tensor(f: Any, name: str) -> bool:
    """True when ``name`` is stored as a KM companion (and not as a plain tensor)."""
    return (name not in f.tensors and name + COMPANION_SUFFIX in f.tensors
            and f"{KEY_PREFIX}{name}.bits" in f.metadata)


def _key(f: Any, key: str, vtype: GGUFValueType, etype: GGUFValueType | None = None) -> Any:
    if key not in f.metadata:
        raise MetadataError(f"KM tensor key {key!r} is missing (spec/extensions-km.md rule KM1)",
                            rule="KM1")
    if f.metadata.value_type(key) != vtype or (
            etype is not None and f.metadata.element_type(key) != etype):
        raise MetadataError(f"key {key!r} must be {vtype.name}"
                            + (f" of {etype.name}" if etype else "") + " (rule KM1)", rule="KM1")
    return f.metadata[key]


def check_rows(data: np.ndarray, bits: int, name: str, offset: int | None = None) -> None:
    """Rule KM5 on (rows, row_bytes) rows: finite d and dmin, codebooks <= 127, non-decreasing.

    Raises TensorInfoError naming the tensor, the row and the byte offset of the bad row.
    """
    k = 1 << bits
    if data.shape[0] == 0:
        return
    hd = np.ascontiguousarray(data[:, 0:4]).view("<u2")  # (rows, 2) fp16 bits of d, dmin
    cb = data[:, 4:4 + k]  # (rows, K)
    bad_scale = ((hd & 0x7C00) == 0x7C00).any(axis=1)  # exponent all ones: inf or NaN
    bad_cb = (cb > 127).any(axis=1) | (np.diff(cb.astype(np.int16), axis=1) < 0).any(axis=1)
    bad = bad_scale | bad_cb
    if bad.any():
        r = int(np.argmax(bad))
        what = ("d or dmin is not a finite fp16" if bad_scale[r] else
                f"codebook {cb[r].tolist()} is not non-decreasing in 0..127")
        raise TensorInfoError(
            f"KM tensor {name!r}: row {r}: {what} (rule KM5)", rule="KM5",
            offset=None if offset is None else offset + r * data.shape[1])


def from_gguf(f: Any, name: str) -> KMTensor:
    """Read KM tensor ``name`` from an open GGUFFile (zero-copy, read-only, validated).

    Raises ``MetadataError`` / ``TensorInfoError`` naming the key or tensor and the rule
    (KM1..KM5 of spec/extensions-km.md) when the companion does not fit the keys.
    """
    T = GGUFValueType
    bits = int(_key(f, f"{KEY_PREFIX}{name}.bits", T.UINT32))
    shape = _key(f, f"{KEY_PREFIX}{name}.shape", T.ARRAY, T.UINT64)
    if bits not in BITS or len(shape) != 2:
        raise MetadataError(f"KM tensor {name!r}: bits {bits} must be 2, 3 or 4 and shape must "
                            "have 2 entries (rule KM2)", rule="KM2")
    rows, cols = int(shape[0]), int(shape[1])
    tname = name + COMPANION_SUFFIX
    if tname not in f.tensors:
        raise TensorInfoError(f"KM tensor {name!r}: companion tensor {tname!r} is missing "
                              "(rule KM3)", rule="KM3")
    ti = f.tensors[tname]
    want = (rows, row_bytes(cols, bits))
    if ti.type != GGMLType.I8 or tuple(ti.shape) != want:
        raise TensorInfoError(
            f"KM tensor {name!r}: {tname!r} is {ti.type.name} {tuple(ti.shape)}, expected I8 "
            f"{want} (row_bytes({cols}, {bits}) = {want[1]}; rule KM4)", rule="KM4",
            offset=ti.file_offset)
    data = f.array(tname).view(np.uint8)
    check_rows(data, bits, name, ti.file_offset)
    return KMTensor(bits, (rows, cols), data)


# -- the codec-registry view: the same rows ----------------------------------------------------
class _KMCodec(Codec):
    """``quantize(w, "km4")`` -> (rows, row_bytes) uint8, the file's rows.

    ``block_size`` / ``type_size`` describe one 64-column chunk (3 bytes of scales + codes), so
    ``types()`` lists KM near its bits per weight; ``row_nbytes`` adds the 4 + 2**bits bytes of
    super-scales and codebook. Any row length works (the last chunk is padded).

    Bound (``max_error``): no a-priori bound follows from the block alone (the codebook and the
    super-scales are per row). Every weight decodes to a value within the span of its tensor
    widened to include 0, so ``|x - x'| <= 2 * (max(hi, 0) - min(lo, 0))`` plus fp16 rounding
    of the super-scales; tests/test_quants_km.py checks the tighter per-block grid bound.

    Requantizing is not stable in bytes or values (``requantize_stable = False``): the start
    on decoded values (a uniform grid) need not lead the local search back to the same codebook.
    """

    bits = 0
    block_size = CHUNK
    uses_importance = True
    requantize_stable = False

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        b = np.asarray(blocks, dtype=np.float64)
        if b.size == 0:
            return np.zeros(b.shape[0])
        lo, hi = min(float(b.min()), 0.0), max(float(b.max()), 0.0)
        bound = 2.0 * (hi - lo) * (1 + 2.0**-9) + np.finfo(np.float32).tiny
        return np.full(b.shape[0], bound)

    @classmethod
    def row_nbytes(cls, n_per_row: int) -> int:
        return row_bytes(n_per_row, cls.bits)

    @classmethod
    def quantize(cls, array: np.ndarray, *, importance: np.ndarray | None = None,
                 reference: bool = False, name: str = "tensor") -> np.ndarray:
        x = np.asarray(array, dtype=np.float32)
        lead, n = (x.shape[:-1], x.shape[-1]) if x.ndim else ((), 1)
        if reference:
            from .km_reference import quantize_rows_reference

            x2, imp = _check_input(x.reshape(-1, n), importance, name)
            data = quantize_rows_reference(x2, imp, cls.bits, MAX_ITER)
        else:
            data = quantize(x.reshape(-1, n), cls.bits, importance=importance, name=name).data
        return data.reshape(*lead, cls.row_nbytes(n))

    @classmethod
    def dequantize(cls, packed: np.ndarray, shape: Sequence[int], *, reference: bool = False,
                   name: str = "tensor") -> np.ndarray:
        shape = tuple(int(s) for s in shape) or (1,)
        n = shape[-1]
        rows = int(np.prod(shape[:-1], dtype=np.int64))
        raw = np.asarray(packed).view(np.uint8).reshape(-1)
        if raw.size != rows * cls.row_nbytes(n):
            raise QuantizationError(f"{name}: {cls.name} data of shape {shape} needs "
                                    f"{rows * cls.row_nbytes(n)} bytes, got {raw.size}")
        fn = dequantize_rows if reference else dequantize_rows_fast
        return fn(raw.reshape(rows, cls.row_nbytes(n)), cls.bits, n).reshape(shape)


class KM2(_KMCodec):
    name = "km2"
    bits = 2
    type_size = 3 + 8 * 2


class KM3(_KMCodec):
    name = "km3"
    bits = 3
    type_size = 3 + 8 * 3


class KM4(_KMCodec):
    name = "km4"
    bits = 4
    type_size = 3 + 8 * 4
