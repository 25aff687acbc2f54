"""Byte-level BPE ("gpt2") encoding: the pre-tokenizer table and the merge engine.

A ``gpt2`` tokenizer in a file is a vocabulary (byte-level strings: byte ``0x20`` is ``Ġ``), a
ranked merge list and a pre-tokenizer *name* (``tokenizer.ggml.pre``). Encoding one text
fragment (special tokens are split off before, by the caller) is::

    text ──split by regex 1──► pieces ──split by regex 2──► ... words      (PRE_TOKENIZERS[pre])
    word ──UTF-8 bytes──► byte-level chars ──apply merges, lowest rank first──► token ids

Each regex splits every current piece into matches and the gaps between them; both are kept
(llama.cpp's ``unicode_regex_split``, Hugging Face's ``Split(behavior="isolated")``). The regexes
are Hugging Face's originals from each model's tokenizer.json (llama.cpp rewrites some of them
for std::regex; the splits are the same), except GPT-4o's, whose rewrite splits differently and is
used as llama.cpp has it (see ``GPT4O_REGEX``).

The merge loop runs in the ``tokenizers`` library (Rust): the vocabulary and merges are handed
to ``tokenizers.models.BPE`` in memory, no file is written. Building it for a 49k vocabulary
takes about 0.1 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguflite.errors import ModelError

# GPT-2's regex (tokenizers' ByteLevel(use_regex=True)).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Llama 3 (tiktoken cl100k-like): case-insensitive contractions, 1-3 digit groups.
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen 2: as Llama 3 but single digits.
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-4o (o200k; Phi-4-mini, Llama 4) in llama.cpp's rewritten form, NOT tokenizer.json's original
#   [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|...)?|...
# llama.cpp's std::regex cannot tell Lu from Ll, so it reads "upper" as "a letter but not a-z" and
# "lower" as "a letter but not A-Z", and drops \p{M}. The splits differ from Hugging Face's on
# non-ASCII case changes ("straÜe": one word here, two in HF) and combining marks ("a\u0301":
# the mark is split off here); files are run as llama.cpp runs them, so this form is used.
_CONTRACTION = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?"
GPT4O_REGEX = (
    r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+"
    + _CONTRACTION
    + r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*"
    + _CONTRACTION
    + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's fallback for files without a known pre-tokenizer ("default").
DEFAULT_REGEXES = (
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
)


@dataclass(frozen=True)
class PreTokenizer:
    """How one family of models splits text before BPE.

    Attributes
    ----------
    regexes:
        Applied in order; each splits every piece into matches and gaps.
    ignore_merges:
        A word that is itself a vocabulary token is emitted whole, without merging
        (Llama 3's ``ignore_merges``).
    """

    regexes: tuple[str, ...]
    ignore_merges: bool = False


_GPT2 = PreTokenizer((GPT2_REGEX,))
_STARCODER = PreTokenizer((r"\p{N}", GPT2_REGEX))  # HF: Digits(individual_digits) + ByteLevel
_LLAMA3 = PreTokenizer((LLAMA3_REGEX,), ignore_merges=True)
_LLAMA3_MERGING = PreTokenizer((LLAMA3_REGEX,))
_QWEN2 = PreTokenizer((QWEN2_REGEX,))
_GPT4O = PreTokenizer((GPT4O_REGEX,))

# tokenizer.ggml.pre -> PreTokenizer, llama.cpp's names (src/llama-vocab.cpp) grouped by regex.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer(DEFAULT_REGEXES),
    **dict.fromkeys(
        (
            "gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "gigachat",
            "jina-v2-es", "jina-v2-de", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mellum",
            "modern-bert", "exaone4", "a.x-4.0", "trillion", "granite-docling",
        ),
        _GPT2,
    ),
    **dict.fromkeys(
        (
            "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
            "mellum2",
        ),
        _STARCODER,
    ),
    **dict.fromkeys(
        (
            "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0",
            "lfm2", "jina-v5-nano",
        ),
        _LLAMA3,
    ),
    **dict.fromkeys(("dbrx", "smaug-bpe", "chatglm-bpe"), _LLAMA3_MERGING),
    **dict.fromkeys(
        (
            "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan", "solar-open",
            "megrez", "grok-2",
        ),
        _QWEN2,
    ),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O),
}  # fmt: skip


def get_pre_tokenizer(name: str) -> PreTokenizer:
    """The pre-tokenizer for ``tokenizer.ggml.pre = name``.

    Raises
    ------
    ModelError
        ``name`` is not one this runtime implements.
    """
    try:
        return PRE_TOKENIZERS[name]
    except KeyError:
        raise ModelError(
            f"unsupported BPE pre-tokenizer tokenizer.ggml.pre={name!r}; supported: "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        ) from None


def build_bpe_engine(vocab: dict[str, int], merges: list[tuple[str, str]], pre: str):
    """A ``tokenizers.Tokenizer`` that encodes one text fragment (no special tokens) to ids.

    Returns ``(engine, unknown_id)``: ids equal to ``unknown_id`` in the engine's output stand
    for bytes the vocabulary cannot represent and must be dropped.

    Parameters
    ----------
    vocab:
        Byte-level token text -> id.
    merges:
        (left, right) pairs, rank = index.
    pre:
        ``tokenizer.ggml.pre``.

    Raises
    ------
    ModelError
        The pre-tokenizer is unknown or a merge names a token missing from the vocabulary.
    """
    try:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    except ImportError as exc:  # pragma: no cover - tokenizers is a declared dependency
        raise ModelError(
            "BPE tokenizers need the 'tokenizers' package: pip install 'gguflite[run]'"
        ) from exc

    spec = get_pre_tokenizer(pre)
    # A byte whose byte-level character is not in the vocabulary: llama.cpp keeps it as a symbol
    # during merging (so it blocks merges across it) and drops it at the end. The same happens
    # here by mapping such characters to a sentinel token, id len(vocab), that no merge uses;
    # the caller removes UNKNOWN_ID from the output.
    sentinel_vocab = dict(vocab)
    sentinel_vocab[_SENTINEL] = unknown_id = len(vocab)
    try:
        model = models.BPE(
            vocab=sentinel_vocab,
            merges=merges,
            ignore_merges=spec.ignore_merges,
            unk_token=_SENTINEL,
            fuse_unk=False,
        )
    except Exception as exc:  # tokenizers raises plain Exception subclasses from Rust
        raise ModelError(f"tokenizer.ggml.merges do not fit tokenizer.ggml.tokens: {exc}") from None
    except BaseException as exc:  # a Rust panic on malformed merges (pyo3's PanicException,
        if type(exc).__name__ != "PanicException":  # a BaseException); found by fuzzing
            raise
        raise ModelError(f"tokenizer.ggml.merges do not fit tokenizer.ggml.tokens: {exc}") from None
    engine = Tokenizer(model)
    engine.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in spec.regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    engine.decoder = decoders.ByteLevel()
    return engine, unknown_id


# Not a byte-level string (U+E000 is not produced by the byte-level mapping), so never a token.
_SENTINEL = "\ue000gguflite:unknown-byte\ue000"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte ``0x20`` -> ``Ġ`` U+0120)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR: dict[int, str] = _bytes_to_unicode()
CHAR_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_level_to_bytes(text: str) -> bytes:
    """Undo the byte-level mapping of a token text; characters outside it pass as UTF-8."""
    out = bytearray()
    for ch in text:
        b = CHAR_TO_BYTE.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)
