"""The tokenizer part of a file's metadata, read once into plain Python tables.

Keys read (under ``tokenizer.`` unless written in full; llama.cpp's names and defaults)::

    ggml.model               STRING   "llama" (SentencePiece) | "gpt2" (byte-level BPE)   required
    ggml.pre                 STRING   pre-tokenizer name for "gpt2" (llama-bpe, smollm, ...)
    ggml.tokens              [STRING] the vocabulary, index = token id                     required
    ggml.scores              [FLOAT32] SPM merge scores (higher merges first)
    ggml.token_type          [INT32]  TokenType per token (1 normal ... 6 byte)
    ggml.merges              [STRING] "left right" BPE merges, rank = index     required for gpt2
    ggml.<kind>_token_id     UINT32   special ids; <kind> is llama.cpp's spelling: bos, eos, eot,
                                      eom, unknown, seperator (sic), padding, cls, mask, fim_*
    ggml.add_bos_token / add_eos_token / add_space_prefix   BOOL
    chat_template            STRING
    general.name             STRING   only to apply llama.cpp's Phi-3 rule (_phi3_rstrip_ids)

Everything here is validated: a missing required key, an array of the wrong length or a special
token id outside the vocabulary raises a :class:`gguflite.errors.ModelError` that names the key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from gguflite.errors import ModelError

logger = logging.getLogger(__name__)

KEY_MODEL = "tokenizer.ggml.model"
KEY_PRE = "tokenizer.ggml.pre"
KEY_TOKENS = "tokenizer.ggml.tokens"
KEY_SCORES = "tokenizer.ggml.scores"
KEY_TOKEN_TYPE = "tokenizer.ggml.token_type"
KEY_MERGES = "tokenizer.ggml.merges"
KEY_ADD_BOS = "tokenizer.ggml.add_bos_token"
KEY_ADD_EOS = "tokenizer.ggml.add_eos_token"
KEY_ADD_SPACE_PREFIX = "tokenizer.ggml.add_space_prefix"
KEY_CHAT_TEMPLATE = "tokenizer.chat_template"
KEY_NAME = "general.name"  # llama.cpp sets token attributes by model name (Phi-3, see below)

# Special token kind (our short name) -> the word in llama.cpp's key (src/llama-arch.cpp).
SPECIAL_ID_NAMES = {
    "bos": "bos", "eos": "eos", "eot": "eot", "eom": "eom", "unk": "unknown",
    "sep": "seperator", "pad": "padding", "cls": "cls", "mask": "mask",
    "fim_pre": "fim_pre", "fim_suf": "fim_suf", "fim_mid": "fim_mid", "fim_pad": "fim_pad",
    "fim_rep": "fim_rep", "fim_sep": "fim_sep",
}  # fmt: skip
SPECIAL_ID_KEYS = tuple(SPECIAL_ID_NAMES)
# Kinds whose token ends generation (llama.cpp: eos, eot, eom and the FIM pad/repo/sep tokens).
EOG_KINDS = ("eos", "eot", "eom", "fim_pad", "fim_rep", "fim_sep")


def special_id_key(kind: str) -> str:
    """Metadata key of a special token id: ``"unk"`` -> ``"tokenizer.ggml.unknown_token_id"``."""
    return f"tokenizer.ggml.{SPECIAL_ID_NAMES[kind]}_token_id"


class TokenType(IntEnum):
    """llama.cpp's token types (``tokenizer.ggml.token_type``)."""

    UNDEFINED = 0
    NORMAL = 1  # ordinary vocabulary piece, produced by the tokenizer algorithm
    UNKNOWN = 2  # <unk>
    CONTROL = 3  # <s>, </s>, <|im_start|>: never produced from text unless parse_special
    USER_DEFINED = 4  # added tokens always matched in text as a whole
    UNUSED = 5  # padding slots
    BYTE = 6  # SPM byte fallback <0xNN>


