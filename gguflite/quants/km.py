"""KM2 / KM3 / KM4: gguflite's k-means codebook tensors (non-uniform weight quantization).

Each weight is a 2-, 3- or 4-bit index into a small learned table of ``2**bits`` values (a
codebook), in the spirit of Deep Compression (k-means weight sharing) and SqueezeLLM
(sensitivity-weighted k-means per output channel). A codebook serves one group of
``group_rows`` rows x ``group_cols`` columns; the default is one codebook per row, the
granularity benchmarks/results/km.md measured best for its bits per weight.

    >>> kmt = km.quantize(w, 4, importance=imatrix_column)   # w (rows, cols) float32
    >>> w2 = kmt.dequantize()                                 # (rows, cols) float32
    >>> y = km.matvec(kmt, x)                                 # fused decode + dot
    >>> km.add_to_writer(writer, "blk.0.ffn_down.weight", kmt)

In a file a KM tensor ``<name>`` is two companion tensors of standard ggml types plus three
keys (spec/extensions-km.md), so every GGUF reader can still read the file:

- ``<name>.kmc``: I8, shape (rows, packed_bytes): the packed codes, one row contiguous;
- ``<name>.kmb``: F16 (or F32), shape (n_codebooks, 2**bits): the codebooks, ascending;
- ``gguflite.km.<name>.bits`` (UINT32), ``.shape`` (UINT64[2]: rows, cols) and ``.group``
  (UINT32[2]: group_rows, group_cols).

``gguflite.quants.quantize(w, "km4")`` also works: it returns a self-contained uint8 row
format, per row the 2**bits F16 codebook entries followed by the row's packed codes.

The k-means is the same algorithm in NumPy (``reference=True``, plain vectorised code) and in
Numba (:mod:`.km_numba`); tests prove they agree bit for bit.
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
from .km_numba import codes_per_unit

CODES_SUFFIX = ".kmc"
BOOK_SUFFIX = ".kmb"
KEY_PREFIX = "gguflite.km."
BITS = (2, 3, 4)
INITS = {"optimal": _nb.INIT_OPTIMAL, "quantile": _nb.INIT_QUANTILE,
         "kmeans++": _nb.INIT_KMEANSPP}
IMPORTANCE_FLOOR = 1e-6  # importance + 1e-6 * mean(importance): no column is ignored outright
_F16_MAX = 65504.0


def packed_bytes(cols: int, bits: int) -> int:
    """Bytes of one packed row of ``cols`` codes: KM4 ceil(c/2), KM2 ceil(c/4), KM3 3*ceil(c/8)."""
    per, nb = codes_per_unit(bits)
    return (cols + per - 1) // per * nb


@dataclass(frozen=True)
class KMTensor:
    """A k-means quantized matrix.

    Attributes
    ----------
    bits : int
        2, 3 or 4; the codebooks have ``2**bits`` entries.
    shape : (rows, cols)
    group_rows, group_cols : int
        Rows and columns sharing one codebook (1 <= group_rows <= rows, same for cols;
        ``group_cols`` is ``cols`` or a multiple of 8).
    codes : (rows, packed_bytes(cols, bits)) uint8
        Packed codes (layout in :mod:`.km_numba`).
    codebook : (n_row_groups * n_col_groups, 2**bits) float16 or float32
        Codebook ``(r // group_rows) * n_col_groups + c // group_cols`` serves weight (r, c).
    """

    bits: int
    shape: tuple[int, int]
    group_rows: int
    group_cols: int
    codes: np.ndarray
    codebook: np.ndarray

    @property
    def n_col_groups(self) -> int:
        return -(-self.shape[1] // self.group_cols)

    @property
    def nbytes(self) -> int:
        """Bytes stored: codes plus codebooks."""
        return int(self.codes.nbytes + self.codebook.nbytes)

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per weight, codebooks included."""
        n = self.shape[0] * self.shape[1]
        return 8.0 * self.nbytes / n if n else float("nan")

    def codebook_f32(self) -> np.ndarray:
        """(n_codebooks, 2**bits) float32 copy of the codebooks (what the kernels take)."""
        return np.ascontiguousarray(self.codebook, dtype=np.float32)

    def dequantize(self, *, reference: bool = False) -> np.ndarray:
        """(rows, cols) float32 weights."""
        rows, cols = self.shape
        if rows == 0 or cols == 0:
            return np.zeros(self.shape, np.float32)
        if reference:
            return _dequantize_reference(self)
        codes = np.ascontiguousarray(self.codes).view(np.uint8)
        return _nb.unpack_dequantize(codes, self.codebook_f32(), cols, self.group_rows,
                                     self.group_cols, self.bits)


# -- quantizing ------------------------------------------------------------------------------
def _parse_granularity(granularity: str | tuple[int, int], rows: int, cols: int,
                       name: str) -> tuple[int, int]:
    """'tensor' | 'row' | 'rows<N>' | 'cols<N>' | (group_rows, group_cols), 0 = all."""
    if isinstance(granularity, str):
        g = granularity.lower()
        try:
            if g == "tensor":
                gr, gc = 0, 0
            elif g == "row":
                gr, gc = 1, 0
            elif g.startswith("rows"):
                gr, gc = int(g[4:]), 0
            elif g.startswith("cols"):
                gr, gc = 1, int(g[4:])
            else:
                raise ValueError(g)
        except ValueError:
            raise QuantizationError(
                f"{name}: granularity {granularity!r} is not 'tensor', 'row', 'rows<N>', "
                "'cols<N>' or a (group_rows, group_cols) pair") from None
    else:
        gr, gc = (int(v) for v in granularity)
    if gr < 0 or gc < 0:
        raise QuantizationError(f"{name}: group sizes must be >= 0 (0 = all), got ({gr}, {gc})")
    gr = max(1, min(gr or rows, rows))
    gc = max(1, min(gc or cols, cols))
    if gc < cols and gc % 8:
        raise QuantizationError(f"{name}: group_cols {gc} must be a multiple of 8 (the KM3 "
                                f"packing unit) or cover the whole row of {cols}")
    return gr, gc


def _check_input(w: np.ndarray, importance: np.ndarray | None, name: str
                 ) -> tuple[np.ndarray, np.ndarray]:
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
    cols = x.shape[1]
    if importance is None:
        imp = np.ones(cols, np.float32)
    else:
        imp = np.ascontiguousarray(importance, dtype=np.float32)
        if imp.shape != (cols,):
            raise QuantizationError(f"{name}: importance must have shape ({cols},) (one value "
                                    f"per column), got {imp.shape}")
        if imp.size and not (np.isfinite(imp).all() and (imp >= 0).all()):
            j = int(np.argmin(np.isfinite(imp) & (imp >= 0)))
            raise QuantizationError(f"{name}: importance[{j}] = {imp[j]!r}; importance must be "
                                    "finite and >= 0")
        mean = float(imp.mean(dtype=np.float64)) if imp.size else 0.0
        imp = (imp + np.float32(IMPORTANCE_FLOOR * mean)) if mean > 0 else np.ones_like(imp)
    return x, imp


def quantize(
    w: np.ndarray,
    bits: int,
    *,
    importance: np.ndarray | None = None,
    seed: int = 0,
    granularity: str | tuple[int, int] = "row",
    init: str = "optimal",
    max_iter: int = 100,
    tol: float = 1e-6,
    dp_points: int = 256,
    codebook_type: str = "f16",
    reference: bool = False,
    name: str = "tensor",
) -> KMTensor:
    """k-means quantize a (rows, cols) float matrix to ``bits`` bits per weight (+ codebooks).

    Parameters
    ----------
    w : (rows, cols) float
        Finite weights (a 1-D array is one row). Any row length.
    bits : {2, 3, 4}
    importance : (cols,) float, optional
        Per-column importance (an imatrix: mean squared input activation). The k-means then
        minimises ``sum a[c] * (w[r, c] - w2[r, c])**2`` within each group, with
        ``a = importance + 1e-6 * mean(importance)`` (so no column is ignored outright).
    seed : int
        Seeds k-means++ (``init="kmeans++"``); the result is a pure function of the inputs.
    granularity : str or (group_rows, group_cols)
        'row' (default), 'tensor', 'rows<N>' (N rows share a codebook), 'cols<N>' (a codebook
        per row per N columns), or a pair where 0 means all.
    init : {'optimal', 'quantile', 'kmeans++'}
        'optimal' starts Lloyd from the exact weighted optimum (dynamic programming, O(K m
        log m) per group); the others are the classic starts.
    max_iter, tol : Lloyd's stopping rule (centroid moves <= tol * value range).
    dp_points : int
        'optimal' is exact for groups of at most this many distinct values (>= 64); larger
        groups are cut into runs first (see :func:`.km_numba.kmeans_1d`) and Lloyd polishes.
    codebook_type : {'f16', 'f32'}
    reference : bool
        Run the NumPy reference instead of the Numba kernels (same result, much slower).
    name : str
        Tensor name used in error messages.
    """
    if bits not in BITS:
        raise QuantizationError(f"{name}: bits must be 2, 3 or 4, got {bits!r}")
    if init not in INITS:
        raise QuantizationError(f"{name}: init must be one of {sorted(INITS)}, got {init!r}")
    if codebook_type not in ("f16", "f32"):
        raise QuantizationError(f"{name}: codebook_type must be 'f16' or 'f32'")
    if not (isinstance(seed, int | np.integer) and 0 <= seed < 2**63):
        raise QuantizationError(f"{name}: seed must be an integer in [0, 2**63)")
    x, imp = _check_input(w, importance, name)
    rows, cols = x.shape
    gr, gc = _parse_granularity(granularity, rows, cols, name)
    k = 1 << bits
    book_dtype = np.float16 if codebook_type == "f16" else np.float32
    if rows == 0 or cols == 0:
        n_cb = -(-rows // gr) * -(-cols // gc)
        return KMTensor(bits, (rows, cols), gr, gc,
                        np.zeros((rows, packed_bytes(cols, bits)), np.uint8),
                        np.zeros((n_cb, k), book_dtype))
    if not 64 <= dp_points <= 1 << 20:
        raise QuantizationError(f"{name}: dp_points must be in [64, 2**20], got {dp_points}")
    args = (gr, gc, k, INITS[init], int(seed), int(max_iter), float(tol), int(dp_points))
    if reference:
        centroids, _ = kmeans_fit_reference(x, imp, *args)
    else:
        centroids, _ = _nb.kmeans_fit(x, imp, *args)  # (n_cb, k) float64
    if book_dtype is np.float16 and np.abs(centroids).max() > _F16_MAX:
        raise QuantizationError(f"{name}: a centroid exceeds the float16 range (|c| > 65504); "
                                "use codebook_type='f32'")
    book = np.sort(centroids.astype(book_dtype), axis=1)  # (n_cb, k) stored values, ascending
    book32 = book.astype(np.float32)
    if reference:
        codes = assign_pack_reference(x, book32, gr, gc, bits)
    else:
        codes = _nb.assign_pack(x, book32, gr, gc, bits)  # (rows, packed_bytes) uint8
    return KMTensor(bits, (rows, cols), gr, gc, codes, book)


# -- the NumPy reference ---------------------------------------------------------------------
def _splitmix(state: int) -> tuple[int, float]:
    """splitmix64 with Python integers (identical to the Numba kernel's)."""
    mask = (1 << 64) - 1
    state = (state + 0x9E3779B97F4A7C15) & mask
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    z ^= z >> 31
    return state, float(z >> 11) * (1.0 / 9007199254740992.0)


def kmeans_1d_reference(x: np.ndarray, w: np.ndarray, k: int, init: int, seed: int, group: int,
                        max_iter: int, tol: float, dp_points: int) -> tuple[np.ndarray, int]:
    """NumPy twin of :func:`.km_numba.kmeans_1d`: (m,) values, (m,) weights -> (k,) centroids."""
    m = x.shape[0]
    if m == 0:
        return np.zeros(k), 0
    order = np.argsort(x, kind="stable")
    xs = x[order].astype(np.float64)  # (m,) ascending
    ws = w[order].astype(np.float64)
    if not np.cumsum(ws)[-1] > 0.0:
        ws[:] = 1.0
    wx = ws * xs
    p0 = np.concatenate(([0.0], np.cumsum(ws)))  # (m + 1,) prefix sums (sequential, as C)
    p1 = np.concatenate(([0.0], np.cumsum(wx)))
    p2 = np.concatenate(([0.0], np.cumsum(wx * xs)))
    total = p0[m]
    distinct = xs[np.concatenate(([True], xs[1:] != xs[:-1]))]
    if distinct.size <= k:
        return np.concatenate((distinct, np.full(k - distinct.size, xs[-1]))), 0

    span = xs[-1] - xs[0]
    if init == _nb.INIT_OPTIMAL:
        if distinct.size <= dp_points:
            last = np.append(xs[1:] != xs[:-1], True)  # (m,) last copy of each distinct value
            ends = np.flatnonzero(last) + 1  # (nd,)
        else:  # half equal-count, half equal-width runs
            half = dp_points // 2
            t = np.arange(1, half)
            ends = np.unique(np.concatenate((np.arange(1, half + 1) * m // half,
                                             np.searchsorted(xs, xs[0] + span * t / half,
                                                             "right"))))
        c = optimal_1d_reference(*(np.concatenate(([0.0], p[ends])) for p in (p0, p1, p2)), k)
    elif init == _nb.INIT_QUANTILE:
        t = (np.arange(k) + 0.5) / k * total
        c = xs[np.minimum(np.searchsorted(p0[1:], t, "left"), m - 1)]
    else:
        state = (seed * 0x9E3779B97F4A7C15 + group) & ((1 << 64) - 1)
        state, u = _splitmix(state)
        c = np.empty(k)
        c[0] = xs[min(int(np.searchsorted(p0[1:], u * total, "right")), m - 1)]
        d = (xs - c[0]) * (xs - c[0])  # (m,) squared distance to the nearest centroid
        for j in range(1, k):
            s = np.cumsum(ws * d)
            state, u = _splitmix(state)
            c[j] = xs[min(int(np.searchsorted(s, u * s[-1], "right")), m - 1)]
            d = np.minimum(d, (xs - c[j]) * (xs - c[j]))
        c = np.sort(c)

    it = 0
    while it < max_iter:
        it += 1
        ends = np.append(np.searchsorted(xs, (c[:-1] + c[1:]) * 0.5, "right"), m)  # (k,)
        starts = np.concatenate(([0], ends[:-1]))
        sw = p0[ends] - p0[starts]
        s1 = p1[ends] - p1[starts]
        full = (ends > starts) & (sw > 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cn = np.where(full, s1 / sw, np.nan)
            sse = np.where(full & (xs[np.minimum(starts, m - 1)] != xs[np.maximum(ends - 1, 0)]),
                           (p2[ends] - p2[starts]) - s1 * s1 / sw, -1.0)
        n_empty = int((~full).sum())
        for i in np.flatnonzero(~full):
            worst = int(np.argmax(sse))
            if sse[worst] < 0.0:
                cn[i] = c[i]
                continue
            a, b = starts[worst], ends[worst]
            mid = (a + b) >> 1
            cn[worst] = (p1[mid] - p1[a]) / (p0[mid] - p0[a]) if p0[mid] > p0[a] else xs[a]
            cn[i] = (p1[b] - p1[mid]) / (p0[b] - p0[mid]) if p0[b] > p0[mid] else xs[b - 1]
            sse[worst] = -1.0
        cn = np.sort(cn)
        shift = np.abs(cn - c).max()
        c = cn
        if n_empty == 0 and shift <= tol * span:
            break
    return c, it


def optimal_1d_reference(u0: np.ndarray, u1: np.ndarray, u2: np.ndarray, k: int
                         ) -> np.ndarray:
    """NumPy twin of :func:`.km_numba.optimal_1d`: prefix sums (n + 1,) -> (k,) means."""
    n = u0.shape[0] - 1

    def cost(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
        sw = u0[b] - u0[a]
        s1 = u1[b] - u1[a]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sw > 0.0, (u2[b] - u2[a]) - s1 * s1 / sw, 0.0)

    prev = cost(0, np.arange(n + 1))  # (n + 1,) D[0][i]
    arg = np.zeros((k, n + 1), np.int64)
    for layer in range(1, k):
        cur = prev.copy()
        stack = [(layer + 1, n, layer, n - 1)]
        while stack:
            ilo, ihi, jlo, jhi = stack.pop()
            if ilo > ihi:
                continue
            mid = (ilo + ihi) >> 1
            js = np.arange(jlo, min(jhi, mid - 1) + 1)
            v = prev[js] + cost(js, mid)  # (candidates,)
            best = int(js[np.argmin(v)]) if js.size else jlo
            cur[mid] = v.min() if js.size else np.inf
            arg[layer, mid] = best
            stack.append((mid + 1, ihi, best, jhi))
            stack.append((ilo, mid - 1, jlo, best))
        prev = cur
    out = np.empty(k)
    hi = n
    for layer in range(k - 1, -1, -1):
        lo = arg[layer, hi] if layer > 0 else 0
        sw = u0[hi] - u0[lo]
        out[layer] = (u1[hi] - u1[lo]) / sw if sw > 0.0 else 0.0
        hi = lo
    return out


def kmeans_fit_reference(w: np.ndarray, imp: np.ndarray, group_rows: int, group_cols: int,
                         k: int, init: int, seed: int, max_iter: int, tol: float, dp_points: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`.km_numba.kmeans_fit` (same arguments and results)."""
    rows, cols = w.shape
    n_rg, n_cg = -(-rows // group_rows), -(-cols // group_cols)
    out = np.empty((n_rg * n_cg, k))
    iters = np.zeros(n_rg * n_cg, np.int64)
    for g in range(n_rg * n_cg):
        r0, c0 = (g // n_cg) * group_rows, (g % n_cg) * group_cols
        block = w[r0:r0 + group_rows, c0:c0 + group_cols]  # (gr, gc)
        wt = np.broadcast_to(imp[c0:c0 + group_cols], block.shape)
        out[g], iters[g] = kmeans_1d_reference(block.reshape(-1), wt.reshape(-1), k, init, seed,
                                               g, max_iter, tol, dp_points)
    return out, iters


def _group_index(rows: int, cols: int, gr: int, gc: int) -> np.ndarray:
    """(rows, cols) int64: the codebook serving each weight."""
    n_cg = -(-cols // gc)
    return (np.arange(rows)[:, None] // gr) * n_cg + np.arange(cols)[None, :] // gc


def assign_pack_reference(w: np.ndarray, codebook: np.ndarray, group_rows: int, group_cols: int,
                          bits: int) -> np.ndarray:
    """NumPy twin of :func:`.km_numba.assign_pack`."""
    rows, cols = w.shape
    book = codebook.astype(np.float64)
    mids = (book[:, :-1] + book[:, 1:]) * 0.5  # (n_cb, k - 1)
    gi = _group_index(rows, cols, group_rows, group_cols)  # (rows, cols)
    q = (w.astype(np.float64)[..., None] > mids[gi]).sum(-1)  # (rows, cols) codes
    return pack_codes(q, bits)


def pack_codes(q: np.ndarray, bits: int) -> np.ndarray:
    """(rows, cols) codes -> (rows, packed_bytes) uint8 (layout drawn in :mod:`.km_numba`)."""
    rows, cols = q.shape
    per, nb = codes_per_unit(bits)
    n_units = -(-cols // per)
    qp = np.zeros((rows, n_units * per), np.uint32)
    qp[:, :cols] = q
    u = qp.reshape(rows, n_units, per)  # (rows, units, codes per unit)
    word = (u << (bits * np.arange(per, dtype=np.uint32))).sum(-1, dtype=np.uint32)
    # (rows, units): one 8-bit (KM2, KM4) or 24-bit little-endian (KM3) word per unit
    out = (word[..., None] >> (8 * np.arange(nb, dtype=np.uint32))) & 0xFF  # (rows, units, nb)
    return out.astype(np.uint8).reshape(rows, n_units * nb)


def unpack_codes(codes: np.ndarray, cols: int, bits: int) -> np.ndarray:
    """(rows, packed_bytes) uint8 -> (rows, cols) uint8 codes."""
    rows = codes.shape[0]
    per, nb = codes_per_unit(bits)
    b = np.asarray(codes).view(np.uint8).astype(np.uint32).reshape(rows, -1, nb)
    word = (b << (8 * np.arange(nb, dtype=np.uint32))).sum(-1, dtype=np.uint32)  # (rows, units)
    q = (word[..., None] >> (bits * np.arange(per, dtype=np.uint32))) & ((1 << bits) - 1)
    return q.reshape(rows, -1)[:, :cols].astype(np.uint8)


def _dequantize_reference(kmt: KMTensor) -> np.ndarray:
    rows, cols = kmt.shape
    q = unpack_codes(kmt.codes, cols, kmt.bits)  # (rows, cols)
    gi = _group_index(rows, cols, kmt.group_rows, kmt.group_cols)
    return kmt.codebook.astype(np.float32)[gi, q]


def matvec_reference(kmt: KMTensor, x: np.ndarray) -> np.ndarray:
    """``W @ x`` in float64 from the decoded weights: (cols,) -> (rows,) float64."""
    return _dequantize_reference(kmt).astype(np.float64) @ np.asarray(x, np.float64)


def matvec(kmt: KMTensor, x: np.ndarray, out: np.ndarray | None = None,
           codebook_f32: np.ndarray | None = None) -> np.ndarray:
    """``W @ x`` by the fused Numba kernel: (cols,) float32 -> (rows,) float32."""
    rows, cols = kmt.shape
    xv = np.ascontiguousarray(x, dtype=np.float32)
    if xv.shape != (cols,):
        raise QuantizationError(f"matvec: x must have shape ({cols},), got {xv.shape}")
    if out is None:
        out = np.empty(rows, np.float32)
    book = kmt.codebook_f32() if codebook_f32 is None else codebook_f32
    if rows and cols:
        _nb.km_matvec(kmt.codes.view(np.uint8), book, xv, out, kmt.group_rows, kmt.group_cols)
    else:
        out[:] = 0.0
    return out


# -- GGUF storage ----------------------------------------------------------------------------
TensorSpec = tuple[str, tuple[int, ...], GGMLType, np.ndarray]
MetadataItem = tuple[str, Any, GGUFValueType, "GGUFValueType | None"]


def to_gguf_tensors(name: str, kmt: KMTensor) -> list[TensorSpec]:
    """The companion tensors of ``name``: [(tensor name, shape, type, data)], for add_tensor."""
    book_type = GGMLType.F16 if kmt.codebook.dtype == np.float16 else GGMLType.F32
    return [
        (name + CODES_SUFFIX, tuple(kmt.codes.shape), GGMLType.I8,
         np.ascontiguousarray(kmt.codes).view(np.int8)),
        (name + BOOK_SUFFIX, tuple(kmt.codebook.shape), book_type,
         np.ascontiguousarray(kmt.codebook)),
    ]


def metadata_items(name: str, kmt: KMTensor) -> list[MetadataItem]:
    """The keys describing ``name``: [(key, value, type, element type)], for GGUFWriter.add."""
    T = GGUFValueType
    return [
        (f"{KEY_PREFIX}{name}.bits", kmt.bits, T.UINT32, None),
        (f"{KEY_PREFIX}{name}.shape", list(kmt.shape), T.ARRAY, T.UINT64),
        (f"{KEY_PREFIX}{name}.group", [kmt.group_rows, kmt.group_cols], T.ARRAY, T.UINT32),
    ]


def add_to_writer(writer: Any, name: str, kmt: KMTensor) -> None:
    """Declare ``name`` as a KM tensor on a :class:`gguflite.GGUFWriter`."""
    for tname, shape, ttype, data in to_gguf_tensors(name, kmt):
        writer.add_tensor(tname, shape=shape, type=ttype, data=data)
    writer.add_items(metadata_items(name, kmt))


def km_tensor_names(f: Any) -> list[str]:
    """Names of the KM tensors of an open GGUFFile, in file order of their codes tensors."""
    names = []
    for tname in f.tensors:
        if tname.endswith(CODES_SUFFIX):
            base = tname[: -len(CODES_SUFFIX)]
            if f"{KEY_PREFIX}{base}.bits" in f.metadata:
                names.append(base)
    return names


def is_km_tensor(f: Any, name: str) -> bool:
    """True when ``name`` is stored as KM companion tensors (and not as a plain tensor)."""
    return (name not in f.tensors and name + CODES_SUFFIX in f.tensors
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


def from_gguf(f: Any, name: str) -> KMTensor:
    """Read KM tensor ``name`` from an open GGUFFile (zero-copy, read-only arrays).

    Raises ``MetadataError`` / ``TensorInfoError`` naming the key or tensor and the rule
    (KM1..KM4 of spec/extensions-km.md) when the companions do not fit together.
    """
    T = GGUFValueType
    bits = int(_key(f, f"{KEY_PREFIX}{name}.bits", T.UINT32))
    shape = _key(f, f"{KEY_PREFIX}{name}.shape", T.ARRAY, T.UINT64)
    group = _key(f, f"{KEY_PREFIX}{name}.group", T.ARRAY, T.UINT32)
    if bits not in BITS or len(shape) != 2 or len(group) != 2:
        raise MetadataError(f"KM tensor {name!r}: bits {bits} must be 2, 3 or 4 and shape and "
                            "group must have 2 entries (rule KM2)", rule="KM2")
    rows, cols = int(shape[0]), int(shape[1])
    gr, gc = int(group[0]), int(group[1])
    if not (1 <= gr <= max(rows, 1) and 1 <= gc <= max(cols, 1)
            and (gc == max(cols, 1) or gc % 8 == 0)):
        raise MetadataError(f"KM tensor {name!r}: group ({gr}, {gc}) does not fit shape "
                            f"({rows}, {cols}) (rule KM2)", rule="KM2")
    k = 1 << bits
    n_cb = -(-rows // gr) * -(-cols // gc)
    want = {
        name + CODES_SUFFIX: ((GGMLType.I8,), (rows, packed_bytes(cols, bits))),
        name + BOOK_SUFFIX: ((GGMLType.F16, GGMLType.F32), (n_cb, k)),
    }
    arrays = []
    for tname, (types, tshape) in want.items():
        if tname not in f.tensors:
            raise TensorInfoError(f"KM tensor {name!r}: companion tensor {tname!r} is missing "
                                  "(rule KM3)", rule="KM3")
        ti = f.tensors[tname]
        if ti.type not in types or tuple(ti.shape) != tshape:
            raise TensorInfoError(
                f"KM tensor {name!r}: {tname!r} is {ti.type.name} {tuple(ti.shape)}, expected "
                f"{'/'.join(t.name for t in types)} {tshape} (rule KM4)", rule="KM4",
                offset=ti.file_offset)
        arrays.append(f.array(tname))
    codes, book = arrays
    return KMTensor(bits, (rows, cols), gr, gc, codes.view(np.uint8), book)


# -- the codec-registry view: self-contained rows --------------------------------------------
class _KMCodec(Codec):
    """``quantize(w, "km4")``: per-row codebooks, each row = 2**bits F16 entries + codes.

    ``block_size`` / ``type_size`` describe the codes only (8 codes in ``bits`` bytes), so
    ``types()`` lists KM at its nominal bits; ``row_nbytes`` adds the codebook.
    """

    bits = 0
    block_size = 8
    # Bytes are not stable: re-quantizing a decoded row finds the same decoded values (each of
    # its <= 2**bits distinct values is its own optimal centroid) but may order or fill the
    # unused codebook entries differently. tests/test_quants_properties.py checks the values.
    requantize_stable = False

    @classmethod
    def max_error(cls, blocks: np.ndarray) -> np.ndarray:
        """Bound for blocks that together form whole rows (a whole tensor, as quantize sees).

        Every centroid is a weighted mean of its row's values, so it lies within the tensor's
        [min, max]; each value maps to a centroid, so no error exceeds max - min, plus the fp16
        rounding of the centroid (half an ulp: 2**-11 relative). There is no tighter a-priori
        per-block bound: a constant block can map to a centroid shared with far-away values.
        """
        b = np.asarray(blocks, dtype=np.float64)
        if b.size == 0:
            return np.zeros(b.shape[0])
        lo, hi = float(b.min()), float(b.max())
        bound = (hi - lo) + 2.0**-11 * max(abs(lo), abs(hi))
        return np.full(b.shape[0], bound * (1 + 1e-6) + np.finfo(np.float32).tiny)

    @classmethod
    def row_nbytes(cls, n_per_row: int) -> int:
        return 2 * (1 << cls.bits) + packed_bytes(n_per_row, cls.bits)

    @classmethod
    def quantize(cls, array: np.ndarray, *, importance: np.ndarray | None = None,
                 reference: bool = False, name: str = "tensor") -> np.ndarray:
        x = np.asarray(array, dtype=np.float32)
        lead, n = (x.shape[:-1], x.shape[-1]) if x.ndim else ((), 1)
        kmt = quantize(x.reshape(-1, n), cls.bits, importance=importance, reference=reference,
                       name=name)
        book = kmt.codebook.view(np.uint8).reshape(kmt.shape[0], -1)  # (rows, 2 * 2**bits)
        return np.concatenate([book, kmt.codes], axis=1).reshape(*lead, cls.row_nbytes(n))

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
        r = raw.reshape(rows, cls.row_nbytes(n))
        nb = 2 * (1 << cls.bits)
        book = np.ascontiguousarray(r[:, :nb]).view(np.float16)  # (rows, 2**bits)
        kmt = KMTensor(cls.bits, (rows, n), 1, max(n, 1), np.ascontiguousarray(r[:, nb:]), book)
        return kmt.dequantize(reference=reference).reshape(shape)


class KM2(_KMCodec):
    name = "km2"
    bits = 2
    type_size = 2


class KM3(_KMCodec):
    name = "km3"
    bits = 3
    type_size = 3


class KM4(_KMCodec):
    name = "km4"
    bits = 4
    type_size = 4
