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

   ==============  ==========================================================================
   f32 f16 bf16    every 2-D tensor in that type
   q4_k            every 2-D tensor Q4_K ("pure"; general.file_type says Q4_K_S)
   llama.cpp mixes q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k iq4_nl
                   iq4_xs q4_0 q4_1 q5_0 q5_1 q8_0 tq1_0 tq2_0: llama.cpp's tensor types
                   (``llama_tensor_get_type``), one table per mix in :mod:`.mixes`
   km2/3/4         gguflite's k-means codebook types; token_embd and output Q8_0
   ==============  ==========================================================================

5. Fallback: when a row length is not a multiple of the chosen type's block size (SmolLM2's
   576-wide rows and the 256-element k-quant/ternary blocks), the tensor gets llama.cpp's
   fallback for that type (Q2_K/Q3_K/TQ -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
   IQ4_XS -> IQ4_NL; :data:`.mixes.FALLBACK`), or ``--fallback-type`` for every such tensor
   when it is given; gguflite's km types fall back to Q8_0. The plan says so. When even that
   does not fit, F16.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from gguflite.constants import LlamaFileType
from gguflite.errors import ConversionError

from .mixes import FALLBACK, MIXES, Context, mix_type, use_more_bits

FLOAT_TYPES = ("f32", "f16", "bf16")
KM_TYPES = ("km2", "km3", "km4")
RECIPES = (*FLOAT_TYPES, "q4_k", *MIXES, *KM_TYPES)

# general.file_type written for each recipe (llama.cpp's llama_ftype). "q4_k" (pure) has no
# llama.cpp ftype of its own; Q4_K_S is the nearest. gguflite's km types have none: GUESSED.
FILE_TYPES: dict[str, LlamaFileType] = {
    "f32": LlamaFileType.ALL_F32,
    "f16": LlamaFileType.MOSTLY_F16,
    "bf16": LlamaFileType.MOSTLY_BF16,
    "q4_k": LlamaFileType.MOSTLY_Q4_K_S,
    **{name: mix.ftype for name, mix in MIXES.items()},
    **dict.fromkeys(KM_TYPES, LlamaFileType.GUESSED),
}
_BLK_RE = re.compile(r"^blk\.(\d+)\.")
__all__ = ["FILE_TYPES", "RECIPES", "Recipe", "TensorTypeRule", "parse_tensor_type",
           "use_more_bits"]


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
    fallback_type: str | None = None  # None: llama.cpp's per-type fallback (mixes.FALLBACK)
    block_sizes: dict[str, int] = field(default_factory=dict)  # type name -> block size

    def __post_init__(self) -> None:
        if self.base not in RECIPES:
            raise ConversionError(f"--type {self.base!r}: unknown; choose one of "
                                  f"{', '.join(RECIPES)}")

    @property
    def file_type(self) -> LlamaFileType:
        return FILE_TYPES[self.base]

    def _recipe_type(self, name: str, row: int, ctx: Context, tied: bool) -> tuple[str, str]:
        base = self.base
        if base in FLOAT_TYPES or base == "q4_k":
            return base, f"--type {base}"
        if base in MIXES:
            return mix_type(base, name, row, ctx, lambda t: self.block_sizes.get(t, 1),
                            tied=tied)
        # km2 / km3 / km4
        is_output = name == "output.weight" or (tied and name == "token_embd.weight")
        if is_output or name == "token_embd.weight":
            return "q8_0", f"{base}: embedding/output tensor"
        return base, f"--type {base}"

    def choose(self, name: str, shape: tuple[int, ...], *, n_layers: int, tied: bool,
               n_gqa: int = 1, has_imatrix: bool = False) -> tuple[str, str]:
        """(type name, reason) for tensor ``name`` of numpy ``shape``.

        ``n_gqa`` (attention heads per KV head) and ``has_imatrix`` (an importance matrix was
        given) are what some of llama.cpp's mixes look at.
        """
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
        row = shape[-1]
        if not ttype:
            m = _BLK_RE.match(name)
            ctx = Context(int(m.group(1)) if m else -1, n_layers, n_gqa, has_imatrix)
            ttype, why = self._recipe_type(name, row, ctx, tied)
        block = self.block_sizes.get(ttype, 1)
        if row % block:
            fb = self.fallback_type or FALLBACK.get(ttype, "q8_0" if block > 32 else ttype)
            if row % self.block_sizes.get(fb, 1) == 0:
                return fb, (f"fallback: row length {row} is not a multiple of the {ttype} "
                            f"block size {block}")
            return "f16", (f"fallback: row length {row} fits neither {ttype} ({block}) nor "
                           f"{fb} ({self.block_sizes.get(fb, 1)})")
        return ttype, why
