"""The validator: reader rules surface as findings with the same number; every semantic rule
(V16-V25) has a file built here that breaks it and only it; good files produce no finding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf_bytes import build, f32s, gstr, kv, one_f32_tensor, tensor_info, u32, u64
from test_reader_rules import CASES as READER_CASES

from gguflite import GGUFWriter
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.validate import RULES, Severity, validate

F32 = GGMLType.F32
_ARCH = kv("general.architecture", T.STRING, gstr("test"))
_PAD4 = bytes(16)  # 4 f32 values use 16 bytes; the padding to 32


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "rule", "exc", "make"), READER_CASES,
                         ids=[c[0] for c in READER_CASES])
def test_reader_rules_are_reported(tmp_path, case, rule, exc, make):
    report = validate(_write(tmp_path, case, make()))
    assert not report.ok
    assert [f.rule for f in report.errors] == [rule], report.findings


def tiny_llama(path: Path, *, n_embd: int = 64, n_head: int = 4, n_head_kv: int = 2,
               n_ff: int = 96, n_layer: int = 2, n_vocab: int = 40,
               keys: dict | None = None, shapes: dict | None = None,
               skip_keys: tuple[str, ...] = ()) -> Path:
    """A structurally valid llama file with zero weights; ``keys``/``shapes`` override."""
    head_dim = n_embd // n_head
    items = {
        "general.architecture": ("llama", T.STRING, None),
        "llama.block_count": (n_layer, T.UINT32, None),
        "llama.embedding_length": (n_embd, T.UINT32, None),
        "llama.feed_forward_length": (n_ff, T.UINT32, None),
        "llama.attention.head_count": (n_head, T.UINT32, None),
        "llama.attention.head_count_kv": (n_head_kv, T.UINT32, None),
        "llama.context_length": (128, T.UINT32, None),
        "tokenizer.ggml.model": ("gpt2", T.STRING, None),
        "tokenizer.ggml.tokens": ([f"t{i}" for i in range(n_vocab)], T.ARRAY, T.STRING),
        "tokenizer.ggml.token_type": ([1] * n_vocab, T.ARRAY, T.INT32),
        "tokenizer.ggml.bos_token_id": (1, T.UINT32, None),
    }
    items.update(keys or {})
    tensors = {"token_embd.weight": (n_vocab, n_embd), "output_norm.weight": (n_embd,)}
    for i in range(n_layer):
        p = f"blk.{i}."
        tensors |= {
            p + "attn_norm.weight": (n_embd,), p + "ffn_norm.weight": (n_embd,),
            p + "attn_q.weight": (n_head * head_dim, n_embd),
            p + "attn_k.weight": (n_head_kv * head_dim, n_embd),
            p + "attn_v.weight": (n_head_kv * head_dim, n_embd),
            p + "attn_output.weight": (n_embd, n_head * head_dim),
            p + "ffn_gate.weight": (n_ff, n_embd), p + "ffn_up.weight": (n_ff, n_embd),
            p + "ffn_down.weight": (n_embd, n_ff),
        }
    tensors.update(shapes or {})
    with GGUFWriter(path) as w:
        for key, (value, vtype, etype) in items.items():
            if key not in skip_keys:
                w.add(key, value, vtype, etype)
        for name, shape in tensors.items():
            w.add_tensor(name, shape=shape, type=F32, data=np.zeros(shape, np.float32))
    return path


def test_tiny_llama_is_clean(tmp_path):
    report = validate(tiny_llama(tmp_path / "m.gguf"), deep=True)
    assert report.findings == []


def _only(report, rule: str, severity: Severity) -> None:
    assert [(f.rule, f.severity) for f in report.findings] == [(rule, severity)], \
        [str(f) for f in report.findings]


E, W = Severity.ERROR, Severity.WARNING
_T4 = tensor_info("t", [4], F32, 0)


# (id, rule, severity, writes the file into the given path)
SEMANTIC_CASES = [
    # GGUF version 2 is read (same layout as 3), with a warning: gguflite writes 3
    ("version_2", "V2", W, lambda p: p.write_bytes(build([_ARCH], version=2))),
    # a tensor name of 64 bytes does not load in llama.cpp (GGML_MAX_NAME 64 with the NUL)
    ("tensor_name_64_bytes", "V9", E,
     lambda p: p.write_bytes(one_f32_tensor("x" * 64, kvs=[_ARCH]))),
    # a string array element that is not UTF-8 (the reader decodes lazily)
    ("string_array_not_utf8", "V6", E,
     lambda p: p.write_bytes(build([_ARCH, kv("a.b", T.ARRAY, u32(T.STRING) + u64(2)
                                             + gstr("ok") + gstr(b"\xff"))]))),
    # a hole: the second tensor starts 32 bytes later than packing puts it
    ("hole_between_tensors", "V16", E,
     lambda p: p.write_bytes(build([_ARCH], [_T4, tensor_info("u", [4], F32, 64)],
                                   f32s(0, 1, 2, 3) + _PAD4 + bytes(32) + f32s(4, 5, 6, 7)))),
    # two tensors sharing the same bytes
    ("overlapping_tensors", "V16", E,
     lambda p: p.write_bytes(build([_ARCH], [_T4, tensor_info("u", [4], F32, 0)],
                                   f32s(0, 1, 2, 3) + _PAD4))),
    # tensors stored in a different order than declared
    ("reordered_tensors", "V16", E,
     lambda p: p.write_bytes(build([_ARCH], [tensor_info("u", [4], F32, 32), _T4],
                                   f32s(0, 1, 2, 3) + _PAD4 + f32s(4, 5, 6, 7) + _PAD4))),
    # nonzero bytes in the padding before the data section
    ("nonzero_header_padding", "V17", W,
     lambda p: p.write_bytes(build([_ARCH], [_T4], f32s(0, 1, 2, 3) + _PAD4, pad_byte=b"\x55"))),
    # nonzero bytes in the padding after a tensor
    ("nonzero_tensor_padding", "V17", W,
     lambda p: p.write_bytes(build([_ARCH], [_T4], f32s(0, 1, 2, 3) + b"\x01" * 16))),
    # bytes after the end of the (padded) data section
    ("trailing_bytes", "V18", W,
     lambda p: p.write_bytes(one_f32_tensor(kvs=[_ARCH]) + bytes(64))),
    # a key with capitals
    ("key_syntax", "V19", W,
     lambda p: p.write_bytes(build([_ARCH, kv("General.Name", T.STRING, gstr("x"))]))),
    # llama.block_count must be UINT32 (llama.cpp: "key has wrong type")
    ("block_count_int32", "V20", E,
     lambda p: tiny_llama(p, keys={"llama.block_count": (2, T.INT32, None)})),
    # token types must be an INT32 array
    ("token_type_u8", "V20", E,
     lambda p: tiny_llama(p, keys={"tokenizer.ggml.token_type": ([1] * 40, T.ARRAY, T.UINT8)})),
    # a special token id stored as INT32 aborts llama.cpp (gguf_get_val_u32 asserts)
    ("bos_id_int32", "V20", E,
     lambda p: tiny_llama(p, keys={"tokenizer.ggml.bos_token_id": (1, T.INT32, None)})),
    # fewer token types than tokens: llama.cpp refuses
    ("token_type_short", "V21", E,
     lambda p: tiny_llama(p, keys={"tokenizer.ggml.token_type": ([1] * 39, T.ARRAY, T.INT32)})),
    # more scores than tokens: llama.cpp ignores the extra ones
    ("scores_long", "V21", W,
     lambda p: tiny_llama(p, keys={"tokenizer.ggml.scores": ([0.0] * 41, T.ARRAY, T.FLOAT32)})),
    # an EOS id outside the vocabulary: llama.cpp warns and ignores it
    ("eos_outside_vocab", "V22", W,
     lambda p: tiny_llama(p, keys={"tokenizer.ggml.eos_token_id": (40, T.UINT32, None)})),
    # block_count says 3, the tensors have blocks 0 and 1
    ("block_count_mismatch", "V23", E,
     lambda p: tiny_llama(p, keys={"llama.block_count": (3, T.UINT32, None)})),
    # feed_forward_length disagrees with the FFN tensors of both layers (6 tensors)
    ("ffn_length_mismatch", "V23", E,
     lambda p: tiny_llama(p, keys={"llama.feed_forward_length": (128, T.UINT32, None)})),
    # head_count_kv 2 but attn_k is sized for 4 KV heads
    ("kv_heads_mismatch", "V23", E,
     lambda p: tiny_llama(p, shapes={"blk.1.attn_k.weight": (64, 64)})),
    # the embedding has 41 rows for a vocabulary of 40 tokens
    ("vocab_mismatch", "V23", E,
     lambda p: tiny_llama(p, shapes={"token_embd.weight": (41, 64)})),
    # no general.architecture
    ("no_architecture", "V25", W,
     lambda p: p.write_bytes(one_f32_tensor())),
    # a KM tensor whose bits key says 3 while its rows were packed with 4 bits (row length)
    ("km_bits_mismatch", "V26", E, lambda p: _km_file(p, bits_key=3)),
    # a KM tensor whose companion tensor <name>.km is missing
    ("km_missing_companion", "V26", E, lambda p: _km_file(p, drop=".km")),
    # a KM row whose codebook is not non-decreasing (entry 5 set to 0)
    ("km_codebook_descending", "V26", E, lambda p: _km_file(p, poke=(3, 4 + 5, 0))),
]


def _km_file(path: Path, *, bits_key: int = 4, drop: str = "",
             poke: tuple[int, int, int] | None = None) -> Path:
    """A KM4 tensor (spec/extensions-km.md) with one defect, or none (poke: row, byte, value)."""
    from gguflite.quants import km

    kmt = km.quantize(np.linspace(-1, 1, 8 * 64, dtype=np.float32).reshape(8, 64), 4)
    if poke is not None:
        data = kmt.data.copy()
        data[poke[0], poke[1]] = poke[2]
        kmt = km.KMTensor(kmt.bits, kmt.shape, data)
    with GGUFWriter(path) as w:
        w.add("general.architecture", "test", T.STRING)
        for name, shape, ttype, data in km.to_gguf_tensors("x.weight", kmt):
            if not drop or not name.endswith(drop):
                w.add_tensor(name, shape=shape, type=ttype, data=data)
        w.add_items(km.metadata_items("x.weight", kmt))
        w.remove("gguflite.km.x.weight.bits")
        w.add("gguflite.km.x.weight.bits", bits_key, T.UINT32)
    return path


def test_km_file_is_clean(tmp_path):
    assert validate(_km_file(tmp_path / "km.gguf"), deep=True).findings == []


@pytest.mark.parametrize(("case", "rule", "severity", "make"), SEMANTIC_CASES,
                         ids=[c[0] for c in SEMANTIC_CASES])
def test_semantic_rule(tmp_path, case, rule, severity, make):
    path = tmp_path / f"{case}.gguf"
    make(path)
    report = validate(path)
    assert report.rules == {rule}, [str(f) for f in report.findings]
    assert {f.severity for f in report.findings} == {severity}
    assert report.ok == (severity == W)


def test_ffn_mismatch_names_every_tensor(tmp_path):
    report = validate(tiny_llama(tmp_path / "m.gguf",
                                 keys={"llama.feed_forward_length": (128, T.UINT32, None)}))
    assert sorted(f.tensor for f in report.errors) == sorted(
        f"blk.{i}.ffn_{n}.weight" for i in range(2) for n in ("gate", "up", "down"))


def test_per_layer_head_count_array_is_accepted(tmp_path):
    """llama.cpp reads head counts as a scalar or one INT32/UINT32 per layer."""
    path = tiny_llama(tmp_path / "m.gguf",
                      keys={"llama.attention.head_count": ([4, 4], T.ARRAY, T.INT32)})
    assert validate(path).findings == []


def _float_tensor_file(path: Path, ttype: GGMLType, raw: np.ndarray, shape: tuple) -> Path:
    with GGUFWriter(path) as w:
        w.add("general.architecture", "test", T.STRING)
        w.add_tensor("w", shape=shape, type=ttype, data=raw)
    return path


DEEP_CASES = [
    # a NaN in F32 data
    ("f32_nan", GGMLType.F32, np.array([0, np.nan, 1, 2], "<f4"), (4,)),
    # +Inf in F16 data
    ("f16_inf", GGMLType.F16, np.array([0, np.inf, 1, 2], "<f2"), (4,)),
    # a BF16 NaN (exponent all ones, mantissa nonzero)
    ("bf16_nan", GGMLType.BF16, np.array([0x3F80, 0x7FC1, 0, 0], "<u2"), (4,)),
    # a Q8_0 block whose float16 scale is NaN
    ("q8_0_nan_scale", GGMLType.Q8_0,
     np.concatenate([np.array([np.nan], "<f2").view(np.uint8), np.ones(32, np.uint8)]), (1, 32)),
]


@pytest.mark.parametrize(("case", "ttype", "raw", "shape"), DEEP_CASES,
                         ids=[c[0] for c in DEEP_CASES])
def test_deep_finds_nonfinite(tmp_path, case, ttype, raw, shape):
    path = _float_tensor_file(tmp_path / f"{case}.gguf", ttype, raw, shape)
    assert validate(path).findings == []  # not looked at without deep
    report = validate(path, deep=True)
    assert report.rules == {"V24"} and not report.ok
    assert report.errors[0].tensor == "w"


def test_every_rule_is_tested():
    tested = {c[1] for c in READER_CASES} | {c[1] for c in SEMANTIC_CASES} | {"V24"}
    assert tested == set(RULES), set(RULES) - tested


def test_findings_are_capped_per_rule(tmp_path):
    keys = [kv(f"Bad.Key{i}", T.UINT8, b"\x01") for i in range(30)]
    report = validate(_write(tmp_path, "many", build([_ARCH, *keys])))
    assert len(report.findings) == 21  # 20 + one summary line
    assert "10 more" in report.findings[-1].message


def test_report_json_shape(tmp_path):
    report = validate(_write(tmp_path, "trail", one_f32_tensor(kvs=[_ARCH]) + b"x"))
    d = report.to_dict()
    assert d["ok"] is True and d["warnings"] == 1 and d["errors"] == 0
    assert d["findings"][0]["rule"] == "V18" and d["findings"][0]["severity"] == "warning"


def test_deep_warns_about_types_it_cannot_decode(tmp_path):
    """A block type without a gguflite codec: --deep says its data was not checked."""
    from gguflite.constants import GGML_TYPE_TRAITS
    from gguflite.quants import types

    decodable = {t.ggml_type for t in types()}
    undecodable = [t for t in GGMLType if t not in decodable and GGML_TYPE_TRAITS[t][0] > 1]
    if not undecodable:  # visible in the report, never a silent pass
        pytest.skip("every block type has a gguflite codec: no type is left unchecked")
    ttype = undecodable[0]
    block, size = GGML_TYPE_TRAITS[ttype]
    path = _float_tensor_file(tmp_path / "u.gguf", ttype, np.zeros(size, np.uint8), (1, block))
    report = validate(path, deep=True)
    assert report.ok and report.rules == {"V24"}
    assert "not checked" in report.warnings[0].message
