"""gemma3: Gemma 3 text models (gemma-3-270m, 1b, and the text stack of the larger ones).

Block (x is the residual stream; every norm is an RMSNorm)::

    h = norm(x) * attn_norm
    q, k, v = Wq h, Wk h, Wv h;  q, k = norm(q) * q_norm, norm(k) * k_norm   (per head)
    q, k = rope(q), rope(k)          NEOX pairs; sliding layers use their own base (10000)
    a = norm(Wo attention(q, k, v)) * post_attention_norm;  x = x + a
    h = norm(x) * ffn_norm
    f = norm(Wdown (gelu_tanh(Wgate h) * Wup h)) * post_ffw_norm;  x = x + f

with embeddings multiplied by sqrt(dim) and the head tied to them.

Quirks, one comment each:

- HF's Gemma3RMSNorm computes ``x * (1 + w)``; llama.cpp's converter stores ``w + 1`` so files
  hold plain RMSNorm weights (``norm_plus_one``): we store exactly that.
- Layers are sliding-window except every 6th (``(i + 1) % 6 == 0`` is global), llama.cpp's
  default pattern, or the per-layer ``attention.sliding_window_pattern`` array when a file has it.
- The score scale is 1/sqrt(head_dim) (llama.cpp, all sizes but 27B); HF's
  ``query_pre_attn_scalar`` must equal head_dim (it does for 270m, 1b, 4b, 12b).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError, ModelError

from .base import ROPE_GLOBAL, ROPE_LOCAL, Family, HParams, with_layers

SWA_PATTERN = 6  # llama.cpp: load_swa_pattern(ml, 6)
LOCAL_ROPE_THETA = 10000.0  # llama.cpp: rope_freq_base_train_swa default


def _pattern(n_layer: int, n: int) -> tuple[bool, ...]:
    """Which layers are sliding-window for a period of n (llama.cpp's set_swa_pattern)."""
    return tuple(i % n < n - 1 for i in range(n_layer))


def _layers(hp: HParams, window: int, swa: tuple[bool, ...], theta_local: float) -> HParams:
    if not window:
        swa = (False,) * hp.n_layer
    return with_layers(
        hp, layer_rope=tuple(ROPE_LOCAL if s else ROPE_GLOBAL for s in swa),
        layer_window=tuple(window if s else 0 for s in swa), rope_theta_local=theta_local,
        embed_scale=math.sqrt(hp.dim))


class Gemma3(Family):
    arch = "gemma3"
    hf_architectures = ("Gemma3ForCausalLM",)
    rope_neox = True
    qk_norm = True
    post_norms = True
    norm_plus_one = True
    act = "gelu_tanh"
    hf_act = ("gelu_pytorch_tanh", "gelu_tanh")
    rope_scalings = ("none", "linear")

    @classmethod
    def adjust(cls, hp: HParams, md: Mapping[str, Any]) -> HParams:
        p = "gemma3."
        window = int(md.get(p + "attention.sliding_window", 0) or 0)
        pattern = md.get(p + "attention.sliding_window_pattern", SWA_PATTERN)
        if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0:
            swa = _pattern(hp.n_layer, pattern)
        elif isinstance(pattern, list) and len(pattern) == hp.n_layer:
            swa = tuple(bool(x) for x in pattern)
        else:
            raise ModelError(f"metadata key {p}attention.sliding_window_pattern must be a "
                             f"positive integer or {hp.n_layer} booleans, not {pattern!r}")
        theta_local = md.get(p + "rope.freq_base_swa", LOCAL_ROPE_THETA)
        if isinstance(theta_local, bool) or not isinstance(theta_local, int | float):
            raise ModelError(f"metadata key {p}rope.freq_base_swa must be a number")
        return _layers(hp, window, swa, float(theta_local))

    @classmethod
    def adjust_config(cls, hp: HParams, config: Mapping[str, Any]) -> HParams:
        scalar = config.get("query_pre_attn_scalar", hp.head_dim)
        if scalar != hp.head_dim:
            raise ConversionError(f"config.json: query_pre_attn_scalar {scalar} differs from "
                                  f"head_dim {hp.head_dim}; llama.cpp scales scores by "
                                  "1/sqrt(head_dim)")
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if config.get(key):
                raise ConversionError(f"config.json: {key} is not supported for gemma3")
        window = int(config.get("sliding_window") or 0)
        types = config.get("layer_types")
        if types:
            swa = tuple(t == "sliding_attention" for t in types)
        else:
            swa = _pattern(hp.n_layer, int(config.get("sliding_window_pattern", SWA_PATTERN)))
        if swa != _pattern(hp.n_layer, SWA_PATTERN) and any(swa):
            raise ConversionError("config.json: the sliding-window layer pattern differs from "
                                  f"every {SWA_PATTERN}th layer global, the one llama.cpp runs")
        rope = dict(config.get("rope_parameters") or {})
        local = rope.get("sliding_attention", {}).get("rope_theta",
                                                       config.get("rope_local_base_freq"))
        full = rope.get("full_attention", rope)
        theta = full.get("rope_theta", config.get("rope_theta", 1_000_000.0))
        scaling = config.get("rope_scaling") or full
        kw: dict[str, Any] = {"rope_theta": float(theta)}
        if str(scaling.get("rope_type", "default")) == "linear":
            kw |= {"rope_scaling": "linear", "rope_factor": float(scaling["factor"])}
        extra = dict(hp.extra, head_dim_in_config=True, rope_local=local, window=window)
        hp = with_layers(hp, extra=extra, **kw)
        return _layers(hp, window, swa, float(local or LOCAL_ROPE_THETA))

    @classmethod
    def extra_metadata(cls, hp: HParams) -> list[tuple[str, Any, T, T | None]]:
        items: list[tuple[str, Any, T, T | None]] = []
        if hp.extra.get("window"):
            items.append(("gemma3.attention.sliding_window", hp.extra["window"], T.UINT32, None))
        if hp.extra.get("rope_local") is not None:
            items.append(("gemma3.rope.freq_base_swa", float(hp.extra["rope_local"]), T.FLOAT32,
                          None))
        return items
