"""The batched engine: one pass of the family's graph for the rows of all slots.

``BatchedSlots`` is ``SequentialSlots`` (one backend, so one KV cache, per slot) whose
``decode`` and ``prefill_many`` run ``gguflite.models.graph.forward`` once over the rows of
every slot in the step, through ``SlotOps``: the runtime's own ops (each slot backend's
``NumbaOps``), except that

- ``linear`` on a decode step is ``matvec_batch``: W is walked in blocks of ``SUB_ROWS`` rows,
  and while a block is in the L1/L2 cache the four-activation row kernels
  (``kernels.dispatch.rows_dot4``: each weight block unpacked once for up to four rows of X)
  or the runtime's one-row kernels (``rows_dot``, those of ``Linear.matvec`` and of the fused
  decode step) run over it; every sequence gets exactly the numbers it gets alone (bit for
  bit: tests/test_server_batching.py) while W is read from memory once per step;
- ``linear`` on a prefill stacks the prompt chunks of all slots into one ``Linear.matmul``
  (each weight unpacked once: the int8 matrix product, or dequantize + BLAS for the float and
  KM types), the rows padded to at least ``BLAS_MIN_TOKENS`` so every prompt takes the same
  path alone or beside others (each token's row of the product does not depend on the others);
- ``attention`` splits the rows by slot: each segment attends over its own slot's KV cache at
  its own positions (the slot backend's ``NumbaOps.attention``);
- a step of fewer than ``FOUR_ROW_MIN`` sequences takes the runtime's fused one-call step per
  slot, which the per-op graph equals (the runtime's tests).

The graph is the family's (one description, no copy); weights the mat-vec kernels cannot walk
(KM, the dense fallback) take their own ``matvec`` row by row, which is still the same per row
alone or batched. What is still missing: see ``slots.SlotEngine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit, prange

from gguflite.models.graph import forward
from gguflite.runtime.kernels import Linear, dispatch
from gguflite.runtime.kernels.activations import quantize_act
from gguflite.runtime.kernels.linear import BLAS_MIN_TOKENS
from gguflite.runtime.kernels.ternary import quantize_act_k

from .slots import SequentialSlots

if TYPE_CHECKING:
    from gguflite.runtime.engine import Model

SUB_ROWS = 32  # rows of W per cache-resident block (32 rows x 576 Q4_1 = 11.5 KiB)
FOUR_ROW_MIN = 3
"""Rows of X from which matvec_batch runs a four-row kernel (dispatch.rows_dot4) over them: it
costs ~2.4 one-row passes (SmolLM2 Q4_1 / Q8_0, 2 threads), so two rows take two one-row
passes, and a decode step of fewer sequences takes each slot's fused step."""

# Numba caches matvec_batch with dispatch's row kernels compiled in, keyed on this file's text
# only. This sha256 of kernels/dispatch.py (which carries its own fingerprint of the row
# kernels) makes a kernel change change this file too (tests/test_server_batching.py checks it
# is current), so no stale compiled function is ever loaded. Recompute: dispatch_fingerprint().
DISPATCH_FINGERPRINT = "2ed839044ef4a68d"


