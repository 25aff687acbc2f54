"""Tokenizers from a model file's metadata: SentencePiece ("llama") and byte-level BPE ("gpt2").

>>> tok = Tokenizer.from_metadata(gguflite.open(path).metadata)          # doctest: +SKIP
>>> ids = tok.encode("Hello")                                            # doctest: +SKIP
>>> tok.decode(ids, skip_special=True)                                   # doctest: +SKIP
'Hello'
"""

from __future__ import annotations

from .bpe import PRE_TOKENIZERS, PreTokenizer, get_pre_tokenizer
from .tokenizer import StreamDecoder, Tokenizer
from .vocab import EOG_TEXTS, TokenType, Vocab, load_vocab

__all__ = [
    "EOG_TEXTS",
    "PRE_TOKENIZERS",
    "PreTokenizer",
    "StreamDecoder",
    "TokenType",
    "Tokenizer",
    "Vocab",
    "get_pre_tokenizer",
    "load_vocab",
]
