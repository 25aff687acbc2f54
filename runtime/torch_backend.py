"""Every family on torch: CUDA, or any torch device, from the same memory-mapped file.

``gguflite.models.graph.forward`` over ``TorchOps``; same ``Backend`` protocol, so tokenizer,
sampling, generation, chat, perplexity and bench are shared with the Numba backend.

Weights: each tensor is decoded from the mapped file with gguflite's own codecs to float32 on
the host, moved to the device in the compute dtype, and released before the next one is
decoded, so peak host memory is one tensor. Dense weights on the device make every product a
plain BLAS / cuBLAS GEMM. The alternative, keeping blocks quantized on the device and decoding
them with torch ops on every call, was not built: it adds a full decode pass over the weights
per token on top of the GEMM. What was measured (benchmarks/results/torch.md, CPU only; no GPU
was available to this project yet): the dense path prefills at 1.4-1.6x llama.cpp's speed, and
decodes at about 0.2x of it, since fp32 weights are 4-8x the bytes per token of the quantized
file. On a GPU the same trade-off favours dense fp16 weights while they fit in device memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gguflite.errors import ModelError
from gguflite.models import Family, HParams
from gguflite.models.base import ROPE_NONE
from gguflite.models.graph import forward
from gguflite.models.rope import rope_tables
from gguflite.models.weights import load_weights
from gguflite.reader import GGUFFile

log = logging.getLogger(__name__)

TORCH_HINT = "pip install 'gguflite[torch]' (for CPU only: pip install torch --index-url " \
             "https://download.pytorch.org/whl/cpu)"


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelError(f"backend='torch' needs PyTorch, which is not installed; run: "
                         f"{TORCH_HINT}") from None
    return torch


def resolve_device(torch: Any, device: str | None) -> Any:
    """The torch device to run on; CUDA requested but absent is an error, never a fallback."""
    name = device or "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"device {name!r} is not a torch device: {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {name!r} requested but CUDA is not available in this "
                             f"torch build ({torch.__version__}) or on this machine; pass "
                             "--device cpu to run on the CPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {name!r} requested but only "
                             f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {name!r} requested but MPS is not available")
    return dev


def _default_dtype(torch: Any, dev: Any) -> Any:
    # fp32 on the CPU (fp16 GEMMs are slow there); fp16 on accelerators.
    return torch.float32 if dev.type == "cpu" else torch.float16


_DTYPES = {"float32": "float32", "f32": "float32", "float16": "float16", "f16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


class TorchBackend:
    """The torch backend of every family (implements ``Backend``).

    Parameters
    ----------
    f : GGUFFile
    fam, hp : the family and its hyper-parameters
    n_ctx : int
        KV cache length (tokens).
    device : str
        "cpu", "cuda", "cuda:1", "mps", ...
    dtype : str | None
        Compute dtype: "float32", "float16" or "bfloat16"; default float32 on CPU, float16 else.
    threads : int | None
        torch CPU threads.
    compile : bool
        Wrap the forward pass in ``torch.compile`` (CUDA graphs with mode="reduce-overhead").
    """

    def __init__(self, f: GGUFFile, fam: type[Family], hp: HParams, *, n_ctx: int,
                 device: str | None = None, dtype: str | None = None,
                 threads: int | None = None, compile: bool = False, **_: Any):
        torch = self.torch = import_torch()
        t0 = time.perf_counter()
        self.hparams, self.n_ctx = hp, n_ctx
        self.device = resolve_device(torch, device)
        if dtype is not None and dtype not in _DTYPES:
            raise ModelError(f"dtype {dtype!r} is not one of {sorted(set(_DTYPES.values()))}")
        self.dtype = getattr(torch, _DTYPES[dtype]) if dtype else _default_dtype(torch,
                                                                                 self.device)
        if threads:
            torch.set_num_threads(threads)
        n_params = sum(ti.n_elements for ti in f.tensors.values())
        self._model_bytes = n_params * self._itemsize()
        self.w = load_weights(
            f, fam, hp, n_ctx=n_ctx,
            linear=lambda name, rows, shape: self._tensor(f, name, rows),
            vector=lambda name: self._tensor(f, name), table=lambda name: self._tensor(f, name))
        cos, sin = rope_tables(hp, n_ctx, self.w.rope_factors)  # (2, n_ctx, n_rot/2) f32
        self.cos = torch.from_numpy(cos).to(self.device)
        self.sin = torch.from_numpy(sin).to(self.device)
        kv_shape = (hp.n_layer, hp.n_kv_head, n_ctx, hp.head_dim)
        self.k_cache = self._alloc(kv_shape)
        self.v_cache = self._alloc(kv_shape)
        self.ops = TorchOps(self)
        self._step = self._forward_chunk
        if compile:
            self._step = torch.compile(self._forward_chunk, mode="reduce-overhead",
                                       dynamic=True)
        self.load_seconds = time.perf_counter() - t0

    # -- weights -----------------------------------------------------------------------------
    def _alloc(self, shape: tuple[int, ...]) -> Any:
        try:
            return self.torch.zeros(shape, dtype=self.dtype, device=self.device)
        except self.torch.OutOfMemoryError:
            raise self._oom(int(np.prod(shape)) * self._itemsize()) from None

    def _itemsize(self) -> int:
        return self.torch.tensor([], dtype=self.dtype).element_size()

    def _oom(self, need: int) -> ModelError:
        free = "unknown"
        if self.device.type == "cuda":
            free_b, total_b = self.torch.cuda.mem_get_info(self.device)
            free = f"{free_b / 2**30:.2f} GiB free of {total_b / 2**30:.2f} GiB"
        return ModelError(f"out of memory on {self.device}: the model needs about "
                          f"{self._model_bytes / 2**30:.2f} GiB as {self.dtype} plus "
                          f"{need / 2**20:.1f} MiB for this allocation; {free}. Try "
                          "--dtype float16, a smaller --ctx, or another device")

    def _tensor(self, f: GGUFFile, name: str, rows: tuple[int, int] | None = None) -> Any:
        host = f.dequantize(name)  # float32, one tensor at a time
        if rows is not None:
            host = host[rows[0]:rows[1]]
        try:
            return self.torch.from_numpy(np.ascontiguousarray(host)).to(self.device, self.dtype)
        except self.torch.OutOfMemoryError:
            raise self._oom(host.size * self._itemsize()) from None

    # -- the graph ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Nothing to clear: positions past the caller's count are never read."""

    def forward(self, ids: np.ndarray | Sequence[int], pos: int, *,
                all_logits: bool = False) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)  # (n,)
        n = ids.shape[0]
        hp = self.hparams
        if n == 0:
            raise ModelError("forward() needs at least one token")
        if pos < 0 or pos + n > self.n_ctx:
            raise ModelError(f"tokens {pos}..{pos + n - 1} do not fit the context of "
                             f"{self.n_ctx} tokens (n_ctx)")
        if int(ids.min()) < 0 or int(ids.max()) >= hp.vocab_size:
            raise ModelError(f"token ids must be in 0..{hp.vocab_size - 1}")
        torch = self.torch
        with torch.inference_mode():
            t_ids = torch.from_numpy(ids).to(self.device)
            logits = self._step(t_ids, pos, all_logits)  # (n | 1, vocab)
            logits = logits.float().cpu().numpy()
        return logits if all_logits else logits[0]

    def _forward_chunk(self, ids: Any, pos0: int, all_logits: bool) -> Any:
        return forward(self.ops, self.w, self.hparams, ids, pos0, all_logits=all_logits)


