"""Model family descriptions: one module per ``general.architecture``.

The layer between the format core (``gguflite.reader`` / ``writer``) and its users: the
converter, the validator, the runtime's backends and the float64 oracle all read a family from
here, and nothing else describes a model's tensors or graph.

    >>> fam = family_for_arch("qwen2")           # from a file's general.architecture
    >>> hp = fam.from_metadata(f.metadata)       # the one HParams
    >>> [t.name for t in fam.tensors(hp)]        # the tensor table
    >>> fam = family_for_hf(config)              # from an HF config.json

``graph.forward`` is the forward pass, written once over a small set of operations that each
backend implements; ``rope`` holds the rotary tables and the Q/K row permutation.

Adding a family that needs no new operation: one module here (a ``Family`` subclass) plus its
entry in ``FAMILIES``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gguflite.errors import ConversionError, ModelError

from .base import Family, HParams, TensorSpec
from .gemma3 import Gemma3
from .llama import Llama
from .phi3 import Phi3
from .qwen2 import Qwen2
from .qwen3 import Qwen3
from .smollm3 import SmolLM3

FAMILIES: dict[str, type[Family]] = {f.arch: f for f in (Llama, Qwen2, Qwen3, Gemma3, Phi3,
                                                          SmolLM3)}
SUPPORTED_ARCHS = tuple(FAMILIES)
_BY_HF = {hf: f for f in FAMILIES.values() for hf in f.hf_architectures}
SUPPORTED_HF = tuple(_BY_HF)


def family_for_arch(arch: Any) -> type[Family]:
    """The family of a file's ``general.architecture``; ModelError naming it otherwise."""
    fam = FAMILIES.get(arch) if isinstance(arch, str) else None
    if fam is None:
        raise ModelError(f"general.architecture is {arch!r}; gguflite runs "
                         f"{', '.join(SUPPORTED_ARCHS)}")
    return fam


def family_for_hf(config: Mapping[str, Any]) -> type[Family]:
    """The family of an HF config.json (its ``architectures[0]``); ConversionError otherwise."""
    archs = config.get("architectures") or [config.get("model_type", "<none>")]
    arch = archs[0] if isinstance(archs, list) and archs else archs
    fam = _BY_HF.get(arch) if isinstance(arch, str) else None
    if fam is None:
        raise ConversionError(f"config.json: architecture {arch!r} is not supported; "
                              f"supported: {', '.join(SUPPORTED_HF)}")
    return fam


def hparams_from_metadata(md: Mapping[str, Any]) -> HParams:
    """The hyper-parameters of a file, read by its family."""
    return family_for_arch(md.get("general.architecture")).from_metadata(md)


__all__ = ["FAMILIES", "SUPPORTED_ARCHS", "SUPPORTED_HF", "Family", "HParams", "TensorSpec",
           "family_for_arch", "family_for_hf", "hparams_from_metadata"]
