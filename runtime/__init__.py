"""The CPU runtime: tokenizer, model forward pass, sampling and generation.

    >>> model = gguflite.runtime.load("model.gguf")          # None: the embedded default model
    >>> print(model.generate("The sea is", max_tokens=32, stream=False))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import Completion, GenerationStats, Model, load

__all__ = ["Completion", "GenerationStats", "Model", "load"]


def __getattr__(name: str) -> Any:
    # Lazy: importing gguflite.runtime.tokenizer must not compile the model's kernels.
    if name in __all__:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'gguflite.runtime' has no attribute {name!r}")
