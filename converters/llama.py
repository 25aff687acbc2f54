"""The Llama graph: hyper-parameters, the HF -> llama.cpp name table, the Q/K permutation.

Covers ``LlamaForCausalLM`` (Llama 2, 3, 3.1, 3.2, TinyLlama, SmolLM/SmolLM2) and
``MistralForCausalLM``: the same graph, written as llama.cpp's ``llama`` architecture.

Quirks, one comment each, where they are handled:

- Q and K rows are permuted from HF's rotate-half RoPE layout to llama.cpp's interleaved one
  (``permute_rows``).
- Tied embeddings write no ``output.weight``: llama.cpp then uses ``token_embd.weight``.
- ``rope_type: llama3`` scaling is stored as a ``rope_freqs.weight`` F32 tensor of per-frequency
  divisors (``llama3_rope_factors``), as llama.cpp's converter does; linear and YaRN scaling are
  metadata keys.
- ``rotary_emb.inv_freq`` buffers (old checkpoints) are recomputed by the runtime; skipped.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError

log = logging.getLogger(__name__)

ARCH = "llama"  # general.architecture written for every supported checkpoint
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")

# Checkpoint names -> llama.cpp names. "{bid}" is the layer index.
GLOBAL_TENSORS: dict[str, str] = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
BLOCK_TENSORS: dict[str, str] = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)  # a cache of RoPE frequencies, not a weight
_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LlamaHParams:
    """What the converter needs from config.json."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    head_dim_in_config: bool  # llama.cpp writes key/value_length only then
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope: dict[str, Any]  # rope_type and its parameters ({} or rope_type "default": none)
    tie_embeddings: bool

    @property
    def rope_type(self) -> str:
        return str(self.rope.get("rope_type", self.rope.get("type", "default"))).lower()


def _need(config: dict[str, Any], key: str, kind: type = int) -> Any:
    if key not in config:
        raise ConversionError(f"config.json: missing {key!r}")
    value = config[key]
    if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ConversionError(f"config.json: {key!r} must be a positive integer, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConversionError(f"config.json: {key!r} must be a number, got {value!r}")
    return value


def parse_hparams(config: dict[str, Any]) -> LlamaHParams:
    """Check the architecture and read the hyper-parameters; ConversionError on anything else."""
    archs = config.get("architectures") or [config.get("model_type", "<none>")]
    arch = archs[0] if isinstance(archs, list) and archs else archs
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(f"config.json: architecture {arch!r} is not supported; supported: "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)} (and same-graph "
                              "checkpoints such as SmolLM and TinyLlama, which use them)")
    if config.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"config.json: hidden_act {config['hidden_act']!r}; the llama "
                              "graph uses silu")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise ConversionError(f"config.json: {flag}=true is not supported by this converter")
    n_heads = _need(config, "num_attention_heads")
    n_kv = config.get("num_key_value_heads") or n_heads
    hidden = _need(config, "hidden_size")
    head_dim = config.get("head_dim") or hidden // n_heads
    if n_heads % n_kv:
        raise ConversionError(f"config.json: num_attention_heads {n_heads} is not a multiple of "
                              f"num_key_value_heads {n_kv}")
    if head_dim % 2:
        raise ConversionError(f"config.json: head_dim {head_dim} must be even for RoPE")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    hp = LlamaHParams(
        architecture=arch,
        vocab_size=_need(config, "vocab_size"),
        hidden_size=hidden,
        intermediate_size=_need(config, "intermediate_size"),
        n_layers=_need(config, "num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        head_dim_in_config="head_dim" in config and config["head_dim"] is not None,
        context_length=config.get("max_position_embeddings") or 2048,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        rope=rope,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
    window = config.get("sliding_window")
    if isinstance(window, int) and window < hp.context_length:
        # Mistral v0.1's 4096-token window: llama.cpp's llama graph ignores it too
        log.warning("config.json: sliding_window %d is ignored; attention is full up to the "
                    "context length %d, as in llama.cpp", window, hp.context_length)
    if hp.rope_type not in ("default", "linear", "llama3", "yarn"):
        raise ConversionError(f"config.json: rope type {hp.rope_type!r} is not supported "
                              "(supported: default, linear, llama3, yarn)")
    return hp


def expected_shapes(hp: LlamaHParams) -> dict[str, tuple[int, ...]]:
    """Every llama.cpp tensor name -> its numpy shape (HF layout: out_features, in_features)."""
    d, q, kv, ff = (hp.hidden_size, hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim,
                    hp.intermediate_size)
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (hp.vocab_size, d)}
    for i in range(hp.n_layers):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (d,),
            f"blk.{i}.attn_q.weight": (q, d),
            f"blk.{i}.attn_k.weight": (kv, d),
            f"blk.{i}.attn_v.weight": (kv, d),
            f"blk.{i}.attn_output.weight": (d, q),
            f"blk.{i}.ffn_norm.weight": (d,),
            f"blk.{i}.ffn_gate.weight": (ff, d),
            f"blk.{i}.ffn_up.weight": (ff, d),
            f"blk.{i}.ffn_down.weight": (d, ff),
        }
    shapes["output_norm.weight"] = (d,)
    if not hp.tie_embeddings:
        shapes["output.weight"] = (hp.vocab_size, d)
    return shapes