# Token texts that end a turn: llama.cpp marks these as end-of-generation by text, and makes them
# control tokens whatever their type (llama_vocab::impl::load, as of llama-cpp-python 0.3.36),
# except as _eog_exceptions says.
EOG_TEXTS = frozenset(
    {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",  # o200k_harmony
        "<|call|>",  # o200k_harmony
        "<|flush|>",  # solar-open
        "<|calls|>",  # solar-open
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",  # also where it is a normal token (Qwen's vocabulary has one)
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",  # Kimi-K2
        "[EOS]",  # Kimi-K2
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",  # gemma4
        "<turn|>",  # gemma4
        "<|tool_response>",  # gemma4
        "<\uff5cend\u2581of\u2581sentence\uff5c>",  # deepseek-ocr
        "[e~[",  # minimax-m2
    }
)

# FIM token kind -> the texts llama.cpp recognises it by when the file has no id for it.
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>",
                "<PRE>", "\u2581<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>",
                "<SUF>", "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>",
                "<MID>", "\u2581<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}  # fmt: skip

# tokenizer.ggml.model -> (default bos, eos, unk) ids, as llama.cpp assumes when the key is absent.
_DEFAULT_SPECIAL = {"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11}}


@dataclass
class Vocab:
    """Plain tables of one tokenizer.

    Attributes
    ----------
    model:
        ``"llama"`` (SentencePiece) or ``"gpt2"`` (byte-level BPE).
    pre:
        The BPE pre-tokenizer name (``tokenizer.ggml.pre``), ``"default"`` when absent.
    tokens:
        Token texts, index = id.
    token_to_id:
        The inverse of ``tokens`` (texts are unique).
    types:
        ``(n_vocab,)`` int32 TokenType per token.
    scores:
        ``(n_vocab,)`` float32 SPM scores (zeros when absent).
    merges:
        BPE merges as (left, right) pairs, rank = index (empty for SPM).
    special:
        Special token ids by kind (``"bos"``, ``"eos"``, ...); a kind absent from the file and
        without a llama.cpp default is missing from the dict.
    rstrip_ids:
        Special tokens that swallow the whitespace after them when matched in text (see
        :func:`_phi3_rstrip_ids`).
    eog:
        Ids that end generation, as llama.cpp decides them (see :meth:`eog_ids`).
    """

    model: str
    pre: str
    tokens: list[str]
    token_to_id: dict[str, int]
    types: np.ndarray
    scores: np.ndarray
    merges: list[tuple[str, str]] = field(default_factory=list)
    special: dict[str, int] = field(default_factory=dict)
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool = False
    chat_template: str | None = None
    rstrip_ids: frozenset[int] = frozenset()
    eog: frozenset[int] = frozenset()

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def eog_ids(self) -> set[int]:
        """Ids that end a turn: eos, eot, eom, FIM pad/rep/sep, and tokens whose text llama.cpp
        treats as end of generation (``EOG_TEXTS``, less ``_eog_exceptions``)."""
        return set(self.eog)


def _get(metadata: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if key not in metadata:
        return default
    value = metadata[key]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(kind, tuple) and int in kind and isinstance(value, bool):
        raise ModelError(f"tokenizer metadata {key!r} must be an integer, got a bool")
    if not isinstance(value, kind):
        raise ModelError(
            f"tokenizer metadata {key!r} has type {type(value).__name__}, expected "
            f"{getattr(kind, '__name__', kind)}"
        )
    return value


def _array(metadata: Mapping[str, Any], key: str, n: int, dtype: str) -> np.ndarray | None:
    if key not in metadata:
        return None
    try:
        arr = np.asarray(metadata[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"tokenizer metadata {key!r} is not a numeric array: {exc}") from None
    if arr.shape != (n,):
        raise ModelError(
            f"tokenizer metadata {key!r} has shape {arr.shape}, expected ({n},) to match "
            f"{KEY_TOKENS!r}"
        )
    return arr


def _string_list(metadata: Mapping[str, Any], key: str) -> list[str]:
    value = metadata[key]
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ModelError(f"tokenizer metadata {key!r} must be an array of strings")
    out = value.tolist() if hasattr(value, "tolist") else list(value)  # reader: bulk decode
    try:
        "".join(out)  # a C-speed check that every element is a str
    except TypeError:
        for i, s in enumerate(out):
            if not isinstance(s, str):
                raise ModelError(
                    f"tokenizer metadata {key!r}[{i}] is {type(s).__name__}, not a string"
                ) from None
    return out


def load_vocab(metadata: Mapping[str, Any]) -> Vocab:
    """Read and validate the tokenizer tables of a file.

    Parameters
    ----------
    metadata:
        A mapping of metadata keys to values, such as ``gguflite.open(path).metadata``.
        String arrays may be any sequence of ``str`` (the reader's lazy sequences are fine).

    Raises
    ------
    ModelError
        The tokenizer kind is not supported, a required key is missing, or a value is invalid.
    """
    if KEY_MODEL not in metadata:
        raise ModelError(f"no tokenizer in this file: metadata key {KEY_MODEL!r} is missing")
    model = _get(metadata, KEY_MODEL, str, None)
    if model not in _DEFAULT_SPECIAL:
        raise ModelError(
            f"unsupported tokenizer {KEY_MODEL}={model!r}; supported: 'llama' (SentencePiece) "
            "and 'gpt2' (byte-level BPE)"
        )
    if KEY_TOKENS not in metadata:
        raise ModelError(f"metadata key {KEY_TOKENS!r} is missing")
    tokens = _string_list(metadata, KEY_TOKENS)
    n = len(tokens)
    if n == 0:
        raise ModelError(f"metadata key {KEY_TOKENS!r} is an empty array")
    token_to_id = {t: i for i, t in enumerate(tokens)}
    if "" in token_to_id:  # llama.cpp renames empty tokens so that texts stay unique
        tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        logger.warning("%s has empty tokens; renamed to [EMPTY_<id>] as llama.cpp does", KEY_TOKENS)
        token_to_id = {t: i for i, t in enumerate(tokens)}
    if len(token_to_id) != n:
        seen: dict[str, int] = {}
        for i, t in enumerate(tokens):
            if t in seen:
                raise ModelError(f"{KEY_TOKENS}[{i}] = {t!r} repeats {KEY_TOKENS}[{seen[t]}]")
            seen[t] = i

    types = _array(metadata, KEY_TOKEN_TYPE, n, "<i4")
    types = np.full(n, TokenType.NORMAL, np.int32) if types is None else types.astype(np.int32)
    scores = _array(metadata, KEY_SCORES, n, "<f4")
    scores = np.zeros(n, np.float32) if scores is None else scores.astype(np.float32)

    pre = _get(metadata, KEY_PRE, str, "default") or "default"
    merges: list[tuple[str, str]] = []
    if model == "gpt2":
        if KEY_MERGES not in metadata:
            raise ModelError(f"a 'gpt2' tokenizer needs {KEY_MERGES!r}, which is missing")
        raw = _string_list(metadata, KEY_MERGES)
        # llama.cpp splits at the first space after position 0 (a part may start with " ");
        # the fast path takes merges with exactly one space, the loop handles the rest.
        merges = [tuple(m.split(" ")) for m in raw]  # type: ignore[misc]
        for i, pair in enumerate(merges):
            if len(pair) != 2 or not pair[0]:
                m = raw[i]
                pos = m.find(" ", 1)
                if pos < 0:
                    raise ModelError(f"{KEY_MERGES}[{i}] = {m!r} is not 'left right'")
                merges[i] = (m[:pos], m[pos + 1 :])

    special = {k: v for k, v in _DEFAULT_SPECIAL[model].items() if v < n}
    for kind in SPECIAL_ID_KEYS:
        key = special_id_key(kind)
        tid = _get(metadata, key, (int,), None)
        if tid is None:
            continue
        if not 0 <= tid < n:
            # llama.cpp warns and keeps its default; the validator reports it (rule V22)
            logger.warning("%s = %d is outside the vocabulary (0..%d); ignored", key, tid, n - 1)
            continue
        special[kind] = tid
    # llama.cpp finds FIM tokens the file does not name by their text, and makes them control
    # tokens; FIM pad/repo/sep then end generation. (Where a vocabulary has two texts for one kind,
    # llama.cpp takes whichever its hash map yields first; here the first listed.)
    for kind, texts in _FIM_TEXTS.items():
        if kind not in special:
            found = [token_to_id[t] for t in texts if t in token_to_id]
            if found:
                special[kind] = found[0]
                types[found[0]] = TokenType.CONTROL

    if model == "llama":
        add_bos, add_eos, add_space_prefix = True, False, True
    else:
        add_bos = pre in _BOS_BY_DEFAULT
        add_eos, add_space_prefix = False, False
    add_bos = _get(metadata, KEY_ADD_BOS, bool, add_bos)
    add_eos = _get(metadata, KEY_ADD_EOS, bool, add_eos)
    add_space_prefix = _get(metadata, KEY_ADD_SPACE_PREFIX, bool, add_space_prefix)
    for flag, kind in ((add_bos, "bos"), (add_eos, "eos")):
        if flag and kind not in special:
            raise ModelError(f"tokenizer.ggml.add_{kind}_token is true but there is no {kind} id")

    # llama.cpp: a token whose text marks end-of-generation is a control token whatever its type.
    eog = {special[k] for k in EOG_KINDS if k in special}
    for t in EOG_TEXTS:
        if t in token_to_id:
            types[token_to_id[t]] = TokenType.CONTROL
            eog.add(token_to_id[t])
    _eog_exceptions(eog, types, tokens)

    chat_template = _get(metadata, KEY_CHAT_TEMPLATE, str, None)
    name = metadata.get(KEY_NAME)
    rstrip_ids = (
        _phi3_rstrip_ids(types, token_to_id)
        if isinstance(name, str) and ("phi-3" in name.lower() or "phi3" in name.lower())
        else frozenset()
    )
    return Vocab(
        model=model,
        pre=pre,
        tokens=tokens,
        token_to_id=token_to_id,
        types=types,
        scores=scores,
        merges=merges,
        special=special,
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=add_space_prefix,
        chat_template=chat_template,
        rstrip_ids=rstrip_ids,
        eog=frozenset(eog),
    )


def _eog_exceptions(eog: set[int], types: np.ndarray, tokens: list[str]) -> None:
    """llama.cpp's two corrections of the end-of-generation set (edits ``eog``, ``types``).

    - A vocabulary that ends turns with ``<|return|>`` and ``<|call|>`` (gpt-oss's harmony), or
      ``<|calls|>`` and ``<|flush|>`` (solar-open), uses ``<|end|>`` inside a turn: it is not
      end-of-generation and becomes a user-defined token.
    - Where ``<|tool_response>`` or ``<|plamo:eos|>`` ends generation, ``</s>`` is a normal
      token (gemma4, plamo): not end-of-generation and of type NORMAL.
    """
    by_text = {tokens[i]: i for i in eog}
    has = by_text.__contains__
    if has("<|end|>") and (
        (has("<|return|>") and (has("<|call|>") or has("<|calls|>")))
        or ((has("<|call|>") or has("<|calls|>")) and has("<|flush|>"))
    ):
        eog.discard(by_text["<|end|>"])
        types[by_text["<|end|>"]] = TokenType.USER_DEFINED
    if has("</s>") and (has("<|tool_response>") or has("<|plamo:eos|>")):
        eog.discard(by_text["</s>"])
        types[by_text["</s>"]] = TokenType.NORMAL


def _phi3_rstrip_ids(types: np.ndarray, token_to_id: dict[str, int]) -> frozenset[int]:
    """llama.cpp's Phi-3 rule (``llama_vocab::impl::load``, "set attributes by model name").

    When ``general.name`` contains "phi-3" or "phi3" (any case), every special token (control,
    user-defined, unknown) and ``</s>`` gets the RSTRIP attribute, except ``<unk>``, ``<s>`` and
    ``<|endoftext|>``: whitespace right after such a token in the text is dropped before the rest
    is tokenized (Phi-3's tokenizer_config marks these added tokens ``rstrip: true``), so
    ``"<|user|>\nHi"`` encodes as ``<|user|>`` + ``"Hi"``.
    """
    special = np.isin(
        types, np.array((TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN), np.int32)
    )
    ids = set(np.flatnonzero(special).tolist())
    ids.update(token_to_id[t] for t in ("</s>",) if t in token_to_id)
    ids.difference_update(
        token_to_id[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in token_to_id
    )
    return frozenset(ids)


# Pre-tokenizers for which llama.cpp adds BOS unless the file says otherwise.
_BOS_BY_DEFAULT = frozenset(
    {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "tekken", "chameleon"}
)
