"""SentencePiece ("llama") encoding: llama.cpp's score-driven merge with byte fallback.

One text fragment (special tokens are split off before, by the caller) is encoded as::

    " Hello"  ──spaces to U+2581──►  "▁Hello"  ──one symbol per character──►  ▁ H e l l o
    repeat: of all adjacent pairs whose concatenation is a vocabulary piece, merge the pair with
            the highest score (ties: the leftmost pair)                      ▁H  ▁He ... ▁Hello
    each final symbol: its piece id, or, if it is not a piece, one <0xNN> token per UTF-8 byte

This is ``llm_tokenizer_spm`` of llama.cpp and gives the same ids as sentencepiece's BPE models
(Llama 1/2, Mistral v1, TinyLlama ...). sentencepiece *unigram* models (T5-style) use a Viterbi
search instead and are not supported by this merge.

Only NORMAL and USER_DEFINED tokens take part in merges (sentencepiece's rule; llama.cpp would
also merge into a control token if the vocabulary had the two halves of one).

Speed-up, exact: when no piece has "▁" after a non-"▁" character (true of sentencepiece models
trained with split_by_whitespace, i.e. Llama's), no merge can cross the boundary before a run of
"▁", so the text is cut there into words ("▁▁Hello", "▁world"), each merged on its own and
cached. Words merge independently, so the result is the same as merging the whole text.
"""

from __future__ import annotations

import heapq
import re

import numpy as np

from .vocab import TokenType, Vocab

SPACE = "\u2581"  # ▁ LOWER ONE EIGHTH BLOCK, SentencePiece's visible space
_WORDS = re.compile(f"{SPACE}*[^{SPACE}]+|{SPACE}+")  # a run of ▁ and the characters after it
_CACHE_LIMIT = 1 << 16  # cached words per encoder


class SpmEncoder:
    """Encode text fragments with a SentencePiece vocabulary.

    Parameters
    ----------
    vocab:
        A ``"llama"`` vocabulary.
    """

    def __init__(self, vocab: Vocab):
        types = vocab.types
        mergeable = (types == TokenType.NORMAL) | (types == TokenType.USER_DEFINED)
        ids = np.flatnonzero(mergeable).tolist()
        self._piece_to_id: dict[str, int] = {vocab.tokens[i]: i for i in ids}
        self._scores: list[float] = vocab.scores.tolist()
        # byte -> fallback id: <0xNN> byte token, else a token spelling that single byte, else unk.
        unk = vocab.special.get("unk", -1)
        text_to_id = vocab.token_to_id
        self._byte_ids: list[int] = []
        for b in range(256):
            tid = text_to_id.get(f"<0x{b:02X}>", -1)
            if tid < 0 or types[tid] != TokenType.BYTE:
                tid = text_to_id.get(chr(b), unk) if b < 0x80 else unk
            self._byte_ids.append(tid)
        # Can words be merged one by one? Only if "▁" appears in pieces as a leading run.
        self._by_word = all(SPACE not in p.lstrip(SPACE) for p in self._piece_to_id)
        self._cache: dict[str, list[int]] = {}

    def clear_cache(self) -> None:
        """Forget the cached ids of words seen so far."""
        self._cache.clear()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with spaces already meaning spaces (this escapes them).

        Parameters
        ----------
        text:
            One fragment without special tokens; a leading space (``add_space_prefix``) must
            already be prepended by the caller.
        """
        if not text:
            return []
        text = text.replace(" ", SPACE)
        if not self._by_word:
            return self._merge(text)
        out: list[int] = []
        cache = self._cache
        for word in _WORDS.findall(text):
            ids = cache.get(word)
            if ids is None:
                ids = self._merge(word)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    def _merge(self, text: str) -> list[int]:
        """The score-driven merge of one escaped, non-empty text (see the module docstring)."""
        n = len(text)
        p2id = self._piece_to_id
        scores = self._scores
        # Symbol i covers text[start[i] : start[i] + size[i]]; merged-away symbols have size 0.
        start = list(range(n))
        size = [1] * n
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int, int]] = []  # (-score, left, right, merged size)

        def try_add(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            merged = size[left] + size[right]
            tid = p2id.get(text[start[left] : start[left] + merged])
            if tid is not None:
                heapq.heappush(heap, (-scores[tid], left, right, merged))

        for i in range(1, n):
            try_add(i - 1, i)
        while heap:
            _, left, right, merged = heapq.heappop(heap)
            if size[left] == 0 or size[right] == 0 or size[left] + size[right] != merged:
                continue  # stale: one side was merged elsewhere since this pair was queued
            size[left] = merged
            size[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            try_add(prev[left], left)
            try_add(left, nxt[left])

        out: list[int] = []
        i = 0
        while i != -1:
            piece = text[start[i] : start[i] + size[i]]
            tid = p2id.get(piece)
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte_ids[b] for b in piece.encode("utf-8"))
            i = nxt[i]
        return [t for t in out if t >= 0]
