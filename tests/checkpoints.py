"""Tiny Hugging Face Llama-family checkpoints, saved exactly as ``save_pretrained`` does.

``build_checkpoint(path, CkptSpec(...))`` trains a small real tokenizer (the tokenizer helper's
builders in tests/helpers_tokenizers.py), builds a random ``LlamaForCausalLM`` or
``MistralForCausalLM`` sized to it and saves weights + config with ``save_pretrained``: single
file or sharded, bf16/f16/f32, tied or untied embeddings, GQA, llama3 rope scaling. The
converter tests convert these and compare against transformers and llama.cpp.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers_tokenizers import make_bpe_dir, make_spm_dir

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


@dataclass(frozen=True)
class CkptSpec:
    """Shape and layout of a tiny checkpoint (HF config names in comments)."""

    arch: str = "llama"  # "llama" -> LlamaForCausalLM, "mistral" -> MistralForCausalLM
    hidden: int = 64  # hidden_size
    intermediate: int = 160  # intermediate_size
    layers: int = 2  # num_hidden_layers
    heads: int = 4  # num_attention_heads
    kv_heads: int = 2  # num_key_value_heads (GQA when < heads)
    tied: bool = False  # tie_word_embeddings
    dtype: str = "bfloat16"  # torch dtype of the saved weights
    shard_size: str | None = None  # e.g. "200KB": sharded with model.safetensors.index.json
    rope: dict[str, Any] | None = None  # e.g. LLAMA3_ROPE
    rope_theta: float = 10000.0
    tokenizer: str = "bpe"  # "bpe" (SmolLM-style byte-level BPE) or "spm" (SentencePiece)
    max_positions: int = 256
    seed: int = 0
    init_std: float = 0.1  # larger than HF's 0.02 so logits are far from uniform


_CACHE: dict[Any, Path] = {}
_ROOT: list[Path] = []


def _cache_root() -> Path:
    if not _ROOT:
        root = Path(tempfile.mkdtemp(prefix="gguflite-ckpt-"))
        atexit.register(shutil.rmtree, root, True)
        _ROOT.append(root)
    return _ROOT[0]


def _tokenizer_dir(kind: str) -> Path:
    """One trained tokenizer per kind per test session (training takes a second)."""
    key = ("tokenizer", kind)
    if key not in _CACHE:
        d = _cache_root() / f"tokenizer-{kind}"
        if kind == "bpe":
            make_bpe_dir(d, "smollm", chat_template=CHAT_TEMPLATE)
        else:
            make_spm_dir(d, chat_template=CHAT_TEMPLATE)
        _CACHE[key] = d
    return _CACHE[key]


def cached_checkpoint(spec: CkptSpec = CkptSpec()) -> Path:
    """A checkpoint for ``spec`` built once per test session; copy it before changing it."""
    key = repr(spec)  # the spec holds a dict, so it is not hashable itself
    if key not in _CACHE:
        d = _cache_root() / f"ckpt-{len(_CACHE)}"
        _CACHE[key] = build_checkpoint(d, spec)
    return _CACHE[key]


def build_checkpoint(path: Path, spec: CkptSpec = CkptSpec()) -> Path:
    """Write a checkpoint directory at ``path``; returns ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    path = Path(path)
    shutil.copytree(_tokenizer_dir(spec.tokenizer), path, dirs_exist_ok=True)
    vocab_size = json.loads((path / "config.json").read_text())["vocab_size"]
    tc = json.loads((path / "tokenizer_config.json").read_text())
    kw: dict[str, Any] = dict(
        vocab_size=vocab_size, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, tie_word_embeddings=spec.tied,
        max_position_embeddings=spec.max_positions, initializer_range=spec.init_std,
        rms_norm_eps=1e-5, bos_token_id=_token_id(path, tc, "bos_token"),
        eos_token_id=_token_id(path, tc, "eos_token"),
    )
    rope = {"rope_type": "default", "rope_theta": spec.rope_theta}
    if spec.rope:
        rope = {**spec.rope, "rope_theta": spec.rope_theta}
    if spec.arch == "llama":
        config, cls = LlamaConfig(rope_parameters=rope, **kw), LlamaForCausalLM
    else:
        config, cls = MistralConfig(rope_parameters=rope, sliding_window=None, **kw), \
            MistralForCausalLM
    torch.manual_seed(spec.seed)
    model = cls(config).eval()
    with torch.no_grad():  # random norms too, so a swapped norm is caught
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model = model.to(getattr(torch, spec.dtype))
    save_kw: dict[str, Any] = {}
    if spec.shard_size:
        save_kw["max_shard_size"] = spec.shard_size
    model.save_pretrained(str(path), **save_kw)
    return path


def _token_id(path: Path, tc: dict[str, Any], field: str) -> int | None:
    """Id of the tokenizer_config's ``bos_token``/``eos_token`` (a string or an AddedToken)."""
    token = tc.get(field)
    if isinstance(token, dict):
        token = token.get("content")
    if token is None:
        return None
    if (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id(token)
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model")).piece_to_id(token)


def hf_logits(path: Path, ids: list[int]):
    """float32 logits (len(ids), vocab) of the checkpoint at ``path``, computed in float32."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
