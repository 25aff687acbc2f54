"""The Llama graph on torch: CUDA, or any torch device, from the same memory-mapped file.

Same graph as ``llama.py`` (see its docstring), same ``Backend`` protocol, so tokenizer,
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
from gguflite.reader import GGUFFile

from .hparams import HParams
from .llama import _check_tensors
from .ops import rope_tables

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


class LlamaTorch:
    """The torch backend of the Llama graph (implements ``Backend``).

    Parameters
    ----------
    f : GGUFFile
    hp : HParams
    n_ctx : int
        KV cache length (tokens).
    device : str
        "cpu", "cuda", "cuda:1", "mps", ...
    dtype : str | None
        Compute dtype: "float32", "float16" or "bfloat16"; default float32 on CPU, float16 else.
    threads : int | None
        torch CPU threads.
    compile : bool
        Wrap the decode step in ``torch.compile`` (CUDA graphs with mode="reduce-overhead").
    """

    def __init__(self, f: GGUFFile, hp: HParams, *, n_ctx: int, device: str | None = None,
                 dtype: str | None = None, threads: int | None = None, compile: bool = False,
                 **_: Any):
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
        _check_tensors(f, hp)
        self._upload_weights(f, hp)
        cos, sin = rope_tables(n_ctx, hp.head_dim, hp.rope_theta, hp.rope_freq_scale,
                               self._rope_factors)
        self.cos = torch.from_numpy(cos).to(self.device)  # (n_ctx, head_dim/2) f32
        self.sin = torch.from_numpy(sin).to(self.device)
        kv_shape = (hp.n_layer, hp.n_kv_head, n_ctx, hp.head_dim)
        self.k_cache = self._alloc(kv_shape)
        self.v_cache = self._alloc(kv_shape)
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

    def _tensor(self, f: GGUFFile, name: str) -> Any:
        host = f.dequantize(name)  # float32, one tensor at a time
        try:
            return self.torch.from_numpy(host).to(self.device, self.dtype)
        except self.torch.OutOfMemoryError:
            raise self._oom(host.size * self._itemsize()) from None

    def _upload_weights(self, f: GGUFFile, hp: HParams) -> None:
        n_params = sum(ti.n_elements for ti in f.tensors.values())
        self._model_bytes = n_params * self._itemsize()
        self.tok_embd = self._tensor(f, "token_embd.weight")  # (vocab, dim)
        self.blocks = []
        for layer in range(hp.n_layer):
            b = f"blk.{layer}."
            self.blocks.append({
                s: self._tensor(f, b + s + ".weight")
                for s in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                          "ffn_gate", "ffn_up", "ffn_down")
            })
        self.output_norm = self._tensor(f, "output_norm.weight")
        self.output = (self._tensor(f, "output.weight") if "output.weight" in f.tensors
                       else self.tok_embd)  # tied
        self._rope_factors = (f.dequantize("rope_freqs.weight")
                              if "rope_freqs.weight" in f.tensors else None)

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
            logits = self._step(t_ids, pos, all_logits)  # (n, vocab) or (vocab,)
            return logits.float().cpu().numpy()

    def _rope(self, x: Any, pos0: int) -> Any:
        """Rotate adjacent pairs (x[2i], x[2i+1]) of every head (llama.cpp "normal" mode).

        x: (n, heads, head_dim) -> same shape.
        """
        n = x.shape[0]
        cos = self.cos[pos0:pos0 + n, None, :]  # (n, 1, hd/2)
        sin = self.sin[pos0:pos0 + n, None, :]
        xf = x.float().unflatten(-1, (-1, 2))  # (n, heads, hd/2, 2)
        x0, x1 = xf[..., 0], xf[..., 1]
        out = self.torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
        return out.flatten(-2).to(x.dtype)

    def _rmsnorm(self, x: Any, w: Any) -> Any:
        xf = x.float()
        xf = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.hparams.norm_eps)
        return xf.to(self.dtype) * w

    def _forward_chunk(self, ids: Any, pos0: int, all_logits: bool) -> Any:
        torch, hp = self.torch, self.hparams
        F = torch.nn.functional
        n = ids.shape[0]
        end = pos0 + n
        x = self.tok_embd[ids]  # (n, dim)
        # causal mask over the cache: query i (position pos0 + i) sees keys 0 .. pos0 + i
        key_pos = torch.arange(end, device=self.device)  # (end,)
        q_pos = torch.arange(pos0, end, device=self.device)  # (n,)
        mask = key_pos[None, :] <= q_pos[:, None]  # (n, end) bool
        for layer, blk in enumerate(self.blocks):
            h = self._rmsnorm(x, blk["attn_norm"])  # (n, dim)
            q = (h @ blk["attn_q"].T).view(n, hp.n_head, hp.head_dim)  # (n, H, hd)
            k = (h @ blk["attn_k"].T).view(n, hp.n_kv_head, hp.head_dim)  # (n, Hkv, hd)
            v = (h @ blk["attn_v"].T).view(n, hp.n_kv_head, hp.head_dim)
            q, k = self._rope(q, pos0), self._rope(k, pos0)
            self.k_cache[layer, :, pos0:end] = k.transpose(0, 1)  # (Hkv, n, hd)
            self.v_cache[layer, :, pos0:end] = v.transpose(0, 1)
            keys = self.k_cache[layer, :, :end]  # (Hkv, end, hd)
            vals = self.v_cache[layer, :, :end]
            if hp.n_rep > 1:
                keys = keys.repeat_interleave(hp.n_rep, dim=0)  # (H, end, hd)
                vals = vals.repeat_interleave(hp.n_rep, dim=0)
            att = F.scaled_dot_product_attention(
                q.transpose(0, 1), keys, vals, attn_mask=mask, scale=hp.kq_scale,
            )  # (H, n, hd)
            x = x + att.transpose(0, 1).reshape(n, hp.q_dim) @ blk["attn_output"].T
            h = self._rmsnorm(x, blk["ffn_norm"])
            g = F.silu(h @ blk["ffn_gate"].T) * (h @ blk["ffn_up"].T)  # (n, hidden)
            x = x + g @ blk["ffn_down"].T  # (n, dim)
        if not all_logits:
            x = x[-1:]
        logits = self._rmsnorm(x, self.output_norm) @ self.output.T  # (n | 1, vocab)
        return logits if all_logits else logits[0]

