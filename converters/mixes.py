"""llama.cpp's quantization mixes as data: one table per ``--type``.

Source: ``llama_tensor_get_type`` and ``tensor_type_fallback`` in llama.cpp's
src/llama-quant.cpp (the copy vendored in llama-cpp-python), read for dense models of the
llama family. A mix is a default type plus rules; a rule names a tensor role, the type it
gets, and when (a condition from ``CONDITIONS``). The first rule for a role whose condition
holds wins; a tensor with no matching rule gets the default type. Two facts hold for every
mix and live in ``output_type`` and ``fallback`` below, not in the tables:

- the output matrix (the token embedding when tied) gets Q6_K, or Q8_0 when its rows do not
  fit the default type's blocks or the default type is Q8_0;
- a type whose block does not divide a tensor's rows falls back (``FALLBACK``), and to F16
  when the fallback does not fit either.

Roles are the substrings llama.cpp matches (``attn_v.weight``, ``ffn_down`` ...). The layer
index ``i`` is the tensor's ``blk.N`` (llama.cpp counts attn_v / ffn_down tensors in layer
order, the same number for a dense model), ``n`` the layer count. A fused ``attn_qkv`` (Phi-3)
takes the attn_v rules, as in llama.cpp. Not modelled, since no gguflite architecture has
them: mixture-of-experts rules (``n_expert == 8``), Falcon, the 70B ``attn_v`` bump, and the
IQ1/IQ2/IQ3 mixes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gguflite.constants import LlamaFileType as F


@dataclass(frozen=True)
class Context:
    """What the conditions may look at, for one tensor."""

    i: int  # layer index (-1 outside blk.N)
    n: int  # layer count
    n_gqa: int  # attention heads per KV head
    has_imatrix: bool


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's layer selection for the extra-precision tensors of the *_M mixes."""
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or (i_layer - n_layers // 8) % 3 == 2)


CONDITIONS: dict[str, Callable[[Context], bool]] = {
    "always": lambda c: True,
    "use_more_bits": lambda c: use_more_bits(c.i, c.n),
    "i < 2": lambda c: c.i < 2,
    "i < 4": lambda c: c.i < 4,
    "i < n/8": lambda c: c.i < c.n // 8,
    "i < n/16": lambda c: c.i < c.n // 16,
    "n_gqa >= 4": lambda c: c.n_gqa >= 4,
    "no imatrix, i < n/8": lambda c: not c.has_imatrix and c.i < c.n // 8,
    "imatrix, i < n/8": lambda c: c.has_imatrix and c.i < c.n // 8,
}

# llama.cpp tensor_get_category, in its order: output and token_embd by the whole name, then
# the first substring found names the role; fused QKV (Phi-3) and MLA's kv_b count as attn_v
ROLES = (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
         ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
         ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
         ("ffn_down", "ffn_down"))


@dataclass(frozen=True)
class Rule:
    role: str
    type: str
    when: str = "always"

    def __post_init__(self) -> None:
        assert self.when in CONDITIONS, self.when  # a typo in the tables below


@dataclass(frozen=True)
class Mix:
    ftype: F  # general.file_type, llama.cpp's llama_ftype
    default: str
    rules: tuple[Rule, ...] = ()


MIXES: dict[str, Mix] = {
    "q2_k": Mix(F.MOSTLY_Q2_K, "q2_k", (
        Rule("attn_v", "q4_k", "n_gqa >= 4"),
        Rule("attn_v", "q3_k"),
        Rule("ffn_down", "q3_k"),
        Rule("attn_output", "q3_k"))),
    "q3_k_s": Mix(F.MOSTLY_Q3_K_S, "q3_k"),
    "q3_k_m": Mix(F.MOSTLY_Q3_K_M, "q3_k", (
        Rule("attn_v", "q5_k", "i < 2"),
        Rule("attn_v", "q4_k"),
        Rule("ffn_down", "q5_k", "i < n/16"),
        Rule("ffn_down", "q4_k"),
        Rule("attn_output", "q4_k"))),
    "q3_k_l": Mix(F.MOSTLY_Q3_K_L, "q3_k", (
        Rule("attn_v", "q5_k"),
        Rule("ffn_down", "q5_k"),
        Rule("attn_output", "q5_k"))),
    "q4_k_s": Mix(F.MOSTLY_Q4_K_S, "q4_k", (
        Rule("attn_v", "q5_k", "i < 4"),
        Rule("ffn_down", "q5_k", "i < n/8"))),
    "q4_k_m": Mix(F.MOSTLY_Q4_K_M, "q4_k", (
        Rule("attn_v", "q6_k", "use_more_bits"),
        Rule("ffn_down", "q6_k", "use_more_bits"))),
    "q5_k_s": Mix(F.MOSTLY_Q5_K_S, "q5_k"),
    "q5_k_m": Mix(F.MOSTLY_Q5_K_M, "q5_k", (
        Rule("attn_v", "q6_k", "use_more_bits"),
        Rule("ffn_down", "q6_k", "use_more_bits"))),
    "q6_k": Mix(F.MOSTLY_Q6_K, "q6_k"),
    "iq4_nl": Mix(F.MOSTLY_IQ4_NL, "iq4_nl", (
        Rule("attn_v", "q5_k", "n_gqa >= 4"),
        Rule("ffn_down", "q5_k", "no imatrix, i < n/8"))),
    "iq4_xs": Mix(F.MOSTLY_IQ4_XS, "iq4_xs", (
        Rule("attn_v", "q5_k", "n_gqa >= 4"),
        Rule("ffn_down", "q5_k", "no imatrix, i < n/8"))),
    "q4_0": Mix(F.MOSTLY_Q4_0, "q4_0", (Rule("ffn_down", "q4_1", "imatrix, i < n/8"),)),
    "q4_1": Mix(F.MOSTLY_Q4_1, "q4_1"),
    "q5_0": Mix(F.MOSTLY_Q5_0, "q5_0", (Rule("ffn_down", "q5_1", "imatrix, i < n/8"),)),
    "q5_1": Mix(F.MOSTLY_Q5_1, "q5_1"),
    "q8_0": Mix(F.MOSTLY_Q8_0, "q8_0"),
    "tq1_0": Mix(F.MOSTLY_TQ1_0, "tq1_0", (Rule("token_embd", "q4_k"),)),
    "tq2_0": Mix(F.MOSTLY_TQ2_0, "tq2_0", (Rule("token_embd", "q4_k"),)),
}

# tensor_type_fallback: a 256-block type whose block does not divide the rows
FALLBACK: dict[str, str] = {
    "iq4_xs": "iq4_nl",
    "q2_k": "q4_0", "q3_k": "q4_0", "tq1_0": "q4_0", "tq2_0": "q4_0",
    "q4_k": "q5_0",
    "q5_k": "q5_1",
    "q6_k": "q8_0",
}


def role_of(name: str) -> str:
    """llama.cpp's tensor category of a GGUF tensor name ("other" when none applies)."""
    if name == "output.weight":
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    for needle, role in ROLES:
        if needle in name:
            return role
    return "other"


def output_type(mix: Mix, row: int, block_size: Callable[[str], int]) -> str:
    """The output matrix's type (also the tied token embedding's)."""
    if row % block_size(mix.default) or mix.default == "q8_0":
        return "q8_0"
    return "q6_k"


def mix_type(mix_name: str, name: str, row: int, ctx: Context,
             block_size: Callable[[str], int], *, tied: bool) -> tuple[str, str]:
    """(type, reason) the mix ``mix_name`` gives tensor ``name`` before any fallback."""
    mix = MIXES[mix_name]
    role = role_of(name)
    if role == "output" or (tied and role == "token_embd"):
        return output_type(mix, row, block_size), f"{mix_name}: output tensor"
    for rule in mix.rules:
        if rule.role == role and CONDITIONS[rule.when](ctx):
            return rule.type, f"{mix_name}: {role}" + (
                "" if rule.when == "always" else f" ({rule.when})")
    return mix.default, mix_name
