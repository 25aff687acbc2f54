"""The Numba CPU backend: ``gguflite.models.graph`` run straight from the memory-mapped file.

Weights stay in their stored encoding and are read in place through the fused
dequantize-and-dot kernels (``gguflite.runtime.kernels``). Prefill (and any step the fused path
cannot take) runs ``graph.forward`` over ``NumbaOps``; a single decoded token runs the whole
model in one compiled call (``decode.decode_step``), specialised by the flags the family
declares. A test keeps the two paths equal for every family.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from gguflite import quants
from gguflite.constants import GGMLType
from gguflite.errors import ModelError
from gguflite.models import Family, HParams
from gguflite.models.base import ROPE_NONE
from gguflite.models.graph import Weights, forward
from gguflite.models.rope import rope_tables
from gguflite.models.weights import load_weights
from gguflite.quants import km
from gguflite.reader import GGUFFile

from . import attention_blas, ops
from .decode import DecodePlan, decode_step
from .dense import DenseLinear
from .kv_cache import KVCache


class Backend(Protocol):
    """What the generation loop needs from a compute backend (Numba here; torch elsewhere)."""

    hparams: HParams
    n_ctx: int

    def forward(self, ids: np.ndarray, pos: int, *, all_logits: bool = False) -> np.ndarray:
        """Run tokens ``ids`` (n,) at positions pos .. pos + n - 1 through the model, appending
        them to the KV cache; return logits (n, vocab) if all_logits else (vocab,) of the last.
        """
        ...

    def reset(self) -> None:
        """Forget the KV cache."""
        ...


# --------------------------------------------------------------------------- weights
def _kernels() -> Any | None:
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels if hasattr(kernels, "Linear") else None


def make_linear(f: GGUFFile, name: str, rows: tuple[int, int] | None,
                shape: tuple[int, int]) -> Any:
    """A product ``W x`` over tensor ``name`` (or its rows r0..r1), numpy shape (out, in)."""
    k = _kernels()
    if k is not None and km.is_km_tensor(f, name):  # KM companions (gguflite extension)
        return k.KMLinear.from_gguf(f, name, shape)
    ti = f.tensors[name]
    data = f.array(name)  # (rows, row_bytes) uint8 for block types, (rows, cols) for floats
    if rows is not None:
        data = data[rows[0]:rows[1]]
        name = f"{name}[{rows[0]}:{rows[1]}]"
    if k is not None:
        if ti.type in k.NATIVE_TYPES:
            return k.Linear(data, ti.type, shape=shape, name=name)
        data2, type2 = k.prepare_weight(data, ti.type, shape, name=name)
        return k.Linear(data2, type2, shape=shape, name=name)
    return DenseLinear(data, ti.type, shape=shape, name=name)


def _vector(f: GGUFFile, name: str) -> np.ndarray:
    """A small float vector (norms, biases) as contiguous float32."""
    return np.ascontiguousarray(f.dequantize(name), dtype=np.float32)


class EmbeddingTable:
    """Rows of token_embd decoded on demand, in its stored encoding (or a KM table)."""

    def __init__(self, f: GGUFFile, hp: HParams):
        self.dim = hp.dim
        if km.is_km_tensor(f, "token_embd.weight"):  # rows through its KMLinear
            self.data: Any = make_linear(f, "token_embd.weight", None, (hp.vocab_size, hp.dim))
            self.type: GGMLType | None = None
        else:
            self.data, self.type = f.array("token_embd.weight"), \
                f.tensors["token_embd.weight"].type
        self.kinds: Any = None  # the model's kernel kind set (kernels.share_kinds)

    def rows(self, ids: np.ndarray, out: np.ndarray) -> None:
        """Rows ``ids`` (n,) decoded into out (n, dim) float32."""
        k = _kernels()
        if self.type is None:
            out[:] = self.data.rows(ids)
        elif k is not None and self.type in k.NATIVE_TYPES:
            out[:] = k.get_rows(self.data, self.type, (self.data.shape[0], self.dim), ids,
                                kinds=self.kinds)
        else:
            rows = np.ascontiguousarray(self.data[ids])  # (n, dim) typed or (n, row_bytes)
            if self.type == GGMLType.F32:
                out[:] = rows
            else:
                out[:] = quants.dequantize(rows.reshape(-1).view(np.uint8), self.type,
                                           (ids.shape[0], self.dim), name="token_embd.weight")


# --------------------------------------------------------------------------- ops
class NumbaOps:
    """``graph.Ops`` over the Numba kernels and this backend's KV cache."""

    def __init__(self, be: NumbaBackend):
        self.be = be
        self.hp = be.hparams
        self.timers: dict[str, float] | None = None

    def _time(self, what: str, t0: float) -> None:
        if self.timers is not None:
            self.timers[what] = self.timers.get(what, 0.0) + time.perf_counter() - t0

    def embed(self, ids: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.empty((ids.shape[0], self.hp.dim), np.float32)
        self.be.w.tok_embd.rows(ids, out)
        self._time("embed", t0)
        return out

    def rmsnorm(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, w.shape[0])
        out = np.empty_like(x2)
        ops.rmsnorm(x2, w, self.hp.norm_eps, out)
        self._time("norm", t0)
        return out.reshape(x.shape)

    def linear(self, w: Any, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        y = w.matmul(x)
        self._time("linear", t0)
        return y

    def glu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.empty_like(gate)
        if gate.shape[0] >= attention_blas.MIN_TOKENS:  # a prefill chunk: rows on all threads
            ops.glu_rows(gate, up, out, self.hp.act == "gelu_tanh")
        else:
            (ops.gelu_tanh_glu if self.hp.act == "gelu_tanh" else ops.swiglu)(gate, up, out)
        self._time("glu", t0)
        return out

    def attention(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray,
                  pos0: int) -> np.ndarray:
        t0 = time.perf_counter()
        hp, be = self.hp, self.be
        q, k, v = (np.ascontiguousarray(a, dtype=np.float32) for a in (q, k, v))
        out = np.empty((q.shape[0], hp.q_dim), np.float32)
        table = hp.layer_rope[layer]
        args = (q, k, v, be.cos[max(table, 0)], be.sin[max(table, 0)], table != ROPE_NONE,
                hp.rope_neox, be.kv.k[layer], be.kv.v[layer], pos0, hp.kq_scale,
                hp.layer_window[layer], out)
        if attention_blas.fits(q.shape[0], hp.n_head, pos0 + q.shape[0]):
            attention_blas.attention(*args)  # a prefill chunk: BLAS products per kv head
        else:
            ops.attention(*args, be.scores)
        self._time("attention", t0)
        return out


# --------------------------------------------------------------------------- the backend
class NumbaBackend:
    """The Numba CPU backend of every family (implements ``Backend``).

    Parameters
    ----------
    f : GGUFFile
        The open file; weights are views into its mapping (keep it open).
    fam, hp : the family and its hyper-parameters
    n_ctx : int
        KV cache length (tokens); at most ``hp.context_length``.
    n_batch : int
        Largest number of tokens run through the graph in one step (prefill chunk).
    kv_type : "f16" (default) or "f32"
        The KV cache's element type (kv_cache.py); it grows as the context fills.
    """

    def __init__(self, f: GGUFFile, fam: type[Family], hp: HParams, *, n_ctx: int,
                 n_batch: int = 128, kv_type: str = "f16"):
        t0 = time.perf_counter()
        self.hparams, self.family = hp, fam
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.w: Weights = load_weights(
            f, fam, hp, n_ctx=n_ctx,
            linear=lambda name, rows, shape: make_linear(f, name, rows, shape),
            vector=lambda name: _vector(f, name), table=lambda name: EmbeddingTable(f, hp))
        k = _kernels()  # one kernel kind set for the whole model: each driver compiles once
        if k is not None:
            self.w.tok_embd.kinds = k.share_kinds(
                [lin for b in self.w.blocks for lin in (b.wq, b.wk, b.wv, b.wo, b.w_gate,
                                                        b.w_up, b.w_down, self.w.output)
                 if isinstance(lin, k.Linear)])
        self.cos, self.sin = rope_tables(hp, n_ctx, self.w.rope_factors)  # (2, n_ctx, r/2)
        self.kv = KVCache(hp.n_layer, hp.n_kv_head, hp.head_dim, n_ctx, kv_type)
        self.scores = np.zeros((hp.n_head, n_ctx), np.float32)  # attention scratch
        self.ops = NumbaOps(self)
        # One Numba call per decoded token when every weight has a kernel (decode.py).
        self.plan: DecodePlan | None = DecodePlan.build(self) if DecodePlan.supported(
            self.w) else None
        self.fused = self.plan is not None  # False: single tokens take the per-op path too
        self.load_seconds = time.perf_counter() - t0

    def reset(self) -> None:
        """Nothing to clear: positions past the caller's count are never read."""

    def enable_timers(self, on: bool = True) -> dict[str, float] | None:
        """Accumulate wall seconds per op kind (per-op path only; turns the fused step off)."""
        self.ops.timers = {} if on else None
        self.fused = not on and self.plan is not None
        return self.ops.timers

    @property
    def timers(self) -> dict[str, float] | None:
        return self.ops.timers

    def forward(self, ids: np.ndarray | Sequence[int], pos: int, *,
                all_logits: bool = False) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)  # (n,)
        n = ids.shape[0]
        if n == 0:
            raise ModelError("forward() needs at least one token")
        if pos < 0 or pos + n > self.n_ctx:
            raise ModelError(f"tokens {pos}..{pos + n - 1} do not fit the context of "
                             f"{self.n_ctx} tokens (n_ctx)")
        if int(ids.min()) < 0 or int(ids.max()) >= self.hparams.vocab_size:
            raise ModelError(f"token ids must be in 0..{self.hparams.vocab_size - 1}")
        self.kv.reserve(pos + n)
        outs = []
        for start in range(0, n, self.n_batch):
            chunk = ids[start:start + self.n_batch]
            last = start + self.n_batch >= n
            logits = self._step(chunk, pos + start, all_logits=all_logits or not last)
            if all_logits:
                outs.append(logits)
        if all_logits:
            return np.concatenate(outs, axis=0)  # (n, vocab)
        return logits[-1]  # (vocab,)

    def _step(self, ids: np.ndarray, pos0: int, *, all_logits: bool) -> np.ndarray:
        """One chunk of n <= n_batch tokens; logits (n, vocab) or (1, vocab) of the last."""
        if ids.shape[0] == 1 and self.fused:
            return decode_step_call(self, int(ids[0]), pos0)[None, :]
        return forward(self.ops, self.w, self.hparams, ids, pos0, all_logits=all_logits)


def decode_step_call(be: NumbaBackend, token: int, pos: int) -> np.ndarray:
    """The fused one-call decode of one token at ``pos``; returns the plan's logits (vocab,)."""
    p = be.plan
    assert p is not None
    be.w.tok_embd.rows(np.array([token], np.int64), p.x[None, :])
    if be.hparams.embed_scale != 1.0:
        p.x *= np.float32(be.hparams.embed_scale)
    decode_step(*decode_step_args(be, pos))
    return p.logits.copy()


def decode_step_args(be: NumbaBackend, pos: int) -> tuple:
    """The arguments of ``decode.decode_step`` for the token in ``be.plan.x`` at ``pos``."""
    p = be.plan
    assert p is not None
    return (p.x, p.addrs, p.sizes, p.kinds, p.row_bytes, p.vecs, p.voff, p.flags,
            p.layer_rope, p.layer_window, p.out_norm, be.hparams.norm_eps, be.cos, be.sin,
            be.kv.k, be.kv.v, pos, be.hparams.kq_scale, p.buf_dim, p.q, p.k, p.v, p.att,
            p.gate, p.up, p.hb, p.logits, be.scores, p.s_dim, p.s_q, p.s_hidden, p.kset)
