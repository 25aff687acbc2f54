"""What the tokenizer/chat-template harness does with one input; shared with the tests.

The input is decoded (atheris' FuzzedDataProvider) into the tokenizer part of a model file:
kind (SentencePiece "llama" or byte-level BPE "gpt2"), vocabulary, token types, scores,
merges, special token ids, pre-tokenizer name, flags, and a chat template. That metadata is
written with ``GGUFWriter`` and read back the way ``gguflite run`` reads it, then the rest of
the input is encoded, decoded and stream-decoded, and the template rendered.

The property: file-supplied data can only make the runtime raise a ``GGUFLiteError`` (mostly
``ModelError`` naming the key); token ids stay inside the vocabulary; a rendered prompt
tokenizes. Anything else (IndexError, KeyError, RecursionError, a hang) is a bug.
"""

from __future__ import annotations

import math
from pathlib import Path

import atheris

import gguflite
from gguflite import GGUFValueType as T
from gguflite.errors import GGUFLiteError
from gguflite.runtime.chat import chat_prompt
from gguflite.runtime.tokenizer import PRE_TOKENIZERS, Tokenizer

_PRES = sorted(PRE_TOKENIZERS)
_F32_MAX = 3.4e38
_KINDS = ("bos", "eos", "unknown", "eot", "padding")
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "héllo 🦙"}]


def _f32(x: float) -> float:
    """``x`` clamped into float32's range (NaN and Inf stay)."""
    return x if not math.isfinite(x) else max(-_F32_MAX, min(_F32_MAX, x))


def _text(fdp: atheris.FuzzedDataProvider, most: int) -> str:
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, most))


def write_tokenizer_file(data: bytes, path: Path) -> tuple[str, bool, bool] | None:
    """Write the tokenizer metadata ``data`` describes to ``path``; returns (text to encode,
    add_special, parse_special), or None when the writer refuses the values."""
    fdp = atheris.FuzzedDataProvider(data)
    model = "gpt2" if fdp.ConsumeBool() else "llama"
    tokens = [_text(fdp, 6) for _ in range(fdp.ConsumeIntInRange(1, 48))]
    if model == "llama" and fdp.ConsumeBool():  # byte fallback tokens
        tokens += [f"<0x{b:02X}>" for b in range(256)]
    n = len(tokens)
    try:
        w = gguflite.GGUFWriter(path)
        w.add("general.architecture", "llama", T.STRING)
        w.add("tokenizer.ggml.model", model, T.STRING)
        w.add("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING)
        if fdp.ConsumeBool():
            w.add("tokenizer.ggml.token_type", [fdp.ConsumeIntInRange(0, 7) for _ in range(n)],
                  T.ARRAY, T.INT32)
        if fdp.ConsumeBool():
            w.add("tokenizer.ggml.scores", [_f32(fdp.ConsumeFloat()) for _ in range(n)],
                  T.ARRAY, T.FLOAT32)  # NaN and Inf included
        if model == "gpt2":
            merges = [f"{tokens[fdp.ConsumeIntInRange(0, n - 1)]} "
                      f"{tokens[fdp.ConsumeIntInRange(0, n - 1)]}"
                      for _ in range(fdp.ConsumeIntInRange(0, 32))]
            w.add("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING)
            pre = _PRES[fdp.ConsumeIntInRange(0, len(_PRES) - 1)]
            w.add("tokenizer.ggml.pre", pre if fdp.ConsumeProbability() < 0.95
                  else _text(fdp, 8), T.STRING)
        for kind in _KINDS:
            if fdp.ConsumeBool():
                w.add(f"tokenizer.ggml.{kind}_token_id", fdp.ConsumeIntInRange(0, n + 2),
                      T.UINT32)
        for flag in ("add_bos_token", "add_eos_token", "add_space_prefix"):
            if fdp.ConsumeBool():
                w.add(f"tokenizer.ggml.{flag}", fdp.ConsumeBool(), T.BOOL)
        if fdp.ConsumeBool():
            w.add("tokenizer.chat_template", _text(fdp, 160), T.STRING)
        add_special, parse_special = fdp.ConsumeBool(), fdp.ConsumeBool()
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
        w.write()
    except GGUFLiteError:  # a value the writer refuses (none expected; kept for safety)
        return None
    return text, add_special, parse_special


def exercise_tokenizer(data: bytes, path: Path) -> None:
    """Build, load and use the tokenizer ``data`` describes (see the module docstring)."""
    made = write_tokenizer_file(data, path)
    if made is None:
        return
    text, add_special, parse_special = made
    with gguflite.open(path) as f:
        try:
            tok = Tokenizer.from_metadata(f.metadata)
        except GGUFLiteError:
            return  # refused, with a message naming the key
    try:
        ids = tok.encode(text, add_special=add_special, parse_special=parse_special)
    except GGUFLiteError:
        return  # e.g. a character no token covers and no byte fallback
    assert all(0 <= i < tok.n_vocab for i in ids), ids
    tok.decode(ids)
    tok.decode(ids, skip_special=True)
    dec = tok.stream_decoder()
    "".join(dec.push(i) for i in ids) + dec.flush()
    if tok.chat_template is None or not tok.chat_template.strip():
        return
    try:
        prompt = chat_prompt(tok, MESSAGES, max_chars=1 << 16)
    except GGUFLiteError:
        return  # a syntax error, a sandbox violation, a limit: one line
    ids = tok.encode(prompt, add_special=False, parse_special=True)
    assert all(0 <= i < tok.n_vocab for i in ids), ids
