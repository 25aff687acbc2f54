"""Prototype of a true batched decode step: every weight read once per step for all slots.

``BatchedSlots`` is ``SequentialSlots`` (one backend, so one KV cache, per slot) with a
``decode`` that runs the Llama block loop once for the n sequences of the step::

    X (n, dim) = embed(ids)
    per layer:  XB = rmsnorm(X) * attn_norm
                Q, K, V = XB Wq^T, XB Wk^T, XB Wv^T           matvec_batch: W read once
                per slot s: rope + attention of row s over slot s's KV cache at its position
                X += att Wo^T ;  XB = rmsnorm(X) * ffn_norm
                X += (silu(XB Wgate^T) * (XB Wup^T)) Wdown^T
    logits (n, vocab) = (rmsnorm(X) * out_norm) Wout^T

``matvec_batch`` walks W in blocks of ``SUB_ROWS`` rows and, while a block is in the L1/L2
cache, runs the runtime's own row kernels (``kernels.dispatch.rows_dot``, the kernels of
``Linear.matvec`` and of the fused decode step) once per sequence, so each sequence gets
exactly the numbers it gets alone while memory traffic is paid once per step instead of once
per sequence. It reads the runtime's weight objects (``Linear._w`` / ``kind`` /
``row_bytes``, as ``llama_decode.DecodePlan`` does) and the per-slot backends' KV caches: a
prototype of what the engine should offer after issue 12 (see ``SlotEngine``), limited to
files whose linear weights all have kernels and are not KM types (``supported``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numba import njit, prange

from gguflite.errors import ModelError
from gguflite.runtime import ops
from gguflite.runtime.kernels import dispatch
from gguflite.runtime.kernels.activations import quantize_act
from gguflite.runtime.kernels.ternary import quantize_act_k

from .slots import SequentialSlots

if TYPE_CHECKING:
    from gguflite.runtime.engine import Model

SUB_ROWS = 32  # rows of W per cache-resident block (32 rows x 576 Q4_1 = 11.5 KiB)

# Numba caches matvec_batch with dispatch's row kernels compiled in, keyed on this file's text
# only. This sha256 of kernels/dispatch.py (which carries its own fingerprint of the row
# kernels) makes a kernel change change this file too (tests/test_server_batching.py checks it
# is current), so no stale compiled function is ever loaded. Recompute: dispatch_fingerprint().
DISPATCH_FINGERPRINT = "e55633c8ace3431b"


def dispatch_fingerprint() -> str:
    """sha256 (16 hex digits) of runtime/kernels/dispatch.py, for DISPATCH_FINGERPRINT."""
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(dispatch.__file__).read_bytes()).hexdigest()[:16]


@njit(parallel=True, cache=True, fastmath=True)
def matvec_batch(kind, w, Y, row_bytes, X, xq, xd, xsd):
    """Y[s] = W @ X[s] for every sequence s, each block of W's rows loaded once for all.

    Parameters
    ----------
    kind : int, GGMLType id (not a KM kind)
    w : flat uint8, W as (rows, row_bytes) bytes
    Y : (n_seq, rows) float32 output
    X : (n_seq, n) float32 activations
    xq : (n_seq, n) int8; xd : (n_seq, n // 32) float32; xsd : (n_seq, n // 16) float32
        Scratch for the quantized activations (as dispatch._prepare lays them out).
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
    for c in prange((rows + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, rows)
        for a in range(lo, hi, SUB_ROWS):
            b = min(a + SUB_ROWS, hi)
            for s in range(n_seq):
                dispatch.rows_dot(kind, w, row_bytes, n, a, b, Y[s], X[s], xq[s], xd[s],
                                  xsd[s])


class _Lin:
    """One weight as matvec_batch takes it."""

    def __init__(self, lin):
        self.w, self.kind, self.row_bytes = lin._w, lin.kind, lin.row_bytes
        self.rows, self.cols = lin.out_features, lin.in_features


class BatchedSlots(SequentialSlots):
    """``SlotEngine`` whose ``decode`` reads each weight once for all slots of the step, and
    whose ``prefill_many`` runs the prompt chunks of all slots as one stack of rows through
    ``Linear.matmul`` (each weight dequantized once per call, not once per prompt).

    Prefill rows are padded to at least ``BLAS_MIN_TOKENS``, so every prompt takes the same
    (dequantize + BLAS) path whatever else is in the stack, and a BLAS row does not depend on
    the other rows: a prompt fills its KV cache with the same numbers alone or beside others.
    """

    def __init__(self, model: Model, n_slots: int, *, n_ctx: int | None = None,
                 n_batch: int = 64):
        super().__init__(model, n_slots, n_ctx=n_ctx, n_batch=n_batch)
        if not self.supported(model):
            raise ModelError("the batched decode step needs every linear weight in a type "
                             "with a mat-vec kernel (not KM); use --engine sequential")
        hp = self.hp = model.hparams
        w = self.backends[0].w
        self.blocks = [(b.attn_norm, _Lin(b.wq), _Lin(b.wk), _Lin(b.wv), _Lin(b.wo),
                        b.ffn_norm, _Lin(b.w_gate), _Lin(b.w_up), _Lin(b.w_down))
                       for b in w.blocks]
        self.tok_embd, self.tok_embd_type = w.tok_embd, w.tok_embd_type
        self.out_norm, self.output = w.output_norm, _Lin(w.output)
        self.cos, self.sin = self.backends[0].cos, self.backends[0].sin
        ns, f32 = n_slots, np.float32
        self.x = np.zeros((ns, hp.dim), f32)  # residual stream
        self.xb = np.zeros((ns, hp.dim), f32)
        self.delta = np.zeros((ns, hp.dim), f32)
        self.q = np.zeros((ns, hp.n_head, hp.head_dim), f32)
        self.k = np.zeros((ns, hp.n_kv_head, hp.head_dim), f32)
        self.v = np.zeros((ns, hp.n_kv_head, hp.head_dim), f32)
        self.att = np.zeros((ns, hp.q_dim), f32)
        self.gate = np.zeros((ns, hp.hidden_dim), f32)
        self.up = np.zeros((ns, hp.hidden_dim), f32)
        self.hb = np.zeros((ns, hp.hidden_dim), f32)
        self.scores = np.zeros((hp.n_head, self.n_ctx), f32)
        # quantized activations, per input width: xq (ns, w) int8, xd (ns, w // 32),
        # xsd (ns, w // 16) float32, each C-contiguous so rows are contiguous vectors
        self.scratch = {c: (np.zeros((ns, c), np.int8), np.zeros((ns, c // 32), f32),
                            np.zeros((ns, c // 16), f32))
                        for c in {hp.dim, hp.q_dim, hp.hidden_dim}}

    @staticmethod
    def supported(model: Model) -> bool:
        """True when every linear weight is a kernels ``Linear`` of a ggml type (no KM, no
        dense fallback) and the embedding table is a plain typed tensor."""
        from gguflite.runtime.kernels import Linear

        w = getattr(model.backend, "w", None)
        if w is None:
            return False
        lins = [lin for b in w.blocks for lin in (b.wq, b.wk, b.wv, b.wo, b.w_gate, b.w_up,
                                                   b.w_down)] + [w.output]
        return (w.tok_embd_type is not None
                and all(type(lin) is Linear and lin.kind < 1000 for lin in lins))

    def _mv(self, lin: _Lin, X: np.ndarray, Y: np.ndarray) -> None:
        n = X.shape[0]
        xq, xd, xsd = self.scratch[lin.cols]
        matvec_batch(lin.kind, lin.w, Y, lin.row_bytes, X, xq[:n], xd[:n], xsd[:n])

    def prefill_many(self, work: Sequence[tuple[int, np.ndarray, int]]) -> None:
        from gguflite.runtime.kernels.linear import BLAS_MIN_TOKENS
        from gguflite.runtime.llama import embed_rows

        hp, eps = self.hp, self.hp.norm_eps
        sizes = [len(ids) for _, ids, _ in work]
        n_rows = sum(sizes)
        r = max(n_rows, BLAS_MIN_TOKENS)  # padding rows (zeros) stay out of every cache
        f32 = np.float32
        x = np.zeros((r, hp.dim), f32)  # (r, dim) residual stream, prompts stacked
        xb, delta = np.zeros_like(x), np.zeros_like(x)
        q = np.zeros((r, hp.n_head, hp.head_dim), f32)
        k = np.zeros((r, hp.n_kv_head, hp.head_dim), f32)
        v = np.zeros_like(k)
        q2, k2, v2 = q.reshape(r, -1), k.reshape(r, -1), v.reshape(r, -1)
        att = np.zeros((r, hp.q_dim), f32)
        gate, up = np.zeros((r, hp.hidden_dim), f32), np.zeros((r, hp.hidden_dim), f32)
        hb = np.zeros_like(gate)
        ids = np.concatenate([np.asarray(i, np.int64) for _, i, _ in work])  # (n_rows,)
        embed_rows(self.tok_embd, self.tok_embd_type, ids, x[:n_rows])
        starts = np.cumsum([0, *sizes])  # rows of work item i: starts[i] .. starts[i + 1]
        scores = np.zeros((hp.n_head, self.n_ctx), f32)
        for layer, blk in enumerate(self.backends[0].w.blocks):
            if layer == 0:
                ops.rmsnorm(x, blk.attn_norm, eps, xb)
            else:
                ops.add_rmsnorm(x, delta, blk.attn_norm, eps, xb)
            blk.wq.matmul(xb, out=q2)
            blk.wk.matmul(xb, out=k2)
            blk.wv.matmul(xb, out=v2)
            for i, (slot, _, pos) in enumerate(work):  # each prompt: its positions, its cache
                a, b = starts[i], starts[i + 1]
                be = self.backends[slot]
                ops.attention(q[a:b], k[a:b], v[a:b], self.cos, self.sin, be.k_cache[layer],
                              be.v_cache[layer], pos, hp.kq_scale, att[a:b], scores)
            blk.wo.matmul(att, out=delta)
            ops.add_rmsnorm(x, delta, blk.ffn_norm, eps, xb)
            blk.w_gate.matmul(xb, out=gate)
            blk.w_up.matmul(xb, out=up)
            ops.swiglu(gate, up, hb)
            blk.w_down.matmul(hb, out=delta)

    def decode(self, slots: Sequence[int], ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        from gguflite.runtime.llama import embed_rows

        hp, n = self.hp, len(slots)
        eps = hp.norm_eps
        x, xb, delta = self.x[:n], self.xb[:n], self.delta[:n]  # (n, dim)
        q, k, v, att = self.q[:n], self.k[:n], self.v[:n], self.att[:n]
        gate, up, hb = self.gate[:n], self.up[:n], self.hb[:n]  # (n, hidden)
        q2, k2, v2 = (a.reshape(n, -1) for a in (q, k, v))  # (n, q_dim), (n, kv_dim) x2
        embed_rows(self.tok_embd, self.tok_embd_type, np.asarray(ids, np.int64), x)
        caches = [(self.backends[s].k_cache, self.backends[s].v_cache) for s in slots]
        for layer, (an, wq, wk, wv, wo, fn, wg, wu, wd) in enumerate(self.blocks):
            if layer == 0:
                ops.rmsnorm(x, an, eps, xb)
            else:
                ops.add_rmsnorm(x, delta, an, eps, xb)
            self._mv(wq, xb, q2)
            self._mv(wk, xb, k2)
            self._mv(wv, xb, v2)
            for i, (kc, vc) in enumerate(caches):  # each slot: its position, its cache
                ops.attention(q[i:i + 1], k[i:i + 1], v[i:i + 1], self.cos, self.sin,
                              kc[layer], vc[layer], int(positions[i]), hp.kq_scale,
                              att[i:i + 1], self.scores)
            self._mv(wo, att, delta)
            ops.add_rmsnorm(x, delta, fn, eps, xb)
            self._mv(wg, xb, gate)
            self._mv(wu, xb, up)
            ops.swiglu(gate, up, hb)
            self._mv(wd, hb, delta)
        ops.add_rmsnorm(x, delta, self.out_norm, eps, xb)
        out = np.empty((n, self.n_vocab), np.float32)  # (n, vocab)
        self._mv(self.output, xb, out)
        return out
