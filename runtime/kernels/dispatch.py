"""The parallel drivers: one Numba call per mat-vec group, per mat-mul or per row gather.

Each driver takes the weight type as an integer ``kind`` (the GGMLType id, or one of the KM
pseudo kinds of km_rows: 1002 / 1003 / 1004 for KM2 / KM3 / KM4) and switches to the
type's row kernel once per row run. Weights are always flat read-only uint8 arrays, groups always
4-tuples (unused slots hold empty arrays).

Which kinds a driver can switch to is part of its compiled signature: the last argument,
``kinds``, is a :class:`Kinds` set (default ``ALL_KINDS``), and only the row kernels of the kinds
in it are compiled. ``Linear`` passes the set of its own kind, so a Q4_1 model never compiles
the K-quant, ternary or KM kernels; a caller that switches over several kinds at run time (the
fused decode step) passes the set of the file's kinds. One compiled signature per driver and
kind set, for all sizes.

Parallel regions: one ``prange`` over output rows per call; a mat-vec group (q, k, v sharing one
activation vector) puts all its rows in the same region.
"""

from __future__ import annotations

import os

import numpy as np
from numba import config, njit, prange, types
from numba.core.imputils import lower_constant
from numba.extending import NativeValue, models, overload, register_model, unbox

from ...constants import GGMLType
from . import floats as fl
from . import km_rows as km
from . import kquants as kq
from . import legacy as lg
from . import ternary as tq
from . import vector_iq4 as iq
from .activations import quantize_act

# Numba keys the on-disk cache of a function on the text of *its own* file, but the drivers here
# inline the row kernels of the modules below. This fingerprint of their text makes any edit
# there change this file too (test_kernels_api checks it is current), so no stale compiled
# driver is ever loaded from a cache. Recompute with kernel_sources_fingerprint().
SOURCES_FINGERPRINT = "cb3a032b72954404"
INLINED_MODULES = ("activations", "floats", "km_rows", "kquants", "legacy", "ternary",
                   "vector_f32", "vector_gemm", "vector_iq4", "vector_ir", "vector_km",
                   "vector_tq")