def dispatch_fingerprint() -> str:
    """sha256 (16 hex digits) of runtime/kernels/dispatch.py, for DISPATCH_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(dispatch.__file__).read_bytes()).hexdigest()[:16]


@njit(parallel=True, cache=True, fastmath=dispatch.ROW_FASTMATH, nogil=True)
def matvec_batch(kind, w, Y, row_bytes, X, xq, xd, xsd, kinds):
    """Y[s] = W @ X[s] for every row s, each block of W's rows loaded once for all rows.

    Parameters
    ----------
    kind : int, GGMLType id (not a KM kind)
    w : flat uint8, W as (rows, row_bytes) bytes
    Y : (n_seq, rows) float32 output
    X : (n_seq, n) float32 activations
    xq : (n_seq, n) int8; xd : (n_seq, n // 32) float32; xsd : (n_seq, n // 16) float32
        Scratch for the quantized activations (as dispatch._prepare lays them out).
    kinds : dispatch.Kinds holding ``kind`` (the weight's ``_kinds``): the row kernels compiled in
    """
    n_seq, n = X.shape
    tq = kind == dispatch.TQ1_0 or kind == dispatch.TQ2_0
    for s in range(n_seq):
        if tq:
            quantize_act_k(X[s], xq[s], xd[s], xsd[s])
        elif not dispatch.is_float(kind):
            quantize_act(X[s], xq[s], xd[s], xsd[s])
    rows = Y.shape[1]
    chunk = dispatch.matvec_chunk(rows)
    four = dispatch.has_rows4(kind)
    fq, fd, fsd = xq.reshape(-1), xd.reshape(-1), xsd.reshape(-1)
    for c in prange((rows + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, rows)
        for a in range(lo, hi, SUB_ROWS):
            b = min(a + SUB_ROWS, hi)
            s = 0
            while four and n_seq - s >= FOUR_ROW_MIN:  # 3 or 4 rows of X per pass
                count = min(4, n_seq - s)
                dispatch.rows_dot4(kind, w, row_bytes, n, a, b, Y, s, count, fq, fd, fsd,
                                   kinds)
                s += count
            for t in range(s, n_seq):  # the rest (and the kinds without a four-row kernel)
                dispatch.rows_dot(kind, w, row_bytes, n, a, b, Y[t], X[t], xq[t], xd[t],
                                  xsd[t], kinds)


def linear_rows(w: Any, x: np.ndarray) -> np.ndarray:
    """(n, in) -> (n, out), each row exactly as ``w.matvec`` of that row alone."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    out = np.empty((n, w.out_features), np.float32)
    if type(w) is Linear and w.kind < 1000:  # a ggml type: the batched walk
        c = w.in_features
        matvec_batch(w.kind, w._w, out, w.row_bytes, x, np.empty((n, c), np.int8),
                     np.empty((n, c // 32), np.float32), np.empty((n, c // 16), np.float32),
                     w._kinds)
    else:  # KM or dense: its own mat-vec, row by row
        for i in range(n):
            out[i] = w.matvec(x[i])
    return out


def linear_stacked(w: Any, x: np.ndarray) -> np.ndarray:
    """(n, in) -> (n, out) through ``w.matmul`` with at least BLAS_MIN_TOKENS rows, so the
    path (and each row's numbers) does not depend on n."""
    n = x.shape[0]
    if n >= BLAS_MIN_TOKENS:
        return w.matmul(np.ascontiguousarray(x, dtype=np.float32))
    padded = np.zeros((BLAS_MIN_TOKENS, x.shape[1]), np.float32)
    padded[:n] = x
    return w.matmul(padded)[:n]


class SlotOps:
    """``graph.Ops`` over the rows of several slots: ``segments`` (slot, first row, end row,
    position of the first row) say which rows belong to which slot."""

    def __init__(self, engine: BatchedSlots, segments: list[tuple[int, int, int, int]],
                 linear: Any, *, skip_output: bool = False):
        self.engine, self.segments, self._linear = engine, segments, linear
        self.skip_output = skip_output
        self.base = engine.backends[0].ops  # norms, glu and embedding touch no slot state

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return self.base.embed(ids)

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self.base.rmsnorm(x, w)

    def glu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        return self.base.glu(gate, up)

    def linear(self, w: Any, x: np.ndarray) -> np.ndarray:
        if self.skip_output and w is self.engine.weights.output:  # prefill: no logits needed
            return np.zeros((x.shape[0], w.out_features), np.float32)
        return self._linear(w, x)

    def attention(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                  pos0: int) -> np.ndarray:
        out = np.empty((q.shape[0], q.shape[1] * q.shape[2]), np.float32)  # (n, H * hd)
        for slot, a, b, pos in self.segments:  # each slot: its cache, its positions
            ops = self.engine.backends[slot].ops
            out[a:b] = ops.attention(layer, q[a:b], k[a:b], v[a:b], pos)
        return out


class BatchedSlots(SequentialSlots):
    """``SlotEngine`` running each step's rows of all slots through one pass of the graph."""

    def __init__(self, model: Model, n_slots: int, *, n_ctx: int | None = None,
                 n_batch: int = 64):
        super().__init__(model, n_slots, n_ctx=n_ctx, n_batch=n_batch)
        be = self.backends[0]
        self.weights, self.hp = be.w, be.hparams

    def warm_up(self) -> None:
        """SequentialSlots.warm_up, then a step of FOUR_ROW_MIN sequences at position 0 when
        there are that many slots: the multi-sequence step's kernels (matvec_batch with the
        four-row kernels) compile here, not in the first step that has them (~5 s on a cold
        cache, which stalled every running stream)."""
        super().warm_up()
        if self.n_slots >= FOUR_ROW_MIN:
            n = FOUR_ROW_MIN
            self.decode(list(range(n)), np.zeros(n, np.int64), np.zeros(n, np.int64))

    def _reserve(self, slot: int, end: int) -> None:
        self.backends[slot].kv.reserve(end)  # the cache grows as the context fills

    def prefill_many(self, work: Sequence[tuple[int, np.ndarray, int]]) -> None:
        segments, ids, row = [], [], 0
        for slot, chunk, pos in work:
            chunk = np.asarray(chunk, np.int64)
            self._reserve(slot, pos + len(chunk))
            segments.append((slot, row, row + len(chunk), pos))
            ids.append(chunk)
            row += len(chunk)
        ops = SlotOps(self, segments, linear_stacked, skip_output=True)
        forward(ops, self.weights, self.hp, np.concatenate(ids), 0, all_logits=False)

    def decode(self, slots: Sequence[int], ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        if len(slots) < FOUR_ROW_MIN and all(self.backends[s].fused for s in slots):
            # one or two sequences: the runtime's fused step per slot, the same row kernels in
            # one Numba call (equal to the per-op graph, which the batched rows reproduce;
            # test_server_batching); the four-row kernels pay off from three rows on
            return super().decode(slots, ids, positions)
        segments = []
        for i, (slot, pos) in enumerate(zip(slots, positions, strict=True)):
            self._reserve(slot, int(pos) + 1)
            segments.append((slot, i, i + 1, int(pos)))
        ops = SlotOps(self, segments, linear_rows)
        ids = np.asarray(ids, np.int64)
        return forward(ops, self.weights, self.hp, ids, 0, all_logits=True)  # (n, vocab)
