"""Which tensor type each tensor gets: the ``--type`` recipes, overrides and fallbacks.

The decision for one tensor, first rule that applies wins:

1. 1-D tensors (norms, ``rope_freqs``) stay F32.
2. ``--tensor-type PATTERN=TYPE``, patterns tried in the order given. A pattern is a glob
   matched against the whole llama.cpp name (``blk.*.ffn_down.weight``), or, prefixed with
   ``re:``, a regular expression searched in it (``re:blk\\.(0|1)\\.attn_v``), as llama.cpp's
   ``--tensor-type`` does.
3. ``--embedding-type`` for ``token_embd.weight``, ``--output-type`` for ``output.weight``
   (with tied embeddings ``token_embd.weight`` is also the output, so it takes
   ``--output-type`` when no ``--embedding-type`` is given, as in llama.cpp).
4. The recipe of ``--type``:

   =========  ===============================================================================
   f32 f16    every 2-D tensor in that type
   bf16 q8_0  every 2-D tensor in that type
   q4_k q6_k  every 2-D tensor in that type ("pure")
   q4_k_m     llama.cpp's Q4_K_M mix (src/llama-quant.cpp): output (or the tied embedding)
              Q6_K; attn_v and ffn_down Q6_K in the layers where ``use_more_bits`` holds
              (the first and last eighth of the layers and every third layer between);
              everything else Q4_K
   tq1_0/2_0  ternary weights; token_embd Q4_K and output Q6_K, as llama.cpp does for TQ
   km2/3/4    gguflite's k-means codebook types; token_embd and output Q8_0
   =========  ===============================================================================

5. Fallback: when a row length is not a multiple of the chosen type's block size (SmolLM2's
   576-wide rows and the 256-element k-quant/ternary blocks), the tensor gets
   ``--fallback-type`` (default Q8_0, 8.5 bits per weight) instead, and the plan says so.
   llama.cpp falls back to Q5_0/Q5_1 (5.5-6 bits); we prefer not to lose precision silently.
   When even that does not fit, F16.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from gguflite.constants import LlamaFileType
from gguflite.errors import ConversionError

FLOAT_TYPES = ("f32", "f16", "bf16")
RECIPES = ("f32", "f16", "bf16", "q8_0", "q4_k", "q4_k_m", "q6_k", "km2", "km3", "km4",
           "tq1_0", "tq2_0")

# general.file_type written for each recipe (llama.cpp's llama_ftype). "q4_k" (pure) has no
# llama.cpp ftype of its own; Q4_K_S is the nearest. gguflite's km types have none: GUESSED.
FILE_TYPES: dict[str, LlamaFileType] = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16,
    "q8_0": LlamaFileType.MOSTLY_Q8_0,
    "q4_k": LlamaFileType.MOSTLY_Q4_K_S,
    "q4_k_m": LlamaFileType.MOSTLY_Q4_K_M,
    "q6_k": LlamaFileType.MOSTLY_Q6_K,
    "tq1_0": LlamaFileType.MOSTLY_TQ1_0,
    "tq2_0": LlamaFileType.MOSTLY_TQ2_0,
    "km2": LlamaFileType.GUESSED,
    "km3": LlamaFileType.GUESSED,
    "km4": LlamaFileType.GUESSED,
}
_BLK_RE = re.compile(r"^blk\.(\d+)\.")


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's layer selection for the extra-precision tensors of the *_M mixes."""
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or (i_layer - n_layers // 8) % 3 == 2)


@dataclass(frozen=True)
class TensorTypeRule:
    pattern: str  # as given by the user
    type: str
    regex: re.Pattern[str] | None  # for "re:" patterns

    def matches(self, name: str) -> bool:
        if self.regex is not None:
            return self.regex.search(name) is not None
        return fnmatch.fnmatchcase(name, self.pattern)


def parse_tensor_type(spec: str, known_types: set[str]) -> TensorTypeRule:
    """``PATTERN=TYPE`` -> rule; ConversionError naming the problem."""
    pattern, sep, ttype = spec.rpartition("=")
    if not sep or not pattern or not ttype:
        raise ConversionError(f"--tensor-type {spec!r}: expected PATTERN=TYPE")
    ttype = ttype.lower()
    if ttype not in known_types:
        raise ConversionError(f"--tensor-type {spec!r}: unknown type {ttype!r}; known: "
                              f"{', '.join(sorted(known_types))}")
    regex = None
    if pattern.startswith("re:"):
        try:
            regex = re.compile(pattern[3:])
        except re.error as exc:
            raise ConversionError(f"--tensor-type {spec!r}: bad regular expression: "
                                  f"{exc}") from None
    return TensorTypeRule(pattern, ttype, regex)


@dataclass(frozen=True)
class Recipe:
    """The user's type choices; ``choose`` applies them to one tensor."""

    base: str
    tensor_types: tuple[TensorTypeRule, ...] = ()
    output_type: str | None = None
    embedding_type: str | None = None
    fallback_type: str = "q8_0"
    block_sizes: dict[str, int] = field(default_factory=dict)  # type name -> block size

    def __post_init__(self) -> None:
        if self.base not in RECIPES:
            raise ConversionError(f"--type {self.base!r}: unknown; choose one of "
                                  f"{', '.join(RECIPES)}")

    @property
    def file_type(self) -> LlamaFileType:
        return FILE_TYPES[self.base]

    def _recipe_type(self, name: str, n_layers: int, tied: bool) -> tuple[str, str]:
        base = self.base
        is_output = name == "output.weight" or (tied and name == "token_embd.weight")
        if base in ("f32", "f16", "bf16", "q8_0", "q4_k", "q6_k"):
            return base, f"--type {base}"
        if base == "q4_k_m":
            if is_output:
                return "q6_k", "q4_k_m: output tensor"
            m = _BLK_RE.match(name)
            if m and name.endswith((".attn_v.weight", ".ffn_down.weight")) and use_more_bits(
                    int(m.group(1)), n_layers):
                return "q6_k", "q4_k_m: use_more_bits layer"
            return "q4_k", "q4_k_m"
        if base in ("tq1_0", "tq2_0"):
            if is_output:
                return "q6_k", f"{base}: output tensor"
            if name == "token_embd.weight":
                return "q4_k", f"{base}: token embedding"
            return base, f"--type {base}"
        # km2 / km3 / km4
        if is_output or name == "token_embd.weight":
            return "q8_0", f"{base}: embedding/output tensor"
        return base, f"--type {base}"

    def choose(self, name: str, shape: tuple[int, ...], *, n_layers: int,
               tied: bool) -> tuple[str, str]:
        """(type name, reason) for tensor ``name`` of numpy ``shape``."""
        if len(shape) < 2:
            return "f32", "1-D tensors stay F32"
        ttype, why = "", ""
        for rule in self.tensor_types:
            if rule.matches(name):
                ttype, why = rule.type, f"--tensor-type {rule.pattern}"
                break
        if not ttype and name == "token_embd.weight":
            if self.embedding_type:
                ttype, why = self.embedding_type, "--embedding-type"
            elif tied and self.output_type:
                ttype, why = self.output_type, "--output-type (tied embedding)"
        if not ttype and name == "output.weight" and self.output_type:
            ttype, why = self.output_type, "--output-type"
        if not ttype:
            ttype, why = self._recipe_type(name, n_layers, tied)
        row = shape[-1]
        block = self.block_sizes.get(ttype, 1)
        if row % block:
            fb = self.fallback_type
            if row % self.block_sizes.get(fb, 1) == 0:
                return fb, (f"fallback: row length {row} is not a multiple of the {ttype} "
                            f"block size {block}")
            return "f16", (f"fallback: row length {row} fits neither {ttype} ({block}) nor "
                           f"{fb} ({self.block_sizes.get(fb, 1)})")
        return ttype, why
