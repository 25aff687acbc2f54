"""Hugging Face tokenizer files -> ``tokenizer.*`` metadata items with explicit types.

Mirrors llama.cpp's convert_hf_to_gguf.py (``_set_vocab_sentencepiece``, ``_set_vocab_gpt2`` with
``get_vocab_base``) and gguf-py's ``SpecialVocab``, reading the files directly (no transformers).

Which tokenizer a directory holds::

    tokenizer.json, model BPE over ByteLevel    -> "gpt2"  (tokens, merges, types, pre)
    otherwise tokenizer.model (SentencePiece)   -> "llama" (tokens, scores, types)
    otherwise                                   -> ConversionError

``tokenizer.ggml.pre`` (which pre-tokenizer regexes the runtime must use) is detected from the
structure of tokenizer.json's ``pre_tokenizer``, not from llama.cpp's hash of probe-string
token ids (that needs the model's own tokenizer to run and a table of known hashes)::

    ByteLevel(use_regex=True)                              -> "gpt-2"
    Digits(individual_digits=True), ByteLevel(use_regex)   -> "smollm" ("starcoder" when
                                                              clean_up_tokenization_spaces)
    Split(<Llama 3 regex>), ByteLevel(use_regex=False)     -> "llama-bpe"
    Split(<Qwen 2 regex>),  ByteLevel(use_regex=False)     -> "qwen2"
    Split(<GPT-4o regex>),  ByteLevel(use_regex=False)     -> "gpt-4o" (Phi-4-mini)

Anything else is a ConversionError that names the structure found. A tokenizer.json normalizer
(e.g. Qwen 2's NFC) is ignored, as llama.cpp does.

Token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. Added
tokens become CONTROL when marked special or when they look special (``<|...|>``), otherwise
USER_DEFINED; ids below the model's ``vocab_size`` with no token become ``[PAD{i}]`` UNUSED.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError
from gguflite.runtime.tokenizer.vocab import special_id_key
from gguflite.writer import MetadataItem

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-4o / o200k as tokenizer.json writes it (Xenova/gpt-4o, Phi-4-mini); the runtime runs
# llama.cpp's rewrite of it (runtime/tokenizer/bpe.py GPT4O_REGEX).
_O200K_CASE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
GPT4O_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    + _O200K_CASE
    + r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    + _O200K_CASE
    + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# config.json model_type of families whose llama.cpp converter writes add_space_prefix = false for
# a SentencePiece tokenizer whatever tokenizer.model says (GemmaModel / Gemma2Model / Gemma3Model
# set_vocab in convert_hf_to_gguf.py).
SPM_NO_SPACE_PREFIX = frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"})


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"cannot read {path}: {exc}") from None


def looks_special(text: str) -> bool:
    """llama.cpp's ``does_token_look_special``: added tokens that are control tokens in practice."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def export_tokenizer(model_dir: Path, config: dict) -> list[MetadataItem]:
    """The ``tokenizer.*`` metadata of a Hugging Face model directory.

    Parameters
    ----------
    model_dir:
        Directory with tokenizer.json and/or tokenizer.model, and optionally
        tokenizer_config.json, added_tokens.json, chat_template.jinja / chat_template.json.
    config:
        The model's config.json (``vocab_size`` and ``*_token_id`` are used).

    Returns
    -------
    list of (key, value, GGUFValueType, element type or None)
        Ready for ``GGUFWriter.add_items``.

    Raises
    ------
    ConversionError
        No supported tokenizer, an unknown pre-tokenizer, or inconsistent files.
    """
    model_dir = Path(model_dir)
    tj_path = model_dir / "tokenizer.json"
    spm_path = model_dir / "tokenizer.model"
    tc_path = model_dir / "tokenizer_config.json"
    tj = _read_json(tj_path) if tj_path.is_file() else None
    tc = _read_json(tc_path) if tc_path.is_file() else {}
    if not isinstance(tc, dict):
        raise ConversionError(f"{tc_path} is not a JSON object")
    if tj is not None and not isinstance(tj, dict):
        raise ConversionError(f"{tj_path} is not a JSON object")

    if tj is not None and _is_byte_level_bpe(tj):
        items, tokens = _bpe_items(tj, tc, config, tj_path)
        fallback_ids: dict[str, int] = {}
        is_spm = False
    elif spm_path.is_file():
        items, tokens, fallback_ids = _spm_items(model_dir, spm_path, tc, config)
        is_spm = True
    else:
        found = "tokenizer.json with a non-byte-level model" if tj is not None else "no tokenizer"
        raise ConversionError(
            f"{model_dir}: {found}; supported are a byte-level BPE tokenizer.json "
            "(GPT-2, Llama 3, Qwen 2, SmolLM style) or a SentencePiece tokenizer.model"
        )

    special, add_flags = _special_vocab(tj, tc, config, len(tokens), fallback_ids)
    for kind, tid in special.items():
        # llama.cpp's key names (gguf-py Keys.Tokenizer): unk -> unknown, sep -> seperator (sic)
        items.append((special_id_key(kind), tid, T.UINT32, None))
    for kind, flag in add_flags.items():
        items.append((f"tokenizer.ggml.add_{kind}_token", flag, T.BOOL, None))
    if isinstance(tc.get("add_prefix_space"), bool):
        items = [it for it in items if it[0] != "tokenizer.ggml.add_space_prefix"]
        items.append(("tokenizer.ggml.add_space_prefix", tc["add_prefix_space"], T.BOOL, None))
    if is_spm and config.get("model_type") in SPM_NO_SPACE_PREFIX:
        # Gemma: llama.cpp's converter writes false last, over tokenizer.model and add_prefix_space
        items = [it for it in items if it[0] != "tokenizer.ggml.add_space_prefix"]
        items.append(("tokenizer.ggml.add_space_prefix", False, T.BOOL, None))
    items.extend(_chat_template_items(model_dir, tc, tc_path))
    return items


