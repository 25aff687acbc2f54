"""The Llama architecture on the Numba CPU backend, run straight from the memory-mapped file.

Graph of one block (llama.cpp's ``llama`` arch; x is the residual stream)::

    h = rmsnorm(x) * attn_norm
    q, k, v = Wq h, Wk h, Wv h                  GQA: n_kv_head <= n_head key/value heads
    q, k = rope(q), rope(k)                     adjacent pairs (llama.cpp "normal" mode)
    a = softmax(q k^T * kq_scale + causal) v    over the KV cache
    x = x + Wo a
    h = rmsnorm(x) * ffn_norm
    x = x + Wdown (silu(Wgate h) * (Wup h))

then ``logits = Wout (rmsnorm(x) * output_norm)``, with ``Wout = token_embd`` when the file has
no ``output.weight`` (tied embeddings).

Weights stay in their stored encoding and are read in place through the fused
dequantize-and-dot kernels (``gguflite.runtime.kernels``). Every activation buffer is allocated
once for the largest batch; per token and layer the Python work is a handful of calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gguflite import quants
from gguflite.constants import GGMLType
from gguflite.errors import ModelError, UnsupportedTypeError
from gguflite.quants import km
from gguflite.reader import GGUFFile

from . import ops
from .dense import DenseLinear
from .hparams import HParams
from .llama_decode import DecodePlan, decode_step

log = logging.getLogger(__name__)

# Tensors of one block: suffix -> numpy shape as a function of the hyper-parameters.
_BLOCK_TENSORS: dict[str, Any] = {
    "attn_norm.weight": lambda hp: (hp.dim,),
    "attn_q.weight": lambda hp: (hp.q_dim, hp.dim),
    "attn_k.weight": lambda hp: (hp.kv_dim, hp.dim),
    "attn_v.weight": lambda hp: (hp.kv_dim, hp.dim),
    "attn_output.weight": lambda hp: (hp.dim, hp.q_dim),
    "ffn_norm.weight": lambda hp: (hp.dim,),
    "ffn_gate.weight": lambda hp: (hp.hidden_dim, hp.dim),
    "ffn_up.weight": lambda hp: (hp.hidden_dim, hp.dim),
    "ffn_down.weight": lambda hp: (hp.dim, hp.hidden_dim),
}


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


def make_linear(f: GGUFFile, name: str, shape: tuple[int, int]) -> Any:
    """A product ``W x`` over tensor ``name`` of numpy shape (out, in), read in place."""
    k = _kernels()
    if k is not None and km.is_km_tensor(f, name):  # KM companions (gguflite extension)
        return k.KMLinear.from_gguf(f, name, shape)
    ti = f.tensors[name]
    data = f.array(name)
    if k is not None:
        if ti.type in k.NATIVE_TYPES:
            return k.Linear(data, ti.type, shape=shape, name=name)
        data2, type2 = k.prepare_weight(data, ti.type, shape, name=name)
        return k.Linear(data2, type2, shape=shape, name=name)
    return DenseLinear(data, ti.type, shape=shape, name=name)


def _vector(f: GGUFFile, name: str) -> np.ndarray:
    """A small float vector (norm weights, rope factors) as contiguous float32."""
    return np.ascontiguousarray(f.dequantize(name), dtype=np.float32)


def _check_tensors(f: GGUFFile, hp: HParams) -> None:
    expected: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (hp.vocab_size, hp.dim),
        "output_norm.weight": (hp.dim,),
    }
    for layer in range(hp.n_layer):
        for suffix, shape in _BLOCK_TENSORS.items():
            expected[f"blk.{layer}.{suffix}"] = shape(hp)
    optional = {"output.weight": (hp.vocab_size, hp.dim),
                "rope_freqs.weight": (hp.head_dim // 2,)}
    kms = {n for n in (*expected, *optional) if km.is_km_tensor(f, n)}  # KM companions
    for name in expected:
        if name not in f.tensors and name not in kms:
            raise ModelError(f"tensor {name!r} is missing; a {hp.arch} model with "
                             f"{hp.n_layer} blocks needs it")
    for name, ti in f.tensors.items():
        if name.rpartition(".")[0] in kms:
            continue  # NAME.kmc / NAME.kmb: checked by km.from_gguf when loaded
        shape = expected.get(name, optional.get(name))
        if shape is None:
            raise ModelError(f"tensor {name!r} is not part of the {hp.arch} graph the runtime "
                             "runs (biases, fused QKV, experts and extra blocks are not "
                             "supported)")
        if tuple(ti.shape) != shape:
            raise ModelError(f"tensor {name!r} has shape {tuple(ti.shape)}, expected {shape} "
                             "from the metadata")
        if ti.type not in {GGMLType.F32, GGMLType.F16, GGMLType.BF16} and len(shape) == 1:
            raise ModelError(f"tensor {name!r} is a vector of type {ti.type.name}; "
                             "norm weights must be F32, F16 or BF16")
        try:
            quants.get_codec(ti.type)
        except UnsupportedTypeError as exc:
            raise ModelError(f"tensor {name!r}: type {ti.type.name} cannot be decoded "
                             f"({exc})") from None


@dataclass
class Block:
    attn_norm: np.ndarray  # (dim,)
    wq: Any  # (q_dim, dim)
    wk: Any  # (kv_dim, dim)
    wv: Any  # (kv_dim, dim)
    wo: Any  # (dim, q_dim)
    ffn_norm: np.ndarray  # (dim,)
    w_gate: Any  # (hidden, dim)
    w_up: Any  # (hidden, dim)
    w_down: Any  # (dim, hidden)


@dataclass
class LlamaWeights:
    tok_embd: Any  # as stored: (vocab, dim) typed, (vocab, row_bytes) uint8, or a KMLinear
    tok_embd_type: GGMLType | None  # None for a KM table
    blocks: list[Block]
    output_norm: np.ndarray  # (dim,)
    output: Any  # (vocab, dim); token_embd when tied
    rope_freq_factors: np.ndarray | None  # (head_dim // 2,) or None

    @classmethod
    def load(cls, f: GGUFFile, hp: HParams) -> LlamaWeights:
        """Check every tensor's presence, shape and type, then wrap them (no copies)."""
        _check_tensors(f, hp)
        blocks = []
        for layer in range(hp.n_layer):
            b = f"blk.{layer}."

            def lin(suffix: str, b: str = b) -> Any:
                return make_linear(f, b + suffix, _BLOCK_TENSORS[suffix](hp))

            blocks.append(Block(
                attn_norm=_vector(f, b + "attn_norm.weight"),
                wq=lin("attn_q.weight"), wk=lin("attn_k.weight"), wv=lin("attn_v.weight"),
                wo=lin("attn_output.weight"),
                ffn_norm=_vector(f, b + "ffn_norm.weight"),
                w_gate=lin("ffn_gate.weight"), w_up=lin("ffn_up.weight"),
                w_down=lin("ffn_down.weight"),
            ))
        out_name = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
        if km.is_km_tensor(f, "token_embd.weight"):  # a KM table: rows through its KMLinear
            emb: Any = make_linear(f, "token_embd.weight", (hp.vocab_size, hp.dim))
            emb_type = None
        else:
            emb, emb_type = f.array("token_embd.weight"), f.tensors["token_embd.weight"].type
        if "output.weight" not in f.tensors and km.is_km_tensor(f, "output.weight"):
            out_name = "output.weight"
        return cls(
            tok_embd=emb,
            tok_embd_type=emb_type,
            blocks=blocks,
            output_norm=_vector(f, "output_norm.weight"),
            output=make_linear(f, out_name, (hp.vocab_size, hp.dim)),
            rope_freq_factors=(_vector(f, "rope_freqs.weight")
                               if "rope_freqs.weight" in f.tensors else None),
        )


