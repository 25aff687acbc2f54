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
    tokenizer: str = "bpe"  # "bpe" (SmolLM-style byte-level BPE), "llama3" (Llama 3 BPE), "spm"
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
        if kind == "spm":
            make_spm_dir(d, chat_template=CHAT_TEMPLATE)
        else:
            make_bpe_dir(d, "smollm" if kind == "bpe" else kind, chat_template=CHAT_TEMPLATE)
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


# -- a SmolLM2-135M-shaped checkpoint rebuilt from the embedded GGUF --------------------------
SMOLLM2_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
    "rope_scaling": None, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
    "attention_bias": False, "mlp_bias": False, "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
}
# llama.cpp name -> HF name of each per-layer tensor (the converter's table, inverted)
_HF_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], Any]]) -> None:
    """Write {name: (dtype "BF16"/"F32", shape, producer of the raw bytes)} one at a time."""
    import math
    import struct

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, _) in tensors.items():
        n = math.prod(shape) * (2 if dtype == "BF16" else 4)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for _, (_, _, produce) in tensors.items():
            fh.write(produce())


def smollm2_checkpoint(path: Path, *, dtype: str = "BF16", layers: int | None = None) -> Path:
    """Rebuild a Hugging Face checkpoint directory from SmolLM2-135M-Instruct's GGUF.

    Weights are dequantized (Q4_1/Q8_0 -> float32, then bf16 with round-to-nearest-even when
    ``dtype="BF16"``), Q/K rows are put back into HF's rotate-half order, and tokenizer.json
    is rebuilt from the GGUF's tokens and merges (byte-level BPE with SmolLM's pre-tokenizer:
    single digits, then GPT-2's regex). ``layers`` keeps only the first layers (tests).
    """
    import numpy as np
    from tiny_models import unpermute_qk
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    import gguflite
    from gguflite.default_model import default_model_path
    from gguflite.quants.floats import f32_to_bf16_bits

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = dict(SMOLLM2_CONFIG, torch_dtype="bfloat16" if dtype == "BF16" else "float32")
    n_layers = layers or cfg["num_hidden_layers"]
    cfg["num_hidden_layers"] = n_layers
    with gguflite.open(default_model_path()) as f:
        md = f.metadata

        def producer(gname: str, heads: int = 0):
            def produce() -> bytes:
                w = f.dequantize(gname)  # float32, numpy shape
                if heads:
                    w = unpermute_qk(w, heads)  # independent of the converter's permutation
                if dtype == "BF16":
                    return f32_to_bf16_bits(w).astype("<u2").tobytes()
                return w.astype("<f4").tobytes()
            return produce

        tensors: dict[str, tuple[str, tuple[int, ...], Any]] = {}

        def add(hf: str, gname: str, heads: int = 0) -> None:
            tensors[hf] = (dtype, f.tensors[gname].shape, producer(gname, heads))

        add("model.embed_tokens.weight", "token_embd.weight")
        for i in range(n_layers):
            for short, hf in _HF_BLOCK.items():
                heads = {"attn_q": 9, "attn_k": 3}.get(short, 0)
                add(f"model.layers.{i}.{hf}.weight", f"blk.{i}.{short}.weight", heads)
        add("model.norm.weight", "output_norm.weight")
        _write_safetensors(path / "model.safetensors", tensors)

        tokens = md["tokenizer.ggml.tokens"].tolist()
        types = md["tokenizer.ggml.token_type"]
        merges = [tuple(m.split(" ")) for m in md["tokenizer.ggml.merges"]]
        template = md["tokenizer.chat_template"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                           for i in np.flatnonzero(types == 3)])
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False,
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>", "clean_up_tokenization_spaces": False,
        "model_max_length": 8192, "chat_template": template}, indent=1))
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    (path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# SmolLM2-135M-Instruct "
                                    "(rebuilt from its GGUF for tests and benchmarks)\n")
    return path
