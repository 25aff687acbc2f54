"""smollm3: SmolLM3. The llama graph (Q/K permuted, adjacent-pair rope) with no rope at all on
every fourth layer (``no_rope_layer_interval`` 4: layers 3, 7, 11, ...), which llama.cpp
hard-codes for this arch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError

from .base import ROPE_GLOBAL, ROPE_NONE, Family, HParams, with_layers

NO_ROPE_INTERVAL = 4  # llama.cpp: hparams.n_no_rope_layer_step = 4


def _layer_rope(n_layer: int) -> tuple[int, ...]:
    return tuple(ROPE_NONE if (i + 1) % NO_ROPE_INTERVAL == 0 else ROPE_GLOBAL
                 for i in range(n_layer))


class SmolLM3(Family):
    arch = "smollm3"
    hf_architectures = ("SmolLM3ForCausalLM",)
    permute_qk = True

    @classmethod
    def adjust(cls, hp: HParams, md: Mapping[str, Any]) -> HParams:
        return with_layers(hp, layer_rope=_layer_rope(hp.n_layer))

    @classmethod
    def adjust_config(cls, hp: HParams, config: Mapping[str, Any]) -> HParams:
        want = _layer_rope(hp.n_layer)
        flags = config.get("no_rope_layers")  # HF: 1 = use rope, 0 = no rope, per layer
        if flags is not None:
            got = tuple(ROPE_GLOBAL if f else ROPE_NONE for f in flags)
            if got != want:
                raise ConversionError(f"config.json: no_rope_layers {list(flags)} differs from "
                                      f"every {NO_ROPE_INTERVAL}th layer, the only pattern "
                                      "llama.cpp's smollm3 arch runs")
        if config.get("use_sliding_window"):
            raise ConversionError("config.json: use_sliding_window=true is not supported for "
                                  "smollm3")
        return with_layers(hp, layer_rope=want, layer_window=(0,) * hp.n_layer)

    @classmethod
    def extra_metadata(cls, hp: HParams) -> list[tuple[str, Any, T, T | None]]:
        # llama.cpp's converter writes SmolLM3 as a subclass of its llama model: these too
        return [("smollm3.vocab_size", hp.vocab_size, T.UINT32, None),
                ("smollm3.rope.dimension_count", hp.n_rot, T.UINT32, None)]