def embed_rows(table: Any, ggml_type: GGMLType | None, ids: np.ndarray,
               out: np.ndarray, kinds: Any = None) -> None:
    """Rows ``ids`` (n,) of the embedding table, decoded into out (n, dim) float32
    (``kinds``: the model's kernel kind set, kernels.share_kinds)."""
    k = _kernels()
    dim = out.shape[1]
    if ggml_type is None:  # a KM table (KMLinear)
        out[:] = table.rows(ids)
        return
    if k is not None and ggml_type in k.NATIVE_TYPES:
        out[:] = k.get_rows(table, ggml_type, (table.shape[0], dim), ids, kinds=kinds)
        return
    rows = np.ascontiguousarray(table[ids])  # (n, dim) typed or (n, row_bytes) uint8
    if ggml_type == GGMLType.F32:
        out[:] = rows
    else:
        out[:] = quants.dequantize(rows.reshape(-1).view(np.uint8), ggml_type,
                                   (ids.shape[0], dim), name="token_embd.weight")


# --------------------------------------------------------------------------- the graph
class LlamaNumba:
    """The Numba CPU backend of the Llama graph (implements ``Backend``).

    Parameters
    ----------
    f : GGUFFile
        The open file; weights are views into its mapping (keep it open).
    hp : HParams
    n_ctx : int
        KV cache length (tokens); at most ``hp.context_length``.
    n_batch : int
        Largest number of tokens run through the graph in one step (prefill chunk).
    """

    def __init__(self, f: GGUFFile, hp: HParams, *, n_ctx: int, n_batch: int = 128):
        t0 = time.perf_counter()
        self.hparams = hp
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.w = LlamaWeights.load(f, hp)
        k = _kernels()  # one kernel kind set for the whole model: each driver compiles once
        self.kset = None if k is None else k.share_kinds(
            [lin for b in self.w.blocks for lin in (b.wq, b.wk, b.wv, b.wo, b.w_gate, b.w_up,
                                                    b.w_down, self.w.output)
             if isinstance(lin, k.Linear)])
        self.cos, self.sin = ops.rope_tables(n_ctx, hp.head_dim, hp.rope_theta,
                                             hp.rope_freq_scale, self.w.rope_freq_factors)
        nb, f32 = n_batch, np.float32
        # The KV cache: zero pages cost nothing until written.
        self.k_cache = np.zeros((hp.n_layer, hp.n_kv_head, n_ctx, hp.head_dim), f32)
        self.v_cache = np.zeros((hp.n_layer, hp.n_kv_head, n_ctx, hp.head_dim), f32)
        self.x = np.zeros((nb, hp.dim), f32)  # residual stream
        self.xb = np.zeros((nb, hp.dim), f32)  # normed input of a projection
        self.delta = np.zeros((nb, hp.dim), f32)  # output of Wo / Wdown
        self.q = np.zeros((nb, hp.n_head, hp.head_dim), f32)
        self.k = np.zeros((nb, hp.n_kv_head, hp.head_dim), f32)
        self.v = np.zeros((nb, hp.n_kv_head, hp.head_dim), f32)
        self.att = np.zeros((nb, hp.q_dim), f32)  # attention output, heads concatenated
        self.gate = np.zeros((nb, hp.hidden_dim), f32)
        self.up = np.zeros((nb, hp.hidden_dim), f32)
        self.hb = np.zeros((nb, hp.hidden_dim), f32)  # silu(gate) * up
        self.scores = np.zeros((hp.n_head, n_ctx), f32)  # attention scratch
        self.logits = np.zeros((nb, hp.vocab_size), f32)
        self.timers: dict[str, float] | None = None  # per-op seconds, see enable_timers
        # One Numba call per decoded token when every weight has a kernel (llama_decode.py).
        self.plan: DecodePlan | None = None
        if DecodePlan.supported(self.w.blocks, self.w.output):
            self.plan = DecodePlan(
                self.w.blocks, self.w.output,
                attn_norm=np.stack([b.attn_norm for b in self.w.blocks]),  # (n_layer, dim)
                ffn_norm=np.stack([b.ffn_norm for b in self.w.blocks]),  # (n_layer, dim)
                out_norm=self.w.output_norm)
        self._t_last = 0.0
        self.load_seconds = time.perf_counter() - t0

    def reset(self) -> None:
        """Nothing to clear: positions past the caller's count are never read."""

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
        outs = []
        for start in range(0, n, self.n_batch):
            chunk = ids[start:start + self.n_batch]
            last = start + self.n_batch >= n
            logits = self._step(chunk, pos + start, all_logits=all_logits or not last)
            if all_logits:
                outs.append(logits.copy())
        if all_logits:
            return np.concatenate(outs, axis=0)  # (n, vocab)
        return logits  # (vocab,), valid until the next call

    def enable_timers(self, on: bool = True) -> dict[str, float]:
        """Accumulate wall seconds per op kind in ``self.timers`` (for profiling)."""
        self.timers = {} if on else None
        return self.timers

    def _tick(self, what: str) -> None:
        """Charge the time since the previous tick to ``what`` (only while timers are on)."""
        now = time.perf_counter()
        self.timers[what] = self.timers.get(what, 0.0) + now - self._t_last
        self._t_last = now

    def _step(self, ids: np.ndarray, pos0: int, *, all_logits: bool) -> np.ndarray:
        """One chunk of n <= n_batch tokens; returns logits (n, vocab) or (vocab,)."""
        hp, w = self.hparams, self.w
        n = ids.shape[0]
        eps = hp.norm_eps
        timed = self.timers is not None
        tick = self._tick if timed else _no_tick
        self._t_last = time.perf_counter()
        x, xb, delta = self.x[:n], self.xb[:n], self.delta[:n]  # (n, dim)
        q, k, v = self.q[:n], self.k[:n], self.v[:n]  # (n, heads, hd)
        q2, k2, v2 = (a.reshape(n, -1) for a in (q, k, v))  # (n, q_dim), (n, kv_dim) x2
        att, gate, up, hb = self.att[:n], self.gate[:n], self.up[:n], self.hb[:n]
        embed_rows(w.tok_embd, w.tok_embd_type, ids, x, self.kset)  # (n, dim)
        tick("embed")
        decode = n == 1
        if decode and self.plan is not None and not timed:
            p = self.plan
            decode_step(x[0], p.ws, p.kinds, p.row_bytes, p.attn_norm, p.ffn_norm,
                        p.out_norm, eps, self.cos, self.sin, self.k_cache, self.v_cache, pos0,
                        hp.kq_scale, xb[0], q, k, v, att, gate[0], up[0], hb[0], delta[0],
                        self.logits[0], self.scores, p.s_dim, p.s_q, p.s_hidden, p.empty_w,
                        p.empty_y, p.kset)
            return self.logits[:1] if all_logits else self.logits[0]
        for layer, blk in enumerate(w.blocks):
            if layer == 0:
                ops.rmsnorm(x, blk.attn_norm, eps, xb)
            else:
                ops.add_rmsnorm(x, delta, blk.attn_norm, eps, xb)  # residual of the last FFN
            tick("norm")
            if decode:
                type(blk.wq).matvec_many([blk.wq, blk.wk, blk.wv], xb[0],
                                         outs=[q2[0], k2[0], v2[0]])
            else:
                blk.wq.matmul(xb, out=q2)
                blk.wk.matmul(xb, out=k2)
                blk.wv.matmul(xb, out=v2)
            tick("qkv")
            ops.attention(q, k, v, self.cos, self.sin, self.k_cache[layer],
                          self.v_cache[layer], pos0, hp.kq_scale, att, self.scores)
            tick("attention")
            if decode:
                blk.wo.matvec(att[0], out=delta[0])
            else:
                blk.wo.matmul(att, out=delta)
            tick("wo")
            ops.add_rmsnorm(x, delta, blk.ffn_norm, eps, xb)
            tick("norm")
            if decode:
                type(blk.w_gate).matvec_many([blk.w_gate, blk.w_up], xb[0],
                                             outs=[gate[0], up[0]])
            else:
                blk.w_gate.matmul(xb, out=gate)
                blk.w_up.matmul(xb, out=up)
            tick("gate_up")
            ops.swiglu(gate, up, hb)
            tick("swiglu")
            if decode:
                blk.w_down.matvec(hb[0], out=delta[0])
            else:
                blk.w_down.matmul(hb, out=delta)
            tick("down")
        if all_logits:
            ops.add_rmsnorm(x, delta, w.output_norm, eps, xb)
            logits = self.logits[:n]  # (n, vocab)
            if decode:
                w.output.matvec(xb[0], out=logits[0])
            else:
                w.output.matmul(xb, out=logits)
            tick("output")
            return logits
        # Only the last token's logits: norm and project one row.
        ops.add_(x[n - 1:], delta[n - 1:])
        ops.rmsnorm(x[n - 1:], w.output_norm, eps, xb[n - 1:])
        w.output.matvec(xb[n - 1], out=self.logits[0])
        tick("output")
        return self.logits[0]  # (vocab,)


def _no_tick(what: str) -> None:
    """Timers off."""
