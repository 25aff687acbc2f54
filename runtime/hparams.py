"""Hyper-parameters of a Llama-style model, read once from the file's metadata.

Keys (``{arch}`` is ``general.architecture``; llama.cpp's names and defaults)::

    {arch}.block_count                       UINT32   n_layer                           required
    {arch}.embedding_length                  UINT32   dim (n_embd)                      required
    {arch}.feed_forward_length               UINT32   hidden_dim (n_ff)                 required
    {arch}.attention.head_count              UINT32   n_head                            required
    {arch}.attention.head_count_kv           UINT32   n_kv_head (GQA/MQA)     default n_head
    {arch}.attention.key_length              UINT32   head_dim              default dim/n_head
    {arch}.attention.value_length            UINT32   must equal key_length (llama arch)
    {arch}.attention.layer_norm_rms_epsilon  FLOAT32  norm_eps                          required
    {arch}.attention.scale                   FLOAT32  kq scale          default 1/sqrt(head_dim)
    {arch}.context_length                    UINT32   the trained context               required
    {arch}.rope.dimension_count              UINT32   n_rot, must equal head_dim default head_dim
    {arch}.rope.freq_base                    FLOAT32  rope theta                   default 10000
    {arch}.rope.scaling.type                 STRING   "none" | "linear" (others refused)
    {arch}.rope.scaling.factor               FLOAT32  linear: positions divided by this
    {arch}.vocab_size                        UINT32   default len(tokenizer.ggml.tokens)

Llama 3 style rope scaling is not a key: it is the optional tensor ``rope_freqs.weight``
(n_rot/2 frequency divisors), handled by the model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gguflite.errors import ModelError

# Architectures that run on the Llama graph (same tensors, same math).
LLAMA_LIKE_ARCHS = ("llama",)


@dataclass(frozen=True)
class HParams:
    """Shapes and constants of one Llama-style model."""

    arch: str
    n_layer: int
    dim: int  # model width (n_embd)
    hidden_dim: int  # feed-forward width (n_ff)
    n_head: int
    n_kv_head: int
    head_dim: int
    n_rot: int  # rotated dims per head
    vocab_size: int
    context_length: int  # trained context
    norm_eps: float
    rope_theta: float
    rope_freq_scale: float  # linear rope scaling: position * freq_scale
    kq_scale: float

    @property
    def n_rep(self) -> int:
        """Query heads sharing one key/value head."""
        return self.n_head // self.n_kv_head

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim


def _get(md: Mapping[str, Any], key: str, kind: type, default: Any = None) -> Any:
    if key not in md:
        if default is None:
            raise ModelError(f"metadata key {key!r} is missing; the runtime needs it")
        return default
    value = md[key]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelError(f"metadata key {key!r} must be a non-negative integer, "
                             f"not {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(
                value):
            raise ModelError(f"metadata key {key!r} must be a finite number, not {value!r}")
        value = float(value)
    elif kind is str and not isinstance(value, str):
        raise ModelError(f"metadata key {key!r} must be a string, not {value!r}")
    return value


def hparams_from_metadata(md: Mapping[str, Any]) -> HParams:
    """Read and check the hyper-parameters; raises ModelError naming the key on bad input."""
    arch = _get(md, "general.architecture", str)
    if arch not in LLAMA_LIKE_ARCHS:
        raise ModelError(f"general.architecture is {arch!r}; the runtime runs "
                         f"{', '.join(LLAMA_LIKE_ARCHS)} models")
    p = f"{arch}."
    n_layer = _get(md, p + "block_count", int)
    dim = _get(md, p + "embedding_length", int)
    hidden_dim = _get(md, p + "feed_forward_length", int)
    n_head = _get(md, p + "attention.head_count", int)
    n_kv_head = _get(md, p + "attention.head_count_kv", int, n_head)
    if min(n_layer, dim, hidden_dim, n_head, n_kv_head) == 0:
        raise ModelError(f"{p}block_count, embedding_length, feed_forward_length and the head "
                         "counts must all be > 0")
    if n_head % n_kv_head:
        raise ModelError(f"{p}attention.head_count ({n_head}) is not a multiple of "
                         f"{p}attention.head_count_kv ({n_kv_head})")
    if dim % n_head and p + "attention.key_length" not in md:
        raise ModelError(f"{p}embedding_length ({dim}) is not a multiple of "
                         f"{p}attention.head_count ({n_head}) and no key_length is given")
    head_dim = _get(md, p + "attention.key_length", int, dim // n_head)
    v_dim = _get(md, p + "attention.value_length", int, head_dim)
    if v_dim != head_dim:
        raise ModelError(f"{p}attention.value_length ({v_dim}) differs from key_length "
                         f"({head_dim}); the llama graph needs them equal")
    n_rot = _get(md, p + "rope.dimension_count", int, head_dim)
    if n_rot != head_dim or head_dim % 2:
        raise ModelError(f"{p}rope.dimension_count is {n_rot}; the llama graph rotates the "
                         f"whole (even) head of {head_dim} dims")
    if "tokenizer.ggml.tokens" in md:
        default_vocab = len(md["tokenizer.ggml.tokens"])
    else:
        default_vocab = None
    vocab_size = _get(md, p + "vocab_size", int, default_vocab)
    scaling = _get(md, p + "rope.scaling.type", str, "none")
    freq_scale = 1.0
    if scaling == "linear":
        factor = _get(md, p + "rope.scaling.factor", float)
        if factor <= 0:
            raise ModelError(f"{p}rope.scaling.factor must be > 0, not {factor}")
        freq_scale = 1.0 / factor
    elif scaling != "none":
        raise ModelError(f"{p}rope.scaling.type {scaling!r} is not supported "
                         "(supported: none, linear, and llama3 factors via rope_freqs.weight)")
    kq_scale = _get(md, p + "attention.scale", float, 0.0)
    if kq_scale == 0.0:
        kq_scale = 1.0 / math.sqrt(head_dim)
    return HParams(
        arch=arch, n_layer=n_layer, dim=dim, hidden_dim=hidden_dim, n_head=n_head,
        n_kv_head=n_kv_head, head_dim=head_dim, n_rot=n_rot, vocab_size=vocab_size,
        context_length=_get(md, p + "context_length", int),
        norm_eps=_get(md, p + "attention.layer_norm_rms_epsilon", float),
        rope_theta=_get(md, p + "rope.freq_base", float, 10000.0),
        rope_freq_scale=freq_scale, kq_scale=kq_scale,
    )