def kernel_sources_fingerprint() -> str:
    """sha256 of the text of INLINED_MODULES, for SOURCES_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256()
    for name in INLINED_MODULES:
        h.update((Path(__file__).with_name(name + ".py")).read_bytes())
    return h.hexdigest()[:16]


ROW_FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
"""The fast-math flags of the row-kernel drivers: fastmath=True without ``reassoc``. Row kernels
are inlined into their driver and compiled with its flags; without reassociation LLVM keeps
each row's arithmetic in the order written, so a row's result does not depend on the shape of
the driver around it (serve/batched.matvec_batch's four-row kernels give each row exactly
what ``rows_dot`` gives it alone; with ``reassoc`` they differed in the last bit)."""

F32, F16, BF16 = int(GGMLType.F32), int(GGMLType.F16), int(GGMLType.BF16)
Q4_0, Q4_1, Q5_0, Q5_1 = (int(GGMLType.Q4_0), int(GGMLType.Q4_1), int(GGMLType.Q5_0),
                          int(GGMLType.Q5_1))
Q8_0, Q2_K, Q3_K, Q4_K = (int(GGMLType.Q8_0), int(GGMLType.Q2_K), int(GGMLType.Q3_K),
                          int(GGMLType.Q4_K))
Q5_K, Q6_K, TQ1_0, TQ2_0 = (int(GGMLType.Q5_K), int(GGMLType.Q6_K), int(GGMLType.TQ1_0),
                            int(GGMLType.TQ2_0))
IQ4_NL, IQ4_XS = int(GGMLType.IQ4_NL), int(GGMLType.IQ4_XS)

KERNEL_TYPES = frozenset(GGMLType(k) for k in (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
                                               Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0,
                                               IQ4_NL, IQ4_XS))
FLOAT_TYPES = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16})
# gguflite's KM v2 types have no ggml id: pseudo kinds >= 1000, defined in km_rows.
KM2, KM3, KM4 = km.KM2_KIND, km.KM3_KIND, km.KM4_KIND
ALL_KIND_IDS = tuple(sorted(int(t) for t in KERNEL_TYPES)) + (KM2, KM3, KM4)


# -- the set of kinds a compiled driver covers: a compile-time constant carried by a type -------
class KindsType(types.Type):
    """Numba type of a :class:`Kinds` value: the set itself (a bit per entry of ALL_KIND_IDS)
    is the type's parameter, so each set gets its own compiled driver (and cache entry) and
    the value carries no data."""

    def __init__(self, mask: int):
        self.mask = mask
        names = [str(k) for i, k in enumerate(ALL_KIND_IDS) if mask >> i & 1]
        super().__init__(name=f"Kinds({','.join(names)})")

    def has(self, *kinds: int) -> bool:
        """True when any of ``kinds`` is in the set."""
        return any(self.mask >> ALL_KIND_IDS.index(k) & 1 for k in kinds)


register_model(KindsType)(models.OpaqueModel)


@unbox(KindsType)
def _unbox_kinds(typ, obj, c):
    return NativeValue(c.context.get_dummy_value())


@lower_constant(KindsType)
def _constant_kinds(context, builder, ty, pyval):
    return context.get_dummy_value()


class Kinds:
    """A set of kernel kinds (GGMLType ids and KM pseudo kinds) a driver call may switch to.

    Build them with :func:`kinds_of` (one object per set, reused, so dispatch stays fast).
    """

    __slots__ = ("ids", "_numba_type_")

    def __init__(self, ids: frozenset[int]):
        unknown = set(ids) - set(ALL_KIND_IDS)
        if unknown:
            raise ValueError(f"no row kernel for kind(s) {sorted(unknown)}")
        self.ids = frozenset(ids)
        self._numba_type_ = KindsType(sum(1 << ALL_KIND_IDS.index(k) for k in self.ids))

    def __repr__(self) -> str:
        return f"Kinds({sorted(self.ids)})"


_KINDS: dict[frozenset[int], Kinds] = {}


def kinds_of(*kinds: int) -> Kinds:
    """The (shared) :class:`Kinds` object of a set of kind ids.

    With ``GGUFLITE_KERNEL_KINDS=all`` in the environment every set is widened to ALL_KINDS:
    each driver is then compiled once for everything, which is cheaper for a process that
    meets many types (the test suite: 28 s of CPU for all 15 ggml types at once, 71 s one type
    at a time) and dearer for one that meets a few (a first ``gguflite run``).
    """
    key = frozenset(int(k) for k in kinds)
    found = _KINDS.get(key)
    if found is None:
        found = _KINDS[key] = Kinds(key)
    if os.environ.get("GGUFLITE_KERNEL_KINDS") == "all" and "ALL_KINDS" in globals():
        return ALL_KINDS
    return found


ALL_KINDS = kinds_of(*ALL_KIND_IDS)


def _kinds_type(kinds) -> KindsType | None:
    """The KindsType of a driver's ``kinds`` argument (given, or omitted: its default)."""
    if isinstance(kinds, types.Omitted):
        return kinds.value._numba_type_ if isinstance(kinds.value, Kinds) else None
    return kinds if isinstance(kinds, KindsType) else None


def _in_kinds(kind, kinds):
    """True when ``kind`` is in ``kinds``; compiled from _in_kinds_for."""
    raise NotImplementedError("only callable from compiled code")


@overload(_in_kinds)
def _in_kinds_for(kind, kinds):
    kt = _kinds_type(kinds)
    if kt is None:
        return None
    ids = tuple(k for i, k in enumerate(ALL_KIND_IDS) if kt.mask >> i & 1)

    def impl(kind, kinds):
        for k in ids:
            if kind == k:
                return True
        return False

    return impl


@njit(cache=True)
def is_float(kind):
    return kind == F32 or kind == F16 or kind == BF16


# -- serial row loops: one branch per type, each a direct call of an inline="always" kernel.
# A row-range kernel (rows_<type>: the row loop and the block loop in one function) costs no
# reference counting per row; calling an inline="always" single-row kernel (dot_<type>) in a
# loop leaves an atomic incref/decref of each array argument per row, which Numba's pruning
# does not remove (measured: 1.5-1.9x slower on 576-wide rows, and both threads then hammer the
# same counters).
#
# The switches are generated per Kinds set (numba.extending.overload): each branch is guarded
# by a flag of the set frozen into the function, so Numba prunes the branches of other kinds
# before typing and never compiles their kernels ---------------------------------------------
@njit(cache=True, fastmath=ROW_FASTMATH)
def rows_dot(kind, w, row_bytes, n, lo, hi, y, x, xq, xd, xsd, kinds=ALL_KINDS):
    """y[lo:hi] = W[lo:hi] @ x, switching on the type once per run of rows.

    For the KM kinds, xq / xd / xsd cover x padded with zeros to a multiple of 64 (_prepare).
    ``kind`` must be in ``kinds``.
    """
    _rows_dot(kind, w, row_bytes, n, lo, hi, y, x, xq, xd, xsd, kinds)


