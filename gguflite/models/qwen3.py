"""qwen3: Qwen3 dense models. NEOX rope, no biases, an RMSNorm over each head of q and of k
(``attn_q_norm`` / ``attn_k_norm``, head_dim wide) before rope, and an explicit ``head_dim``
(key_length / value_length) that need not be dim / n_head.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Family, HParams, with_layers


class Qwen3(Family):
    arch = "qwen3"
    hf_architectures = ("Qwen3ForCausalLM",)
    rope_neox = True
    qk_norm = True

    @classmethod
    def adjust_config(cls, hp: HParams, config: Mapping[str, Any]) -> HParams:
        extra = dict(hp.extra, head_dim_in_config=True)  # llama.cpp always writes key_length
        return with_layers(hp, layer_window=(0,) * hp.n_layer, extra=extra)
