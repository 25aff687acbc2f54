"""Real llama.cpp-written files: every tensor decodes bit-exactly.

The files are SmolLM2-135M-Instruct as shipped (Q4_1 + Q8_0, written by llama.cpp) and that
file re-quantized by llama.cpp itself (``llama_model_quantize``) to the k-quant mixes. Every
tensor is decoded with ``gguflite`` and with the gguf package and compared bit for bit; the
tensor table gguflite reads is compared with llama.cpp's own GGUF parser (through ctypes).

SmolLM2's 576-wide rows are not multiples of 256, so llama.cpp falls back to Q5_0/Q8_0/... for
many tensors; ``pure`` mixes are used where a plain mix would contain no tensor of a type.
"""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path

import gguf
import gguf.quants
import numpy as np
import pytest
from conftest import llama_cpp_quantize
from ggml_ref import lib as ggml_lib

import gguflite
from gguflite.constants import GGML_TYPE_TRAITS, GGMLType
from gguflite.default_model import default_model_path
from gguflite.errors import UnsupportedTypeError
from gguflite.quants import get_codec

K_QUANTS = {GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K}

# label -> (llama_ftype, pure): what llama_model_quantize is asked for
MIXES = {
    "q4_k_m": (15, False),  # LLAMA_FTYPE_MOSTLY_Q4_K_M: Q4_K + Q6_K + fallbacks
    "q5_k_m": (17, False),  # Q5_K + Q6_K + fallbacks (MOSTLY_Q6_K adds no new type)
    "q2_k_pure": (10, True),  # the Q2_K mix puts no tensor in Q2_K at this size; pure does
    "q3_k_m_pure": (12, True),  # likewise for Q3_K
}
LABELS = ["original_q4_1", *MIXES]


@pytest.fixture(scope="session")
def llama_files(tmp_path_factory, smollm2_q4_k_m) -> dict[str, Path]:
    """The shipped file plus the llama.cpp re-quantizations, made once per session (Q4_K_M:
    the session's shared file, see conftest.py)."""
    out_dir = tmp_path_factory.mktemp("llama_quantized")
    files = {"original_q4_1": default_model_path()}
    for label, (ftype, pure) in MIXES.items():
        if label == "q4_k_m":
            files[label] = smollm2_q4_k_m
        else:
            files[label] = llama_cpp_quantize(default_model_path(),
                                              out_dir / f"smollm2-{label}.gguf", ftype, pure=pure)
    return files


def test_files_cover_every_k_quant(llama_files):
    seen: set[GGMLType] = set()
    for path in llama_files.values():
        with gguflite.open(path) as f:
            seen |= {ti.type for ti in f.tensors.values()}
    assert K_QUANTS <= seen, f"no tensor of {sorted(t.name for t in K_QUANTS - seen)}"


@pytest.fixture(scope="session")
def decoded_already() -> set[tuple[int, bytes]]:
    """(type, digest of the bytes) of tensors already compared in this session.

    The fallback tensors (Q5_0, Q4_0, ...) come out byte-identical in several mixes; decoding
    is a pure function of (type, bytes), so each distinct tensor is compared once.
    """
    return set()


@pytest.mark.parametrize("label", LABELS)
def test_every_tensor_decodes_bit_exactly(llama_files, decoded_already, label):
    with gguflite.open(llama_files[label]) as f:
        assert f.tensors, "a model file without tensors"
        for name, ti in f.tensors.items():
            raw = np.asarray(f.raw(name))
            key = (int(ti.type), hashlib.blake2b(raw, digest_size=16).digest())
            if key in decoded_already:
                continue
            decoded_already.add(key)
            got = f.dequantize(name)
            rows = raw.reshape(*ti.shape[:-1], -1) if len(ti.shape) > 1 else raw
            want = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType(int(ti.type)))
            want = np.asarray(want, dtype=np.float32).reshape(ti.shape)
            assert got.dtype == np.float32 and got.shape == ti.shape, name
            if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
                flat_g, flat_w = got.reshape(-1), want.reshape(-1)
                bad = np.nonzero(flat_g.view(np.uint32) != flat_w.view(np.uint32))[0]
                block = int(bad[0]) // get_codec(ti.type).block_size
                pytest.fail(f"{label}:{name} ({ti.type.name}): {bad.size} values differ, first "
                            f"in block {block}: got {flat_g[bad[0]]!r}, want {flat_w[bad[0]]!r}")
            if ti.type in K_QUANTS:  # the NumPy reference path as well
                ref = gguflite.quants.dequantize(raw, ti.type, ti.shape, reference=True)
                assert np.array_equal(ref.view(np.uint32), got.view(np.uint32)), name


