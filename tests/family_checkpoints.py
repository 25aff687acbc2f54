"""Tiny random checkpoints of every supported family, built with transformers itself.

``family_checkpoint(path, "qwen2")`` copies a small trained tokenizer (tests/checkpoints.py),
builds the family's ``*ForCausalLM`` from its transformers config class with a small config and
``save_pretrained``s it in float32. Weights are drawn wider than HF's default (std 0.1) so top-1
is not a coin flip, and every norm weight is random (not 1) so a (1 + w) or a swapped norm
shows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from checkpoints import _token_id, _tokenizer_dir

# family -> (transformers config class, model class, extra config)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 6}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 24}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 4,
                "layer_types": None, "hidden_activation": "gelu_pytorch_tanh"}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"partial_rotary_factor": 0.5,
                                                "original_max_position_embeddings": 256}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {}),
}
N_LAYERS = {"gemma3": 7, "smollm3": 4}  # enough layers to show the per-layer patterns


def family_checkpoint(path: Path, family: str, *, tokenizer: str = "bpe", tied: bool = False,
                      seed: int = 0, **overrides: Any) -> Path:
    """Write a float32 checkpoint of ``family`` at ``path``; returns ``path``."""
    import torch
    import transformers

    cfg_name, model_name, extra = FAMILIES[family]
    path = Path(path)
    shutil.copytree(_tokenizer_dir(tokenizer), path, dirs_exist_ok=True)
    vocab_size = json.loads((path / "config.json").read_text())["vocab_size"]
    tc = json.loads((path / "tokenizer_config.json").read_text())
    kw: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=96,
        num_hidden_layers=N_LAYERS.get(family, 2), num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=tied, max_position_embeddings=256,
        initializer_range=0.1, rms_norm_eps=1e-5,
        bos_token_id=_token_id(path, tc, "bos_token"),
        eos_token_id=_token_id(path, tc, "eos_token"), pad_token_id=None)
    kw |= extra | overrides
    if family == "gemma3" and kw.get("layer_types") is None:
        kw.pop("layer_types")
    config = getattr(transformers, cfg_name)(**kw)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # random norms: (1 + w) mistakes show
                base = 0.0 if family == "gemma3" else 1.0
                p.copy_(base + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    model.to(torch.float32).save_pretrained(str(path))
    return path


def hf_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
