"""Session fixtures shared across test files: expensive artefacts made once per test run.

- ``smollm2_q4_k_m``: SmolLM2-135M-Instruct (the embedded default model, Q4_1) re-quantized by
  llama.cpp itself (``llama_model_quantize``) to its Q4_K_M mix (Q4_K, Q6_K, Q5_0, Q8_0, F32).
  The reader, codec and runtime tests all compare against this one file.
- ``smollm2``: the default model loaded once with the Numba backend (n_ctx 512, one thread).
  A test that uses it must not close it; it starts from ``reset()`` state (the fixture resets
  the KV cache before handing it out).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from gguflite.default_model import default_model_path

LLAMA_FTYPE_MOSTLY_Q4_K_M = 15  # llama.h: enum llama_ftype


def llama_cpp_quantize(src: Path, dst: Path, ftype: int, *, pure: bool = False,
                       imatrix: dict[str, np.ndarray] | None = None) -> Path:
    """Re-quantize ``src`` into ``dst`` with llama.cpp's ``llama_model_quantize`` (2 threads).

    ``ftype`` is a ``llama_ftype`` (15: Q4_K_M); ``pure`` puts every tensor in the base type;
    ``imatrix`` maps tensor names to importance rows (one value per column), as
    ``llama-quantize --imatrix`` passes them. Requantizing an already quantized source is
    allowed (the default model is Q4_1).
    """
    import llama_cpp

    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.pure = pure
    params.allow_requantize = True
    params.nthread = 2
    keep = []  # the arrays llama.cpp reads must outlive the call
    if imatrix:
        entries = (llama_cpp.llama_model_imatrix_data * (len(imatrix) + 1))()
        for e, (name, values) in zip(entries, imatrix.items(), strict=False):
            v = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(v)
            e.name, e.size = name.encode(), v.size
            e.data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        params.imatrix = entries  # the last entry (name NULL) ends the list
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                        ctypes.byref(params))
    assert rc == 0, f"llama_model_quantize(ftype={ftype}, pure={pure}) failed (rc={rc})"
    return dst


@pytest.fixture(scope="session")
def smollm2_q4_k_m(tmp_path_factory) -> Path:
    """The default model re-quantized by llama.cpp to Q4_K_M, once per session."""
    dst = tmp_path_factory.mktemp("llama_q4_k_m") / "smollm2-q4_k_m.gguf"
    return llama_cpp_quantize(default_model_path(), dst, LLAMA_FTYPE_MOSTLY_Q4_K_M)


@pytest.fixture(scope="session")
def _smollm2_session():
    from gguflite.runtime import load

    m = load(default_model_path(), n_ctx=512, threads=1)
    yield m
    m.close()


@pytest.fixture
def smollm2(_smollm2_session):
    """The default model (Numba backend, n_ctx 512, 1 thread), loaded once per session and
    reset before each test."""
    _smollm2_session.reset()
    return _smollm2_session
