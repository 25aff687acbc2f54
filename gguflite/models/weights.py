"""A file's tensors checked against its family's table, and gathered into ``graph.Weights``.

Every backend loads through ``load_weights`` with its own constructors (a Numba ``Linear`` over
the mapped bytes, a torch tensor, a float64 array), so which tensor feeds which weight, fused
row ranges included, is decided here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gguflite import quants
from gguflite.constants import GGMLType
from gguflite.errors import ModelError, UnsupportedTypeError
from gguflite.finite import check_finite
from gguflite.quants import km
from gguflite.reader import GGUFFile

from .base import Family, HParams
from .graph import BlockWeights, Weights

FLOAT_TYPES = {GGMLType.F32, GGMLType.F16, GGMLType.BF16}

# BlockWeights field -> the block-local tensor name it reads (after fused tensors are split).
BLOCK_FIELDS: dict[str, str] = {
    "attn_norm": "attn_norm.weight", "wq": "attn_q.weight", "wk": "attn_k.weight",
    "wv": "attn_v.weight", "wo": "attn_output.weight", "ffn_norm": "ffn_norm.weight",
    "w_gate": "ffn_gate.weight", "w_up": "ffn_up.weight", "w_down": "ffn_down.weight",
    "bq": "attn_q.bias", "bk": "attn_k.bias", "bv": "attn_v.bias",
    "q_norm": "attn_q_norm.weight", "k_norm": "attn_k_norm.weight",
    "post_attn_norm": "post_attention_norm.weight", "post_ffn_norm": "post_ffw_norm.weight",
}


def check_tensors(f: GGUFFile, fam: type[Family], hp: HParams) -> None:
    """Every required tensor present with its table shape, no tensor outside the table, vectors
    stored as floats, every type decodable; ModelError naming the tensor otherwise."""
    specs = fam.tensors(hp)
    table = {s.name: s for s in specs}
    kms = {n for n in table if km.is_km_tensor(f, n)}  # KM companions (gguflite extension)
    for s in specs:
        if not s.optional and s.name not in f.tensors and s.name not in kms:
            raise ModelError(f"tensor {s.name!r} is missing; a {hp.arch} model with "
                             f"{hp.n_layer} blocks needs it, of shape {s.shape}")
    for name, ti in f.tensors.items():
        if name.rpartition(".")[0] in kms:
            continue  # a KM companion: checked by km.from_gguf when loaded
        spec = table.get(name)
        if spec is None:
            raise ModelError(f"tensor {name!r} is not part of the {hp.arch} graph (tensors "
                             "of other families, experts and extra blocks are not supported)")
        if tuple(ti.shape) != spec.shape:
            raise ModelError(f"tensor {name!r} has shape {tuple(ti.shape)}, expected "
                             f"{spec.shape} from the {hp.arch} metadata")
        if ti.type not in FLOAT_TYPES and len(spec.shape) == 1:
            raise ModelError(f"tensor {name!r} is a vector of type {ti.type.name}; norm "
                             "weights, biases and rope factors must be F32, F16 or BF16")
        try:
            quants.get_codec(ti.type)
        except UnsupportedTypeError as exc:
            raise ModelError(f"tensor {name!r}: type {ti.type.name} cannot be decoded "
                             f"({exc})") from None


def has_tensor(f: GGUFFile, name: str) -> bool:
    return name in f.tensors or km.is_km_tensor(f, name)


Linear = Callable[[str, tuple[int, int] | None, tuple[int, int]], Any]


def load_weights(f: GGUFFile, fam: type[Family], hp: HParams, *, n_ctx: int, linear: Linear,
                 vector: Callable[[str], Any], table: Callable[[str], Any]) -> Weights:
    """Check the tensors, then build ``Weights`` with the backend's constructors.

    linear(name, rows, shape): the product with tensor ``name`` (or its rows r0..r1 when
    ``rows`` is given, for fused tensors), numpy shape (out, in) = ``shape``.
    vector(name): a 1-D float tensor. table(name): the embedding table for ``embed``.
    """
    check_tensors(f, fam, hp)
    check_finite(f, [n for n, ti in f.tensors.items() if len(ti.shape) <= 1])  # vectors: KiB
    splits = fam.split_rows(hp)
    parts: dict[str, tuple[str, tuple[int, int]]] = {}  # logical suffix -> (fused, rows)
    for fused, pieces in splits.items():
        for logical, r0, r1 in pieces:
            parts[logical] = (fused, (r0, r1))
    shapes = {s.name: s.shape for s in fam.tensors(hp)}
    blocks = []
    for layer in range(hp.n_layer):
        p = f"blk.{layer}."
        got: dict[str, Any] = {}
        for field, suffix in BLOCK_FIELDS.items():
            if suffix in parts:
                fused, rows = parts[suffix]
                if km.is_km_tensor(f, p + fused):
                    raise ModelError(f"tensor {p + fused!r}: a fused tensor cannot be KM")
                cols = shapes[p + fused][1]
                got[field] = linear(p + fused, rows, (rows[1] - rows[0], cols))
            elif p + suffix in shapes:
                shape = shapes[p + suffix]
                got[field] = vector(p + suffix) if len(shape) == 1 else \
                    linear(p + suffix, None, shape)
        blocks.append(BlockWeights(**got))
    head = "output.weight" if has_tensor(f, "output.weight") else "token_embd.weight"
    factors = fam.rope_factor_tensor(hp, n_ctx)
    return Weights(
        tok_embd=table("token_embd.weight"), blocks=blocks,
        output_norm=vector("output_norm.weight"),
        output=linear(head, None, (hp.vocab_size, hp.dim)),
        rope_factors=(f.dequantize(factors).astype(np.float32)
                      if factors and factors in f.tensors else None))