class _GgufInitParams(ctypes.Structure):
    # gguf.h: struct gguf_init_params { bool no_alloc; struct ggml_context ** ctx; }
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def llama_cpp_tensor_table(path: Path) -> list[tuple[str, int, int, int]]:
    """(name, type id, absolute offset, nbytes) per tensor, from llama.cpp's GGUF parser."""
    so = ggml_lib()
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    so.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GgufInitParams]
    so.gguf_init_from_file.restype = p
    so.gguf_free.argtypes = [p]
    so.gguf_get_n_tensors.argtypes = [p]
    so.gguf_get_n_tensors.restype = i64
    so.gguf_get_data_offset.argtypes = [p]
    so.gguf_get_data_offset.restype = ctypes.c_size_t
    for fn, restype in (("gguf_get_tensor_name", ctypes.c_char_p),
                        ("gguf_get_tensor_type", ctypes.c_int),
                        ("gguf_get_tensor_offset", ctypes.c_size_t),
                        ("gguf_get_tensor_size", ctypes.c_size_t)):
        getattr(so, fn).argtypes = [p, i64]
        getattr(so, fn).restype = restype
    ctx = so.gguf_init_from_file(str(path).encode(), _GgufInitParams(True, None))
    assert ctx, f"llama.cpp could not parse {path}"
    try:
        base = so.gguf_get_data_offset(ctx)
        return [(so.gguf_get_tensor_name(ctx, i).decode(), so.gguf_get_tensor_type(ctx, i),
                 base + so.gguf_get_tensor_offset(ctx, i), so.gguf_get_tensor_size(ctx, i))
                for i in range(so.gguf_get_n_tensors(ctx))]
    finally:
        so.gguf_free(ctx)


@pytest.mark.parametrize("label", LABELS)
def test_reader_agrees_with_llama_cpp_on_tensor_bytes(llama_files, label):
    path = llama_files[label]
    with gguflite.open(path) as f:
        ours = [(ti.name, int(ti.type), ti.file_offset, ti.nbytes) for ti in f.tensors.values()]
        assert ours == llama_cpp_tensor_table(path)
        # and the bytes handed out are the file's bytes at that offset
        name = next(n for n, ti in f.tensors.items() if ti.type in K_QUANTS | {GGMLType.Q4_1})
        ti = f.tensors[name]
        with open(path, "rb") as fh:
            fh.seek(ti.file_offset)
            assert fh.read(ti.nbytes) == f.raw(name).tobytes()


def test_unsupported_type_error_names_the_tensor(tmp_path):
    unsupported = []
    for t in GGMLType:
        try:
            get_codec(t)
        except UnsupportedTypeError:
            unsupported.append(t)
    assert GGMLType.IQ2_XXS in unsupported  # the IQ family is decode-only in llama.cpp tools
    path = tmp_path / "iq.gguf"
    with gguflite.GGUFWriter(path) as w:
        w.add("general.architecture", "llama", gguflite.GGUFValueType.STRING)
        for t in unsupported:
            block, size = GGML_TYPE_TRAITS[t]
            w.add_tensor(f"w.{t.name.lower()}", shape=(2, block), type=t,
                         data=np.zeros(2 * size, np.uint8))
    with gguflite.open(path) as f:
        for t in unsupported:
            name = f"w.{t.name.lower()}"
            with pytest.raises(UnsupportedTypeError, match=rf"{name}: unsupported type {t.name}"):
                f.dequantize(name)
