"""phi3: Phi-3, Phi-3.5 and Phi-4-mini. The llama graph with one fused ``attn_qkv`` tensor
(q rows, then k, then v), one fused ``ffn_up`` holding gate then up (HF ``gate_up_proj``),
NEOX rope over the first ``n_rot`` dims of each head (``partial_rotary_factor``), and LongRoPE.

Quirks, one comment each:

- Fused tensors are stored fused, as llama.cpp does; backends read them as row ranges
  (``Family.split_rows``).
- LongRoPE (``rope_scaling.type`` "longrope"/"su") has no type key in a file, as llama.cpp
  writes it: the ``rope_factors_short.weight`` and ``rope_factors_long.weight`` tensors divide
  the frequencies (the long ones when the context is longer than
  ``rope.scaling.original_context_length``), and cos/sin are scaled by
  ``sqrt(1 + ln(ctx / orig_ctx) / ln(orig_ctx))`` (``rope.scaling.attn_factor``).
- ``sliding_window`` is written (0 when absent) but llama.cpp disables it for phi3 (attention
  is full); so do we.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError

from .base import Family, HParams, TensorSpec, with_layers


class Phi3(Family):
    arch = "phi3"
    hf_architectures = ("Phi3ForCausalLM",)
    rope_neox = True
    fused_qkv = True
    fused_gate_up = True
    rope_scalings = ("none", "longrope")

    @classmethod
    def adjust(cls, hp: HParams, md: Mapping[str, Any]) -> HParams:
        return with_layers(hp, layer_window=(0,) * hp.n_layer)

    @classmethod
    def rope_factor_tensor(cls, hp: HParams, n_ctx: int) -> str | None:
        return "rope_factors_long.weight" if n_ctx > hp.rope_orig_ctx else \
            "rope_factors_short.weight"

    @classmethod
    def adjust_config(cls, hp: HParams, config: Mapping[str, Any]) -> HParams:
        rope = hp.extra["rope"]
        orig = config.get("original_max_position_embeddings") or rope.get(
            "original_max_position_embeddings") or hp.context_length
        if not isinstance(orig, int) or orig <= 0:
            raise ConversionError("config.json: original_max_position_embeddings must be a "
                                  "positive integer")
        kw: dict[str, Any] = {"rope_orig_ctx": orig}
        if hp.rope_scaling == "longrope":
            half = hp.n_rot // 2
            for key in ("short_factor", "long_factor"):
                if len(rope.get(key) or ()) != half:
                    raise ConversionError(f"config.json: rope_scaling.{key} must have {half} "
                                          "values (rotary dims / 2)")
            scale = hp.context_length / orig
            kw["rope_attn_factor"] = \
                1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(orig))
        extra = dict(hp.extra, window=int(config.get("sliding_window") or 0))
        return with_layers(hp, layer_window=(0,) * hp.n_layer, extra=extra, **kw)

    @classmethod
    def extra_tensors(cls, hp: HParams) -> list[TensorSpec]:
        # LongRoPE factors: generated from config.json by the converter
        return [TensorSpec("rope_factors_long.weight", None, (hp.n_rot // 2,), optional=True),
                TensorSpec("rope_factors_short.weight", None, (hp.n_rot // 2,), optional=True)]

    @classmethod
    def extra_metadata(cls, hp: HParams) -> list[tuple[str, Any, T, T | None]]:
        items: list[tuple[str, Any, T, T | None]] = [
            ("phi3.rope.scaling.original_context_length", hp.rope_orig_ctx, T.UINT32, None),
            ("phi3.rope.dimension_count", hp.n_rot, T.UINT32, None),
            ("phi3.attention.sliding_window", hp.extra.get("window", 0), T.UINT32, None)]
        if hp.rope_scaling == "longrope":
            items.append(("phi3.rope.scaling.attn_factor", hp.rope_attn_factor, T.FLOAT32, None))
        return items
