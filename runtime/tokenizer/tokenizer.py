"""The runtime tokenizer: text <-> token ids for a model file, as llama.cpp does it.

Encoding (``Tokenizer.encode``)::

    text ──split off special tokens──► [text][<|im_start|>][text] ...   (longest token text first)
    each text fragment ──SPM merge (spm.py) or byte-level BPE (bpe.py)──► ids
    [bos] + ids + [eos]            when add_special and the file's add_bos/add_eos flags say so

Special tokens are the CONTROL, USER_DEFINED and UNKNOWN tokens. With ``parse_special=False`` only
USER_DEFINED tokens are still matched as a whole (llama.cpp and Hugging Face agree on this).
For SentencePiece with ``add_space_prefix``, every text fragment that starts the input or follows a
special token gets a leading space (llama.cpp, and Hugging Face's ``legacy=True`` Llama tokenizer).
In files named like Phi-3, special tokens drop the whitespace after them (``Vocab.rstrip_ids``).

Decoding turns each id into its bytes (``token_to_piece``) and joins them:

    NORMAL        SPM: "▁" -> " "            BPE: byte-level chars -> bytes ("Ġ" -> b" ")
    BYTE          <0xNN> -> the byte NN
    CONTROL/UNK   the token text, or nothing when skip_special
    USER_DEFINED  the token text
    UNUSED        nothing

``decode`` also drops the one space that ``add_space_prefix`` added in front of the first text
token, so ``decode(encode(s), skip_special=True) == s`` for any string ``s`` that the vocabulary
can represent. No other clean-up ("clean_up_tokenization_spaces") is applied.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from gguflite.errors import ModelError

from .bpe import build_bpe_engine, byte_level_to_bytes
from .spm import SPACE, SpmEncoder
from .vocab import TokenType, Vocab, load_vocab

_SPECIAL_TYPES = (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)
_HIDDEN_WHEN_SKIPPING = (TokenType.CONTROL, TokenType.UNKNOWN)
_C_SPACE = " \t\n\v\f\r"


class Tokenizer:
    """Text <-> token ids for one model file.

    Build it with :meth:`from_metadata`. Attributes ``bos_id``, ``eos_id`` (``None`` when the
    file has none), ``eot_ids`` (ids that end a turn), ``n_vocab``, ``vocab`` (the tables) and
    ``chat_template`` (``None`` when absent) are read-only by convention.
    """

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.n_vocab = vocab.n_vocab
        self.bos_id: int | None = vocab.special.get("bos")
        self.eos_id: int | None = vocab.special.get("eos")
        self.eot_ids: set[int] = vocab.eog_ids()
        self.chat_template = vocab.chat_template
        types = vocab.types
        self._types: list[int] = types.tolist()

        # Special tokens for splitting, longest text first (llama.cpp: cache_special_tokens).
        special = np.flatnonzero(np.isin(types, np.array(_SPECIAL_TYPES, np.int32))).tolist()
        special.sort(key=lambda i: -len(vocab.tokens[i]))
        # (text, id, matched even without parse_special, swallows the whitespace after it)
        self._special: list[tuple[str, int, bool, bool]] = [
            (vocab.tokens[i], i, self._types[i] == TokenType.USER_DEFINED, i in vocab.rstrip_ids)
            for i in special
            if vocab.tokens[i]
        ]

        if vocab.model == "llama":
            self._spm: SpmEncoder | None = SpmEncoder(vocab)
            self._bpe = None
        else:
            self._spm = None
            self._bpe, self._bpe_unknown = build_bpe_engine(
                vocab.token_to_id, vocab.merges, vocab.pre
            )
        self._pieces: list[bytes | None] = [None] * self.n_vocab

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """Build the tokenizer described by a file's metadata.

        Parameters
        ----------
        metadata:
            Key -> value mapping, e.g. ``gguflite.open(path).metadata``.

        Raises
        ------
        ModelError
            Unsupported tokenizer kind or pre-tokenizer, missing or malformed keys.
        """
        return cls(load_vocab(metadata))

    # ------------------------------------------------------------------ encoding

    def _split_special(self, text: str, parse_special: bool) -> list[str | int]:
        """Split ``text`` into text fragments and special token ids (llama.cpp's st_partition)."""
        parts: list[str | int] = [text]
        for tok_text, tid, user_defined, rstrip in self._special:
            if not (parse_special or user_defined) or tok_text not in text:
                continue
            out: list[str | int] = []
            for part in parts:
                if isinstance(part, int) or tok_text not in part:
                    out.append(part)
                    continue
                pieces = part.split(tok_text)
                for k, piece in enumerate(pieces):
                    if k:
                        out.append(tid)
                        if rstrip:  # llama.cpp strips C isspace() bytes only
                            piece = piece.lstrip(_C_SPACE)
                    if piece:
                        out.append(piece)
            parts = out
        return parts

    def encode(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Token ids of ``text``.

        Parameters
        ----------
        text:
            Any string (the empty string gives just the BOS/EOS the file asks for).
        add_special:
            Add BOS/EOS as the file's ``add_bos_token`` / ``add_eos_token`` say.
        parse_special:
            Match control tokens (``<|im_start|>``) written in the text; when False they are
            tokenized as plain text. User-defined tokens are matched either way.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}")
        v = self.vocab
        out: list[int] = []
        if add_special and v.add_bos:
            out.append(v.special["bos"])
        parts = self._split_special(text, parse_special) if text else []
        if self._spm is not None:
            prev_special = True
            for part in parts:
                if isinstance(part, int):
                    out.append(part)
                    prev_special = True
                    continue
                if v.add_space_prefix and prev_special:
                    part = " " + part
                out.extend(self._spm.encode(part))
                prev_special = False
        else:
            texts = [p for p in parts if isinstance(p, str)]
            encoded = iter(self._bpe.encode_batch(texts, add_special_tokens=False))
            for part in parts:
                if isinstance(part, int):
                    out.append(part)
                else:
                    unknown = self._bpe_unknown
                    out.extend(i for i in next(encoded).ids if i != unknown)
        if add_special and v.add_eos:
            out.append(v.special["eos"])
        return out

    def clear_cache(self) -> None:
        """Forget cached word encodings (SentencePiece caches the ids of each word it saw)."""
        if self._spm is not None:
            self._spm.clear_cache()

    # ------------------------------------------------------------------ decoding

    def _check_id(self, tid: int) -> int:
        if not 0 <= tid < self.n_vocab:
            raise ModelError(f"token id {tid} is outside the vocabulary (0..{self.n_vocab - 1})")
        return tid

    def token_to_piece(self, tid: int) -> bytes:
        """The bytes token ``tid`` stands for (control tokens: their text; unused: b"").

        Raises
        ------
        ModelError
            ``tid`` is not a token id of this vocabulary.
        """
        tid = self._check_id(int(tid))
        piece = self._pieces[tid]
        if piece is None:
            piece = self._make_piece(tid)
            self._pieces[tid] = piece
        return piece

    def _make_piece(self, tid: int) -> bytes:
        text = self.vocab.tokens[tid]
        kind = self._types[tid]
        if kind in _SPECIAL_TYPES:
            return text.encode("utf-8")
        if kind == TokenType.BYTE:
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                try:
                    return bytes([int(text[3:5], 16)])
                except ValueError:
                    pass
            # not '<0xNN>' (a broken file, or an empty byte token renamed '[EMPTY_n]' at load
            # as llama.cpp does): its text, so that decoding what encode produced never fails
            return text.encode("utf-8")
        if kind == TokenType.NORMAL:
            if self._spm is not None:
                return text.replace(SPACE, " ").encode("utf-8")
            return byte_level_to_bytes(text)
        return b""  # UNUSED / UNDEFINED: rendered as nothing, like llama.cpp

    def _is_hidden(self, tid: int) -> bool:
        return self._types[tid] in _HIDDEN_WHEN_SKIPPING

    def decode_bytes(self, ids: Iterable[int], *, skip_special: bool = False) -> bytes:
        """The bytes of a token sequence (see :meth:`decode`)."""
        chunks: list[bytes] = []
        strip = self.vocab.add_space_prefix
        for tid in ids:
            tid = self._check_id(int(tid))
            kind = self._types[tid]
            if kind in _HIDDEN_WHEN_SKIPPING:
                if not skip_special:
                    chunks.append(self.token_to_piece(tid))
                continue
            piece = self.token_to_piece(tid)
            if strip and piece:
                # the space that add_space_prefix put in front of the first text token
                if piece.startswith(b" ") and kind == TokenType.NORMAL:
                    piece = piece[1:]
                strip = False
            chunks.append(piece)
        return b"".join(chunks)

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """The text of a token sequence.

        Parameters
        ----------
        ids:
            Token ids.
        skip_special:
            Leave out control and unknown tokens (``<s>``, ``<|im_end|>``).

        Invalid UTF-8 (a sequence cut inside a character) becomes U+FFFD.
        """
        return self.decode_bytes(ids, skip_special=skip_special).decode("utf-8", errors="replace")

    def stream_decoder(self, *, skip_special: bool = False) -> StreamDecoder:
        """An incremental decoder for generated tokens; see :class:`StreamDecoder`."""
        return StreamDecoder(self, skip_special=skip_special)


class StreamDecoder:
    """Turns tokens into text one at a time without ever emitting a broken UTF-8 character.

    Bytes of a character split across tokens (byte-fallback ``<0xE4><0xBD><0xA0>``, or a
    byte-level BPE token holding half an emoji) are held back until the character is complete.
    Pieces are emitted exactly (no leading-space strip: a generated continuation keeps its
    spaces). Call :meth:`flush` at the end to get held-back bytes (as U+FFFD if incomplete).

    Examples
    --------
    >>> dec = tok.stream_decoder()                                          # doctest: +SKIP
    >>> "".join(dec.push(t) for t in ids) + dec.flush()                     # doctest: +SKIP
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, tid: int) -> str:
        """Add one token; returns the text that is now complete (possibly "")."""
        if self._skip and self._tok._is_hidden(self._tok._check_id(int(tid))):
            return ""
        return self._utf8.decode(self._tok.token_to_piece(tid))

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)