class TorchOps:
    """``graph.Ops`` in torch, over the backend's KV cache."""

    def __init__(self, be: TorchBackend):
        self.be, self.hp, self.torch = be, be.hparams, be.torch

    def embed(self, ids: Any) -> Any:
        return self.be.w.tok_embd[ids]  # (n, dim)

    def rmsnorm(self, x: Any, w: Any) -> Any:
        xf = x.float()
        xf = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.hp.norm_eps)
        return xf.to(self.be.dtype) * w

    def linear(self, w: Any, x: Any) -> Any:
        return x @ w.T

    def glu(self, gate: Any, up: Any) -> Any:
        F = self.torch.nn.functional
        if self.hp.act == "gelu_tanh":
            return F.gelu(gate, approximate="tanh") * up
        return F.silu(gate) * up

    def _rope(self, x: Any, table: int, pos0: int) -> Any:
        """Rotate the first n_rot dims of every head; x (n, heads, hd) -> same shape."""
        n, half = x.shape[0], self.hp.n_rot // 2
        cos = self.be.cos[table, pos0:pos0 + n, None, :]  # (n, 1, half)
        sin = self.be.sin[table, pos0:pos0 + n, None, :]
        xf = x.float()
        rot, rest = xf[..., :2 * half], xf[..., 2 * half:]
        if self.hp.rope_neox:
            x0, x1 = rot[..., :half], rot[..., half:]
            rot = self.torch.cat((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
        else:
            pairs = rot.unflatten(-1, (-1, 2))  # (n, heads, half, 2)
            x0, x1 = pairs[..., 0], pairs[..., 1]
            rot = self.torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
            rot = rot.flatten(-2)
        return self.torch.cat((rot, rest), dim=-1).to(x.dtype)

    def attention(self, layer: int, q: Any, k: Any, v: Any, pos0: int) -> Any:
        torch, hp, be = self.torch, self.hp, self.be
        n = q.shape[0]
        end = pos0 + n
        table = hp.layer_rope[layer]
        if table != ROPE_NONE:
            q, k = self._rope(q, table, pos0), self._rope(k, table, pos0)
        be.k_cache[layer, :, pos0:end] = k.transpose(0, 1)  # (Hkv, n, hd)
        be.v_cache[layer, :, pos0:end] = v.transpose(0, 1)
        keys = be.k_cache[layer, :, :end]  # (Hkv, end, hd)
        vals = be.v_cache[layer, :, :end]
        if hp.n_rep > 1:
            keys = keys.repeat_interleave(hp.n_rep, dim=0)  # (H, end, hd)
            vals = vals.repeat_interleave(hp.n_rep, dim=0)
        # query i (position pos0 + i) sees keys pos0 + i - window < t <= pos0 + i
        key_pos = torch.arange(end, device=be.device)  # (end,)
        q_pos = torch.arange(pos0, end, device=be.device)  # (n,)
        mask = key_pos[None, :] <= q_pos[:, None]  # (n, end) bool
        if hp.layer_window[layer]:
            mask &= q_pos[:, None] - key_pos[None, :] < hp.layer_window[layer]
        att = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), keys, vals, attn_mask=mask, scale=hp.kq_scale)  # (H, n, hd)
        return att.transpose(0, 1).reshape(n, hp.q_dim)
