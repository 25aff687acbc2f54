"""Registry of the metadata keys gguflite knows, with the value types readers expect.

llama.cpp reads metadata with strict types: a ``uint32`` key stored as ``int32`` fails to load
("key ... has wrong type"), and a special-token id of the wrong type aborts. The validator
(rule V20, spec/gguflite-v1.md section 6) checks every key listed here against its registered
types; keys not listed are accepted as they are.

A type signature is a scalar type name (``"u32"``, ``"f32"``, ``"str"``, ``"bool"`` ...) or an
array of one (``"[str]"``). A key may accept several signatures: llama.cpp reads per-layer
hyper-parameters (``{arch}.attention.head_count`` ...) as a scalar or as an array of INT32 or
UINT32 with one element per layer.

Key names may hold placeholders: ``{arch}`` is the value of ``general.architecture``; ``{id}``
is a decimal index (``general.base_model.0.name``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .constants import GGUFValueType

T = GGUFValueType

SHORT_NAMES: dict[GGUFValueType, str] = {
    T.UINT8: "u8", T.INT8: "i8", T.UINT16: "u16", T.INT16: "i16", T.UINT32: "u32",
    T.INT32: "i32", T.FLOAT32: "f32", T.BOOL: "bool", T.STRING: "str", T.UINT64: "u64",
    T.INT64: "i64", T.FLOAT64: "f64", T.ARRAY: "arr",
}


class KeySpec(NamedTuple):
    types: tuple[str, ...]  # accepted signatures, the first is what gguflite writes
    doc: str


def signature(value_type: GGUFValueType, element_type: GGUFValueType | None) -> str:
    """The signature of a stored value: ``"u32"``, ``"[str]"`` ..."""
    if value_type == T.ARRAY:
        return f"[{SHORT_NAMES[element_type] if element_type is not None else '?'}]"
    return SHORT_NAMES[value_type]


_PER_LAYER = ("u32", "[i32]", "[u32]")

# fmt: off
GENERAL_KEYS: dict[str, KeySpec] = {
    "general.architecture":         KeySpec(("str",), "model architecture: llama, qwen2 ..."),
    "general.type":                 KeySpec(("str",), "model, adapter, vocab, imatrix ..."),
    "general.quantization_version": KeySpec(("u32",), "version of the quantized block layouts (2)"),
    "general.alignment":            KeySpec(("u32",), "data alignment, a power of two (rule V8)"),
    "general.file_type":            KeySpec(("u32",), "llama_ftype: dominant tensor type"),
    "general.name":                 KeySpec(("str",), "human-readable model name"),
    "general.author":               KeySpec(("str",), ""),
    "general.version":              KeySpec(("str",), ""),
    "general.organization":         KeySpec(("str",), ""),
    "general.finetune":             KeySpec(("str",), ""),
    "general.basename":             KeySpec(("str",), ""),
    "general.description":          KeySpec(("str",), ""),
    "general.quantized_by":         KeySpec(("str",), ""),
    "general.size_label":           KeySpec(("str",), "parameter count label: 135M, 7B ..."),
    "general.license":              KeySpec(("str",), "SPDX license expression"),
    "general.license.name":         KeySpec(("str",), ""),
    "general.license.link":         KeySpec(("str",), ""),
    "general.url":                  KeySpec(("str",), ""),
    "general.doi":                  KeySpec(("str",), ""),
    "general.uuid":                 KeySpec(("str",), ""),
    "general.repo_url":             KeySpec(("str",), ""),
    "general.source.url":           KeySpec(("str",), ""),
    "general.source.doi":           KeySpec(("str",), ""),
    "general.source.uuid":          KeySpec(("str",), ""),
    "general.source.repo_url":      KeySpec(("str",), ""),
    "general.base_model.count":     KeySpec(("u32",), ""),
    "general.base_model.{id}.name":         KeySpec(("str",), ""),
    "general.base_model.{id}.organization": KeySpec(("str",), ""),
    "general.base_model.{id}.repo_url":     KeySpec(("str",), ""),
    "general.dataset.count":        KeySpec(("u32",), ""),
    "general.tags":                 KeySpec(("[str]",), ""),
    "general.languages":            KeySpec(("[str]",), ""),
}

# Keys under the architecture's prefix, e.g. "llama.block_count".
ARCH_KEYS: dict[str, KeySpec] = {
    "vocab_size":                      KeySpec(("u32",), "rows of token_embd"),
    "context_length":                  KeySpec(("u32",), "training context length"),
    "embedding_length":                KeySpec(("u32",), "n_embd: hidden size"),
    "block_count":                     KeySpec(("u32",), "number of blk.N layers"),
    "feed_forward_length":             KeySpec(_PER_LAYER, "n_ff: MLP hidden size"),
    "expert_count":                    KeySpec(("u32",), ""),
    "expert_used_count":               KeySpec(_PER_LAYER, ""),
    "use_parallel_residual":           KeySpec(("bool",), ""),
    "tensor_data_layout":              KeySpec(("str",), ""),
    "logit_scale":                     KeySpec(("f32",), ""),
    "attn_logit_softcapping":          KeySpec(("f32",), ""),
    "final_logit_softcapping":         KeySpec(("f32",), ""),
    "attention.head_count":            KeySpec(_PER_LAYER, "n_head"),
    "attention.head_count_kv":         KeySpec(_PER_LAYER, "n_head_kv (grouped-query attention)"),
    "attention.key_length":            KeySpec(("u32",), "K head dim (n_embd / n_head)"),
    "attention.value_length":          KeySpec(("u32",), "head dimension of V"),
    "attention.layer_norm_epsilon":    KeySpec(("f32",), ""),
    "attention.layer_norm_rms_epsilon": KeySpec(("f32",), ""),
    "attention.causal":                KeySpec(("bool",), ""),
    "attention.sliding_window":        KeySpec(("u32",), ""),
    "attention.max_alibi_bias":        KeySpec(("f32",), ""),
    "attention.clamp_kqv":             KeySpec(("f32",), ""),
    "rope.dimension_count":            KeySpec(("u32",), "rotated dimensions per head"),
    "rope.freq_base":                  KeySpec(("f32",), "theta"),
    "rope.scale_linear":               KeySpec(("f32",), ""),
    "rope.scaling.type":               KeySpec(("str",), "none, linear, yarn, longrope"),
    "rope.scaling.factor":             KeySpec(("f32",), ""),
    "rope.scaling.attn_factor":        KeySpec(("f32",), ""),
    "rope.scaling.original_context_length": KeySpec(("u32",), ""),
    "rope.scaling.finetuned":          KeySpec(("bool",), ""),
}

TOKENIZER_KEYS: dict[str, KeySpec] = {
    "tokenizer.ggml.model":            KeySpec(("str",), "llama (SPM), gpt2 (BPE) ..."),
    "tokenizer.ggml.pre":              KeySpec(("str",), "pre-tokenizer name"),
    "tokenizer.ggml.tokens":           KeySpec(("[str]",), "the vocabulary, indexed by token id"),
    "tokenizer.ggml.scores":           KeySpec(("[f32]", "[i32]"), "one score per token"),
    "tokenizer.ggml.token_type":       KeySpec(("[i32]",), "one llama_token_type per token"),
    "tokenizer.ggml.token_type_count": KeySpec(("u32",), ""),
    "tokenizer.ggml.merges":           KeySpec(("[str]",), "BPE merges, 'a b'"),
    "tokenizer.ggml.add_bos_token":    KeySpec(("bool",), ""),
    "tokenizer.ggml.add_eos_token":    KeySpec(("bool",), ""),
    "tokenizer.ggml.add_sep_token":    KeySpec(("bool",), ""),
    "tokenizer.ggml.add_space_prefix": KeySpec(("bool",), ""),
    "tokenizer.ggml.remove_extra_whitespaces": KeySpec(("bool",), ""),
    "tokenizer.ggml.precompiled_charsmap": KeySpec(("[u8]",), ""),
    "tokenizer.chat_template":         KeySpec(("str",), "Jinja chat template"),
    "tokenizer.huggingface.json":      KeySpec(("str",), ""),
}
# fmt: on

# Special-token ids: llama.cpp reads each with gguf_get_val_u32 (a wrong type aborts) and
# ignores, with a warning, an id outside the vocabulary (rule V22).
SPECIAL_TOKEN_KEYS: tuple[str, ...] = tuple(
    f"tokenizer.ggml.{name}_token_id" for name in (
        "bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask",
        "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep",
        "prefix", "suffix", "middle",
    )
)
for _key in SPECIAL_TOKEN_KEYS:
    TOKENIZER_KEYS[_key] = KeySpec(("u32",), "special token id, < vocabulary size")

# Arrays with one element per token: their lengths must agree (rule V21).
PER_TOKEN_KEYS: tuple[str, ...] = (
    "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
)

# gguflite's own keys (spec section 7): the KM codebook extension, version 2
# (spec/extensions-km.md).
# ``{name}`` is the logical tensor name, e.g. gguflite.km.blk.0.ffn_down.weight.bits.
GGUFLITE_KM_KEYS: dict[str, KeySpec] = {
    "bits":  KeySpec(("u32",), "2, 3 or 4"),
    "shape": KeySpec(("[u64]",), "rows, cols of the logical tensor"),
}
KM_PREFIX = "gguflite.km."

# Split sets (spec section 14, gguflite/split.py): written by llama-gguf-split and gguf-py in
# every shard; llama.cpp reads them with these exact types.
KEY_SPLIT_NO = "split.no"
KEY_SPLIT_COUNT = "split.count"
KEY_SPLIT_TENSORS_COUNT = "split.tensors.count"
SPLIT_PREFIX = "split."
SPLIT_KEYS: dict[str, KeySpec] = {
    KEY_SPLIT_NO:            KeySpec(("u16",), "index of this shard, from 0"),
    KEY_SPLIT_COUNT:         KeySpec(("u16",), "number of shards in the set"),
    KEY_SPLIT_TENSORS_COUNT: KeySpec(("i32",), "number of tensors in all shards"),
}

KEY_SYNTAX = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")
_ID = re.compile(r"\.\d+\.")


def lookup(key: str, arch: str | None) -> KeySpec | None:
    """The registered spec of ``key`` (``arch`` is ``general.architecture``), or None."""
    for table in (GENERAL_KEYS, TOKENIZER_KEYS, SPLIT_KEYS):
        spec = table.get(key)
        if spec is not None:
            return spec
    if key.startswith("general.base_model."):
        return GENERAL_KEYS.get(_ID.sub(".{id}.", key, count=1))
    if key.startswith(KM_PREFIX):
        return GGUFLITE_KM_KEYS.get(key.rsplit(".", 1)[-1])
    if arch and key.startswith(arch + "."):
        return ARCH_KEYS.get(key[len(arch) + 1 :])
    return None
