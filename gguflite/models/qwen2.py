"""qwen2: Qwen2 and Qwen2.5. The llama graph with q/k/v biases and NEOX-style rope (pairs
(i, i + n_rot/2), which is HF's rotate-half layout, so Q/K rows are stored unpermuted).

Quirk: config.json carries ``sliding_window`` with ``use_sliding_window: false``; attention is
full, as in llama.cpp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Family, HParams, with_layers


class Qwen2(Family):
    arch = "qwen2"
    hf_architectures = ("Qwen2ForCausalLM",)
    rope_neox = True
    attn_bias = True

    @classmethod
    def adjust_config(cls, hp: HParams, config: Mapping[str, Any]) -> HParams:
        return with_layers(hp, layer_window=(0,) * hp.n_layer)