# ---------------------------------------------------------------------------- BPE (gpt2)


def _is_byte_level_bpe(tj: dict) -> bool:
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        return False
    steps = _flatten(tj.get("pre_tokenizer"), "pretokenizers")
    dec = _flatten(tj.get("decoder"), "decoders")
    return any(s.get("type") == "ByteLevel" for s in steps + dec)


def _flatten(node: Any, list_key: str) -> list[dict]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        out: list[dict] = []
        for child in node.get(list_key) or []:
            out.extend(_flatten(child, list_key))
        return out
    return [node]


def _regex_of(step: dict) -> str | None:
    pattern = step.get("pattern") or {}
    return pattern.get("Regex") if isinstance(pattern, dict) else None


def detect_pre(tj: dict, tc: dict, where: Path) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` name for tokenizer.json's pre-tokenizer structure."""
    steps = _flatten(tj.get("pre_tokenizer"), "pretokenizers")
    sig: list[tuple] = []
    for s in steps:
        kind = s.get("type")
        if kind == "ByteLevel":
            if s.get("add_prefix_space"):
                raise ConversionError(
                    f"{where}: ByteLevel pre-tokenizer with add_prefix_space=true is not supported"
                )
            sig.append(("ByteLevel", bool(s.get("use_regex", True))))
        elif kind == "Digits":
            sig.append(("Digits", bool(s.get("individual_digits", False))))
        elif kind == "Split":
            behavior, invert = s.get("behavior"), bool(s.get("invert", False))
            if (behavior, invert) == ("Removed", True):
                # keep the matches, drop what is between them (Xenova's tiktoken conversions):
                # the same split as Isolated for these regexes, which match every character
                behavior, invert = "Isolated", False
            sig.append(("Split", _regex_of(s), behavior, invert))
        else:
            sig.append((kind,))
    clean = bool(tc.get("clean_up_tokenization_spaces", False))
    known = {
        (("ByteLevel", True),): "gpt-2",
        (("Digits", True), ("ByteLevel", True)): "starcoder" if clean else "smollm",
        (("Split", LLAMA3_REGEX, "Isolated", False), ("ByteLevel", False)): "llama-bpe",
        (("Split", QWEN2_REGEX, "Isolated", False), ("ByteLevel", False)): "qwen2",
        (("Split", GPT4O_REGEX, "Isolated", False), ("ByteLevel", False)): "gpt-4o",
    }
    name = known.get(tuple(sig))
    if name is None:
        raise ConversionError(
            f"{where}: unsupported pre_tokenizer {sig!r}; supported: ByteLevel (gpt-2), "
            "Digits+ByteLevel (smollm/starcoder), Split(Llama 3 regex)+ByteLevel (llama-bpe), "
            "Split(Qwen 2 regex)+ByteLevel (qwen2), Split(GPT-4o regex)+ByteLevel (gpt-4o)"
        )
    return name


def _merges(tj: dict, where: Path) -> list[str]:
    merges = (tj.get("model") or {}).get("merges")
    if not isinstance(merges, list) or not merges:
        raise ConversionError(f"{where}: model.merges is missing or empty")
    out: list[str] = []
    for i, m in enumerate(merges):
        if isinstance(m, str):
            out.append(m)
        elif isinstance(m, list) and len(m) == 2 and all(isinstance(p, str) for p in m):
            # pairs format (transformers >= 4.45): a literal space inside a part is written as
            # its byte-level character U+0120 so that "left right" stays splittable.
            out.append(" ".join(p.replace(" ", "\u0120") for p in m))
        else:
            raise ConversionError(f"{where}: model.merges[{i}] = {m!r} is neither 'a b' nor [a, b]")
    return out


def _bpe_items(
    tj: dict, tc: dict, config: dict, where: Path
) -> tuple[list[MetadataItem], list[str]]:
    vocab = (tj.get("model") or {}).get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise ConversionError(f"{where}: model.vocab is missing or empty")
    reverse: dict[int, str] = {}
    for text, tid in vocab.items():
        reverse[int(tid)] = text
    added = _added_tokens(tj, where)
    for tid, tok in added.items():
        reverse[tid] = tok["content"]
    top = max(reverse) + 1
    n = int(config.get("vocab_size") or top)
    if top > n:
        raise ConversionError(f"{where}: token id {top - 1} is >= config vocab_size {n}")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            text = added[i]["content"]
            if added[i].get("special") or looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace("\u2581", " ")  # llama.cpp pre-normalizes user-defined spaces
                types.append(USER_DEFINED)
            tokens.append(text)
        else:
            tokens.append(reverse[i])
            types.append(NORMAL)
    items: list[MetadataItem] = [
        ("tokenizer.ggml.model", "gpt2", T.STRING, None),
        ("tokenizer.ggml.pre", detect_pre(tj, tc, where), T.STRING, None),
        ("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        ("tokenizer.ggml.token_type", np.asarray(types, np.int32), T.ARRAY, T.INT32),
        ("tokenizer.ggml.merges", _merges(tj, where), T.ARRAY, T.STRING),
    ]
    return items, tokens


def _added_tokens(tj: dict | None, where: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for i, tok in enumerate((tj or {}).get("added_tokens") or []):
        if not isinstance(tok, dict) or not isinstance(tok.get("id"), int):
            raise ConversionError(f"{where}: added_tokens[{i}] has no integer id")
        if not isinstance(tok.get("content"), str) or not tok["content"]:
            raise ConversionError(f"{where}: added_tokens[{i}] has no content")
        out[tok["id"]] = tok
    return out


# ---------------------------------------------------------------------------- SentencePiece


def _spm_add_dummy_prefix(blob: bytes) -> bool:
    """``normalizer_spec.add_dummy_prefix`` of a serialized sentencepiece ModelProto.

    Protobuf wire format, read without the protobuf package::

        ModelProto      field 3 (length-delimited) = NormalizerSpec
        NormalizerSpec  field 3 (varint)           = add_dummy_prefix, default true
    """

    def fields(buf: bytes):
        i = 0
        while i < len(buf):
            key, i = _varint(buf, i)
            num, wire = key >> 3, key & 7
            if wire == 0:
                val, i = _varint(buf, i)
                yield num, val
            elif wire == 2:
                size, i = _varint(buf, i)
                yield num, buf[i : i + size]
                i += size
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                raise ConversionError(f"tokenizer.model: protobuf wire type {wire} at byte {i}")

    result = True
    for num, val in fields(blob):
        if num == 3 and isinstance(val, bytes):
            for sub_num, sub_val in fields(val):
                if sub_num == 3 and isinstance(sub_val, int):
                    result = bool(sub_val)
    return result


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ConversionError("tokenizer.model: truncated protobuf varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _spm_items(
    model_dir: Path, spm_path: Path, tc: dict, config: dict
) -> tuple[list[MetadataItem], list[str], dict[str, int]]:
    try:
        import sentencepiece
    except ImportError as exc:
        raise ConversionError(
            "converting a SentencePiece tokenizer.model needs the 'sentencepiece' package: "
            "pip install 'gguflite[convert]'"
        ) from exc
    blob = spm_path.read_bytes()
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(blob)
    except (RuntimeError, OSError) as exc:
        raise ConversionError(f"{spm_path}: not a sentencepiece model: {exc}") from None
    n_sp = sp.vocab_size()
    n = int(config.get("vocab_size") or n_sp)
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = np.full(n, -10000.0, np.float32)
    types = np.full(n, UNUSED, np.int32)
    for i in range(min(n, n_sp)):
        tokens[i] = sp.IdToPiece(i)
        scores[i] = sp.GetScore(i)
        if sp.IsUnknown(i):
            types[i] = UNKNOWN
        elif sp.IsControl(i):
            types[i] = CONTROL
        elif sp.IsUnused(i):
            types[i] = UNUSED
        elif sp.IsByte(i):
            types[i] = BYTE
        else:
            types[i] = NORMAL

    added_path = model_dir / "added_tokens.json"
    if added_path.is_file():
        added = _read_json(added_path)
        if not isinstance(added, dict):
            raise ConversionError(f"{added_path} is not a JSON object")
        for text, tid in added.items():
            if isinstance(tid, int) and 0 <= tid < n:
                tokens[tid], scores[tid], types[tid] = text, -1000.0, USER_DEFINED
    decoder = tc.get("added_tokens_decoder") or {}
    for key, data in decoder.items():
        try:
            tid = int(key)
        except ValueError:
            raise ConversionError(
                f"tokenizer_config.json: added_tokens_decoder key {key!r} is not an id"
            ) from None
        if not (0 <= tid < n and isinstance(data, dict) and isinstance(data.get("content"), str)):
            continue
        text = data["content"]
        if data.get("special") or looks_special(text):
            types[tid] = CONTROL
        else:
            text = text.replace("\u2581", " ")
            types[tid] = USER_DEFINED
        tokens[tid], scores[tid] = text, -1000.0

    items: list[MetadataItem] = [
        ("tokenizer.ggml.model", "llama", T.STRING, None),
        ("tokenizer.ggml.pre", "default", T.STRING, None),
        ("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING),
        ("tokenizer.ggml.scores", scores, T.ARRAY, T.FLOAT32),
        ("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32),
        ("tokenizer.ggml.add_space_prefix", _spm_add_dummy_prefix(blob), T.BOOL, None),
    ]
    # sentencepiece's own special ids: used where neither tokenizer files nor config.json name one.
    own = {"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id(), "pad": sp.pad_id()}
    return items, tokens, {k: v for k, v in own.items() if 0 <= v < n}


# ---------------------------------------------------------------------------- special vocab


def _token_content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _special_vocab(
    tj: dict | None, tc: dict, config: dict, n_vocab: int, fallback_ids: dict[str, int]
) -> tuple[dict[str, int], dict[str, bool]]:
    """Special token ids and add_bos/add_eos flags (gguf-py ``SpecialVocab``, simplified).

    Ids: the ``{kind}_token`` of tokenizer_config.json looked up among tokenizer.json's added
    tokens, then config.json's ``{kind}_token_id``. Flags: tokenizer.json's post-processor
    (TemplateProcessing starting with the BOS token / ending with EOS; ByteLevel adds nothing),
    then tokenizer_config.json's ``add_{kind}_token``.
    """
    ids: dict[str, int] = {}
    added = list((tj or {}).get("added_tokens") or [])
    for kind in SPECIAL_KINDS:
        content = _token_content(tc.get(f"{kind}_token"))
        if content is None:
            continue
        for tok in added:
            if isinstance(tok, dict) and tok.get("content") == content:
                tid = tok.get("id")
                if isinstance(tid, int) and 0 <= tid < n_vocab:
                    ids[kind] = tid
                break
    for kind in SPECIAL_KINDS:
        tid = config.get(f"{kind}_token_id")
        if isinstance(tid, list) and tid:  # some configs list several eos ids; the first is eos
            tid = tid[0]
        if kind not in ids and isinstance(tid, int) and not isinstance(tid, bool):
            if 0 <= tid < n_vocab:
                ids[kind] = tid
    for kind, tid in fallback_ids.items():
        ids.setdefault(kind, tid)

    flags: dict[str, bool] = {}
    post = (tj or {}).get("post_processor")
    for proc in _flatten(post, "processors"):
        kind = proc.get("type")
        if kind == "ByteLevel":
            flags.setdefault("bos", False)
            flags.setdefault("eos", False)
        elif kind == "TemplateProcessing":
            single = proc.get("single") or []
            bos = _token_content(tc.get("bos_token"))
            eos = _token_content(tc.get("eos_token"))
            if len(single) > 1:
                first = (single[0].get("SpecialToken") or {}).get("id")
                last = (single[-1].get("SpecialToken") or {}).get("id")
                flags["bos"] = first is not None and first == bos
                flags["eos"] = last is not None and last == eos
    for kind in ("bos", "eos"):
        value = tc.get(f"add_{kind}_token")
        if isinstance(value, bool) and kind not in flags:
            flags[kind] = value
    return ids, flags


# ---------------------------------------------------------------------------- chat template


def _chat_template_items(model_dir: Path, tc: dict, tc_path: Path) -> list[MetadataItem]:
    template = tc.get("chat_template")
    if template is None:
        jinja = model_dir / "chat_template.jinja"
        json_path = model_dir / "chat_template.json"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        elif json_path.is_file():
            template = (_read_json(json_path) or {}).get("chat_template")
    if template is None:
        return []
    if isinstance(template, str):
        return [("tokenizer.chat_template", template, T.STRING, None)]
    if not isinstance(template, list):
        raise ConversionError(f"{tc_path}: chat_template must be a string or a list of templates")
    items: list[MetadataItem] = []
    names: list[str] = []
    for i, entry in enumerate(template):
        if not isinstance(entry, dict) or not isinstance(entry.get("template"), str):
            raise ConversionError(f"{tc_path}: chat_template[{i}] has no 'template' string")
        raw_name = str(entry.get("name", ""))
        name = "".join(c if c.isascii() and c.isalnum() else "_" for c in raw_name)
        if not name:
            raise ConversionError(f"{tc_path}: chat_template[{i}] has no name")
        if name == "default":
            items.append(("tokenizer.chat_template", entry["template"], T.STRING, None))
        else:
            names.append(name)
            items.append((f"tokenizer.chat_template.{name}", entry["template"], T.STRING, None))
    if names:
        items.append(("tokenizer.chat_templates", names, T.ARRAY, T.STRING))
    return items