def map_name(hf_name: str) -> str | None:
    """llama.cpp name of a checkpoint tensor; None if it is skipped; KeyError if unknown."""
    if hf_name.endswith(IGNORED_SUFFIXES):
        return None
    if hf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[hf_name]
    m = _BLOCK_RE.match(hf_name)
    if m and m.group(2) in BLOCK_TENSORS:
        return f"blk.{m.group(1)}.{BLOCK_TENSORS[m.group(2)]}"
    raise KeyError(hf_name)


def permute_rows(n_rows: int, n_heads: int) -> np.ndarray:
    """Row order turning HF's rotate-half Q/K layout into llama.cpp's interleaved one.

    Within each head of ``hd = n_rows // n_heads`` rows, HF pairs RoPE dimension ``i`` with
    ``i + hd/2``; llama.cpp pairs ``2i`` with ``2i + 1``. Output row ``h*hd + 2i + j`` is input
    row ``h*hd + j*hd/2 + i`` (``j`` in {0, 1}), i.e. llama.cpp's
    ``w.reshape(n_head, 2, hd // 2, -1).swapaxes(1, 2).reshape(w.shape)``.
    For K pass ``n_kv_heads``.
    """
    idx = np.arange(n_rows).reshape(n_heads, 2, n_rows // n_heads // 2)  # (h, j, i)
    return idx.swapaxes(1, 2).reshape(n_rows)  # (n_rows,)


def inverse_permute_rows(n_rows: int, n_heads: int) -> np.ndarray:
    """The inverse of ``permute_rows`` (llama.cpp layout -> HF layout)."""
    return np.argsort(permute_rows(n_rows, n_heads))


def llama3_rope_factors(hp: LlamaHParams) -> np.ndarray:
    """(head_dim // 2,) float32 divisors of the RoPE frequencies for ``rope_type: llama3``.

    Wavelengths shorter than ``original_max_position_embeddings / high_freq_factor`` keep their
    frequency (factor 1), longer than ``... / low_freq_factor`` are divided by ``factor``, and
    the band between is interpolated smoothly; llama.cpp divides each frequency by this value.
    """
    p = hp.rope
    dim = hp.head_dim
    factor = float(p.get("factor", 8.0))
    low = float(p.get("low_freq_factor", 1.0))
    high = float(p.get("high_freq_factor", 4.0))
    old_ctx = float(p.get("original_max_position_embeddings", 8192))
    if high == low:
        raise ConversionError("config.json: llama3 rope scaling needs high_freq_factor != "
                              "low_freq_factor")
    # computed in float32 as llama.cpp does (torch.arange(0, dim, 2, dtype=float32) / dim)
    exps = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = (1.0 / (np.float32(hp.rope_theta) ** exps)).astype(np.float32)  # (dim // 2,)
    out = np.empty(dim // 2, dtype=np.float64)
    for i, f in enumerate(freqs):
        wavelen = 2 * math.pi / float(f)
        if wavelen < old_ctx / high:
            out[i] = 1.0
        elif wavelen > old_ctx / low:
            out[i] = factor
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out[i] = 1.0 / ((1 - smooth) / factor + smooth)
    return out.astype(np.float32)


def size_label(n_params: int) -> str:
    """gguf-py's rounded parameter count: 134515008 -> "135M"."""
    scale, suffix = 1e-3, "K"
    for limit, s, x in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if n_params > limit:
            scale, suffix = s, x
            break
    v = n_params * scale
    fix = max(2 - len(str(round(v)).lstrip("0")), 0)
    return f"{v:.{fix}f}{suffix}"


def model_metadata(hp: LlamaHParams) -> list[tuple[str, Any, T, T | None]]:
    """llama.* keys with the types llama.cpp's converter writes."""
    a = ARCH
    items: list[tuple[str, Any, T, T | None]] = [
        (f"{a}.block_count", hp.n_layers, T.UINT32, None),
        (f"{a}.context_length", hp.context_length, T.UINT32, None),
        (f"{a}.embedding_length", hp.hidden_size, T.UINT32, None),
        (f"{a}.feed_forward_length", hp.intermediate_size, T.UINT32, None),
        (f"{a}.attention.head_count", hp.n_heads, T.UINT32, None),
        (f"{a}.attention.head_count_kv", hp.n_kv_heads, T.UINT32, None),
        (f"{a}.rope.freq_base", hp.rope_theta, T.FLOAT32, None),
        (f"{a}.attention.layer_norm_rms_epsilon", hp.rms_norm_eps, T.FLOAT32, None),
    ]
    if hp.head_dim_in_config:
        items += [(f"{a}.attention.key_length", hp.head_dim, T.UINT32, None),
                  (f"{a}.attention.value_length", hp.head_dim, T.UINT32, None)]
    if hp.rope_type in ("linear", "yarn"):
        factor = hp.rope.get("factor")
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            raise ConversionError(f"config.json: {hp.rope_type} rope scaling needs a numeric "
                                  f"'factor', got {factor!r}")
        items += [(f"{a}.rope.scaling.type", hp.rope_type, T.STRING, None),
                  (f"{a}.rope.scaling.factor", float(factor), T.FLOAT32, None)]
        if hp.rope_type == "yarn":
            orig = hp.rope.get("original_max_position_embeddings")
            if not isinstance(orig, int) or orig <= 0:
                raise ConversionError("config.json: yarn rope scaling needs "
                                      "original_max_position_embeddings")
            items.append((f"{a}.rope.scaling.original_context_length", orig, T.UINT32, None))
    items += [(f"{a}.vocab_size", hp.vocab_size, T.UINT32, None),
              (f"{a}.rope.dimension_count", hp.head_dim, T.UINT32, None)]
    return items
