"""Finding NaN/Inf in tensor data: for ``validate --deep`` (rule V24), ``quantize`` and the runtime.

A file with a NaN or Inf in one weight runs "fine" and prints garbage, and a requantized copy
carries the NaN along. One function counts the non-finite values of a tensor (decoding block
types chunk by chunk, so memory stays bounded); ``check_finite`` turns the first bad tensor
into a one-line error naming it, and remembers per open file which tensors were already found
clean, so asking twice costs nothing.

Where the tools call it (the check must cost nothing measurable on the normal path):

- ``validate --deep``: every tensor (V24).
- ``quantize``: every tensor copied byte for byte (its bytes are read for the copy anyway);
  a re-encoded tensor is checked by its codec, which refuses NaN/Inf naming the tensor.
- the runtime: the 1-D tensors (norms, rope factors: a few kilobytes) at load, then nothing
  while the logits stay finite; when a forward pass produces a non-finite logit, every tensor
  is checked to name the culprit (``diagnose_nonfinite``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from .constants import GGML_TYPE_TRAITS, GGMLType
from .errors import ModelError, UnsupportedTypeError

if TYPE_CHECKING:
    from .reader import GGUFFile

_CHUNK_ELEMENTS = 1 << 22  # values decoded at a time (16 MiB of float32)
_INTEGER_TYPES = (GGMLType.I8, GGMLType.I16, GGMLType.I32, GGMLType.I64)
_FLOAT_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.F64)
_CLEAN: weakref.WeakKeyDictionary[GGUFFile, set[str]] = weakref.WeakKeyDictionary()


def count_nonfinite(f: GGUFFile, name: str) -> int | None:
    """Number of NaN/Inf values in tensor ``name``, or None if its type cannot be decoded.

    Parameters
    ----------
    f : an open file
    name : a tensor of ``f`` (a KM companion counts as the plain tensor it is stored as)
    """
    ti = f.tensors[name]
    if ti.type in _INTEGER_TYPES:
        return 0
    if ti.type in _FLOAT_TYPES:
        values = f.array(name).reshape(-1)  # (n,)
        return sum(int(np.count_nonzero(~np.isfinite(values[i:i + _CHUNK_ELEMENTS])))
                   for i in range(0, values.size, _CHUNK_ELEMENTS))
    raw = f.raw(name)  # (nbytes,) uint8
    if ti.type == GGMLType.BF16:
        bits = raw.view("<u2")  # exponent all ones: Inf or NaN
        return int(np.count_nonzero((bits & 0x7F80) == 0x7F80))
    from . import quants

    try:
        codec = quants.get_codec(ti.type)
    except UnsupportedTypeError:
        return None
    block_size, type_size = GGML_TYPE_TRAITS[ti.type]
    blocks = raw.reshape(-1, type_size)  # (n_blocks, type_size)
    step = max(1, _CHUNK_ELEMENTS // block_size)
    bad = 0
    for i in range(0, blocks.shape[0], step):
        values = codec.dequantize_blocks_fast(blocks[i:i + step])  # (step, block_size)
        bad += int(np.count_nonzero(~np.isfinite(values)))
    return bad


def check_finite(f: GGUFFile, names: Iterable[str], *, action: str = "run") -> None:
    """Raise ModelError naming the first tensor of ``names`` holding NaN/Inf.

    Tensors found clean are remembered on ``f``; a type gguflite cannot decode is skipped
    (whatever reads it reports that instead).

    Raises
    ------
    ModelError
        ``"tensor 'blk.0.ffn_norm.weight' (F32) holds 3 NaN/Inf values of 576; cannot run
        it ..."``
    """
    clean = _CLEAN.setdefault(f, set())
    for name in names:
        if name in clean or name not in f.tensors:
            continue
        bad = count_nonfinite(f, name)
        if bad:
            ti = f.tensors[name]
            raise ModelError(f"tensor {name!r} ({ti.type.name}) holds {bad} NaN/Inf values of "
                             f"{ti.n_elements}; cannot {action} it (validate --deep reports "
                             "V24; re-convert from a clean checkpoint)")
        clean.add(name)


def diagnose_nonfinite(f: GGUFFile, where: str) -> ModelError:
    """The error for non-finite logits: names the first non-finite tensor of ``f``, or says
    the weights are finite and the activations overflowed."""
    try:
        check_finite(f, f.tensors)
    except ModelError as exc:
        return exc
    return ModelError(f"the model produced non-finite logits (NaN/Inf) {where}, although every "
                      "tensor is finite: its activations overflow float32; the file cannot be "
                      "run as is")