def _rows_dot(kind, w, row_bytes, n, lo, hi, y, x, xq, xd, xsd, kinds):
    """The switch of rows_dot; compiled from _rows_dot_for."""
    raise NotImplementedError("only callable from compiled code")


@overload(_rows_dot, jit_options={"fastmath": ROW_FASTMATH})
def _rows_dot_for(kind, w, row_bytes, n, lo, hi, y, x, xq, xd, xsd, kinds):
    kt = _kinds_type(kinds)
    if kt is None:
        return None
    q4_k, q6_k, q8_0, q4_1, q4_0, q5_0, q5_1, q5_k, q3_k, q2_k, tq2_0, tq1_0 = (
        kt.has(k) for k in (Q4_K, Q6_K, Q8_0, Q4_1, Q4_0, Q5_0, Q5_1, Q5_K, Q3_K, Q2_K, TQ2_0,
                            TQ1_0))
    km4, km3, km2, f16, bf16, f32 = (kt.has(k) for k in (KM4, KM3, KM2, F16, BF16, F32))
    iq4_nl, iq4_xs = kt.has(IQ4_NL), kt.has(IQ4_XS)

    def switch(kind, w, row_bytes, n, lo, hi, y, x, xq, xd, xsd, kinds):
        nb = n // 32
        if q4_k and kind == Q4_K:
            kq.rows_q4_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q6_k and kind == Q6_K:
            kq.rows_q6_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q8_0 and kind == Q8_0:
            lg.rows_q8_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q4_1 and kind == Q4_1:
            lg.rows_q4_1(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q4_0 and kind == Q4_0:
            lg.rows_q4_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q5_0 and kind == Q5_0:
            lg.rows_q5_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q5_1 and kind == Q5_1:
            lg.rows_q5_1(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q5_k and kind == Q5_K:
            kq.rows_q5_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q3_k and kind == Q3_K:
            kq.rows_q3_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif q2_k and kind == Q2_K:
            kq.rows_q2_k(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif iq4_xs and kind == IQ4_XS:
            iq.rows_iq4_xs(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif iq4_nl and kind == IQ4_NL:
            iq.rows_iq4_nl(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif tq2_0 and kind == TQ2_0:
            tq.rows_tq2_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif tq1_0 and kind == TQ1_0:
            tq.rows_tq1_0(w, row_bytes, nb, lo, hi, y, xq, xd, xsd)
        elif km4 and kind == KM4:
            km.rows_km4(w, row_bytes, km.padded_cols(n) // 32, lo, hi, y, xq, xd, xsd)
        elif km3 and kind == KM3:
            km.rows_km3(w, row_bytes, km.padded_cols(n) // 32, lo, hi, y, xq, xd, xsd)
        elif km2 and kind == KM2:
            km.rows_km2(w, row_bytes, km.padded_cols(n) // 32, lo, hi, y, xq, xd, xsd)
        elif f16 and kind == F16:
            fl.rows_f16(w, row_bytes, n, lo, hi, y, x)
        elif bf16 and kind == BF16:
            fl.rows_bf16(w, row_bytes, n, lo, hi, y, x)
        elif f32 and kind == F32:
            fl.rows_f32(w, row_bytes, n, lo, hi, y, x)
        else:
            raise ValueError("rows_dot: kind outside the driver's Kinds set")

    return switch


@njit(cache=True)
def has_rows4(kind):
    """True when ``kind`` has a four-activation row kernel (rows_dot4)."""
    return kind == Q4_0 or kind == Q4_1 or kind == Q5_0 or kind == Q5_1 or kind == Q8_0


@njit(cache=True, fastmath=ROW_FASTMATH)
def rows_dot4(kind, w, row_bytes, n, lo, hi, Y, s0, count, xq, xd, xsd, kinds=ALL_KINDS):
    """Y[s0 + k, lo:hi] = W[lo:hi] @ x_{s0 + k} for k < count (<= 4), each block of W unpacked
    once for all of them; every row of Y equals what rows_dot gives that activation alone.

    Y : (n_seq, rows) float32; xq, xd, xsd : the quantized activations of all n_seq rows, flat
    (as _prepare lays out one). ``kind`` must satisfy has_rows4 and be in ``kinds``.
    """
    _rows_dot4(kind, w, row_bytes, n, lo, hi, Y, s0, count, xq, xd, xsd, kinds)


def _rows_dot4(kind, w, row_bytes, n, lo, hi, Y, s0, count, xq, xd, xsd, kinds):
    """The switch of rows_dot4; compiled from _rows_dot4_for."""
    raise NotImplementedError("only callable from compiled code")


@overload(_rows_dot4, jit_options={"fastmath": ROW_FASTMATH})
def _rows_dot4_for(kind, w, row_bytes, n, lo, hi, Y, s0, count, xq, xd, xsd, kinds):
    kt = _kinds_type(kinds)
    if kt is None:
        return None
    q8_0, q4_1, q4_0, q5_0, q5_1 = (kt.has(k) for k in (Q8_0, Q4_1, Q4_0, Q5_0, Q5_1))

    def switch(kind, w, row_bytes, n, lo, hi, Y, s0, count, xq, xd, xsd, kinds):
        nb = n // 32
        if q8_0 and kind == Q8_0:
            lg.rows4_q8_0(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd)
        elif q4_1 and kind == Q4_1:
            lg.rows4_q4_1(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd)
        elif q4_0 and kind == Q4_0:
            lg.rows4_q4_0(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd)
        elif q5_0 and kind == Q5_0:
            lg.rows4_q5_0(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd)
        elif q5_1 and kind == Q5_1:
            lg.rows4_q5_1(w, row_bytes, nb, lo, hi, Y, s0, count, xq, xd, xsd)
        else:
            raise ValueError("rows_dot4: kind without a four-row kernel or outside the set")

    return switch


@njit(cache=True)
def rows_deq(kind, w, row_bytes, n, ids, first, lo, hi, flat, kinds=ALL_KINDS):
    """flat[k * n : (k + 1) * n] = row (ids[k] or first + k) of W, for k in [lo, hi).

    ``kind`` must be in ``kinds``.
    """
    _rows_deq(kind, w, row_bytes, n, ids, first, lo, hi, flat, kinds)


def _rows_deq(kind, w, row_bytes, n, ids, first, lo, hi, flat, kinds):
    """The switch of rows_deq; compiled from _rows_deq_for."""
    raise NotImplementedError("only callable from compiled code")


@overload(_rows_deq)
def _rows_deq_for(kind, w, row_bytes, n, ids, first, lo, hi, flat, kinds):
    kt = _kinds_type(kinds)
    if kt is None:
        return None
    q4_k, q6_k, q8_0, q4_1, q4_0, q5_0, q5_1, q5_k, q3_k, q2_k, tq2_0, tq1_0 = (
        kt.has(k) for k in (Q4_K, Q6_K, Q8_0, Q4_1, Q4_0, Q5_0, Q5_1, Q5_K, Q3_K, Q2_K, TQ2_0,
                            TQ1_0))
    km4, km3, km2, f16, bf16, f32 = (kt.has(k) for k in (KM4, KM3, KM2, F16, BF16, F32))
    iq4_nl, iq4_xs = kt.has(IQ4_NL), kt.has(IQ4_XS)

    def switch(kind, w, row_bytes, n, ids, first, lo, hi, flat, kinds):
        nb = n // 32
        for k in range(lo, hi):
            p = (ids[k] if ids.size else first + k) * row_bytes
            if q4_k and kind == Q4_K:
                kq.deq_q4_k(w, p, nb, flat, k * n)
            elif q6_k and kind == Q6_K:
                kq.deq_q6_k(w, p, nb, flat, k * n)
            elif q8_0 and kind == Q8_0:
                lg.deq_q8_0(w, p, nb, flat, k * n)
            elif q4_1 and kind == Q4_1:
                lg.deq_q4_1(w, p, nb, flat, k * n)
            elif q4_0 and kind == Q4_0:
                lg.deq_q4_0(w, p, nb, flat, k * n)
            elif q5_0 and kind == Q5_0:
                lg.deq_q5_0(w, p, nb, flat, k * n)
            elif q5_1 and kind == Q5_1:
                lg.deq_q5_1(w, p, nb, flat, k * n)
            elif q5_k and kind == Q5_K:
                kq.deq_q5_k(w, p, nb, flat, k * n)
            elif q3_k and kind == Q3_K:
                kq.deq_q3_k(w, p, nb, flat, k * n)
            elif q2_k and kind == Q2_K:
                kq.deq_q2_k(w, p, nb, flat, k * n)
            elif iq4_xs and kind == IQ4_XS:
                iq.deq_iq4_xs(w, p, nb, flat, k * n)
            elif iq4_nl and kind == IQ4_NL:
                iq.deq_iq4_nl(w, p, nb, flat, k * n)
            elif tq2_0 and kind == TQ2_0:
                tq.deq_tq2_0(w, p, nb, flat, k * n)
            elif tq1_0 and kind == TQ1_0:
                tq.deq_tq1_0(w, p, nb, flat, k * n)
            elif km4 and kind == KM4:
                km.deq_km4(w, p, n, flat, k * n)
            elif km3 and kind == KM3:
                km.deq_km3(w, p, n, flat, k * n)
            elif km2 and kind == KM2:
                km.deq_km2(w, p, n, flat, k * n)
            elif f16 and kind == F16:
                fl.deq_f16(w, p, n, flat, k * n)
            elif bf16 and kind == BF16:
                fl.deq_bf16(w, p, n, flat, k * n)
            elif f32 and kind == F32:
                fl.deq_f32(w, p, n, flat, k * n)
            else:
                raise ValueError("rows_deq: kind outside the driver's Kinds set")

    return switch


CHUNK_ROWS = 16  # rows per parallel work item (the type switch runs once per item)
# At most this many work items per mat-vec region. Each rows_dot call increments and decrements
# the reference counts of its ~6 arrays atomically, and the arrays are shared by all threads:
# with one call per 16 rows (~1 us of work) the threads would bounce those counters' cache lines
# between cores. (Not measurable on the loaded machine of 2026-11-25; one thread's CPU time is
# unchanged.) Numba's schedule is static (each thread runs one contiguous range of items), so a
# few items per thread lose no balance. NUMBA_NUM_THREADS (the pool size) is frozen at compile
# time, which only matters for speed.
MAX_MATVEC_ITEMS = 4 * config.NUMBA_NUM_THREADS


@njit(cache=True)
def matvec_chunk(rows):
    """Rows per work item of a mat-vec region over ``rows`` rows."""
    items = min((rows + CHUNK_ROWS - 1) // CHUNK_ROWS, MAX_MATVEC_ITEMS)
    return (rows + items - 1) // items if items > 0 else CHUNK_ROWS


def scratch_bytes(n: int) -> int:
    """Bytes of the activation scratch for in_features n: xq (n_p) | xd (n_p // 32) |
    xsd (n_p // 16) | 16 spare bytes, with n_p = n rounded up to a multiple of 64 (KM rows are
    padded to 64; the KM row tails read 16 bytes of xsd from their block on)."""
    n_p = (n + 63) // 64 * 64
    return n_p + 4 * (n_p // 32) + 4 * (n_p // 16) + 16


def _prepare(kind, x, scratch, kinds):
    """Views of the scratch buffer (xq, xd, xsd), filled with the quantized x for int8 types;
    for the KM kinds, x is padded with zeros to a multiple of 64 and quantized with per-256
    steps and per-32 integer multipliers (km_rows.quantize_act_km). Compiled from
    _prepare_for, with the quantizers of ``kinds`` only."""
    raise NotImplementedError("only callable from compiled code")


@overload(_prepare)
def _prepare_for(kind, x, scratch, kinds):
    kt = _kinds_type(kinds)
    if kt is None:
        return None
    km_in = kt.has(KM2, KM3, KM4)
    tq_in = kt.has(TQ1_0, TQ2_0)
    int8_in = kt.has(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS)

    def prepare(kind, x, scratch, kinds):
        n = x.size
        spare = 0
        if km_in and km.is_km_kind(kind):
            n = km.padded_cols(x.size)
            spare = 16  # the KM row tails read past their block sums
        nb = n // 32
        xq = scratch[:n].view(np.int8)
        xd = scratch[n : n + 4 * nb].view(np.float32)
        xsd = scratch[n + 4 * nb : n + 12 * nb + spare].view(np.float32)
        if km_in and km.is_km_kind(kind):  # per-256 steps, per-32 multipliers and sums
            km.quantize_act_km(x, xq, xd, xsd)
        elif tq_in and (kind == TQ1_0 or kind == TQ2_0):  # one scale per 256, as Q8_K
            tq.quantize_act_k(x, xq, xd, xsd)
        elif int8_in and not is_float(kind):
            quantize_act(x, xq, xd, xsd)
        return xq, xd, xsd

    return prepare


@njit(cache=True)
def matvec_one(kind, w, y, row_bytes, x, scratch, kinds=ALL_KINDS):
    """y = W @ x, one parallel region over chunks of rows: matvec_group with one weight (the
    same region and row chunks, and one parallel function less to compile).

    Parameters
    ----------
    kind : int, the GGMLType id or a KM pseudo kind
    w : flat uint8 array, W as (y.size, row_bytes) bytes
    y : (rows,) float32 output
    x : (n,) float32 activation
    scratch : (scratch_bytes(n),) uint8 buffer for the quantized activation
    kinds : Kinds holding ``kind``: the kernels compiled into this call (kinds_of)
    """
    no_w = w[:0]  # empty slots of the types of w and y: matvec_group's one signature
    no_y = y[:0]
    matvec_group(kind, (w, no_w, no_w, no_w), (y, no_y, no_y, no_y), row_bytes, x, scratch,
                 kinds)


@njit(parallel=True, cache=True, fastmath=ROW_FASTMATH)
def matvec_group(kind, ws, ys, row_bytes, x, scratch, kinds=ALL_KINDS):
    """ys[m] = W_m @ x for up to 4 weights of one type and in_features sharing one activation.

    Parameters
    ----------
    kind : int, the GGMLType id (or KM pseudo kind) of every weight
    ws : 4-tuple of flat uint8 arrays, W_m as (rows_m, row_bytes) bytes; unused slots empty
    ys : 4-tuple of (rows_m,) float32 outputs; unused slots empty
    x : (n,) float32 activation
    scratch : (scratch_bytes(n),) uint8 buffer for the quantized activation
    kinds : Kinds holding ``kind`` (see matvec_one)
    """
    if not _in_kinds(kind, kinds):  # checked here: an exception inside prange is garbled
        raise ValueError("matvec_group: kind outside the driver's Kinds set")
    n = x.size
    xq, xd, xsd = _prepare(kind, x, scratch, kinds)
    n0 = ys[0].size
    n1 = ys[1].size
    n2 = ys[2].size
    n3 = ys[3].size
    chunk = matvec_chunk(n0 + n1 + n2 + n3)
    for c in prange((n0 + n1 + n2 + n3 + chunk - 1) // chunk):
        lo = c * chunk  # rows [lo, hi) of the concatenation W_0; W_1; W_2; W_3
        hi = lo + chunk
        base = 0
        for m, nm in enumerate((n0, n1, n2, n3)):
            a = max(lo - base, 0)
            b = min(hi - base, nm)
            if a < b:
                rows_dot(kind, ws[m], row_bytes, n, a, b, ys[m], x, xq, xd, xsd, kinds)
            base += nm


@njit(parallel=True, cache=True)
def dequant_rows(kind, w, row_bytes, n, ids, first, dst, kinds=ALL_KINDS):
    """dst[k] = row ids[k] of W as float32, or row first + k when ids is empty.

    dst : (count, n) float32, C-contiguous
    kinds : Kinds holding ``kind`` (see matvec_one)
    """
    if not _in_kinds(kind, kinds):
        raise ValueError("dequant_rows: kind outside the driver's Kinds set")
    flat = dst.reshape(-1)
    count = dst.shape[0]
    for c in prange((count + CHUNK_ROWS - 1) // CHUNK_ROWS):
        lo = c * CHUNK_ROWS
        rows_deq(kind, w, row_bytes, n, ids, first, lo, min(lo + CHUNK_ROWS, count), flat,
                 kinds)
