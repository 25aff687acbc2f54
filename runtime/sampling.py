"""Choosing the next token from logits, and stopping on stop strings.

:class:`Sampler` follows llama.cpp's default sampler chain and definitions
(src/llama-sampler.cpp, common/sampling.cpp), in this order::

    logits (n_vocab,)
      1 penalties    for each distinct token t among the last ``repeat_last_n`` of history,
                     seen c times:   l_t = l_t / r  if l_t > 0  else  l_t * r   (r = repeat_penalty)
                                     l_t -= c * frequency_penalty + presence_penalty
      2 top-k        keep the k largest logits (k <= 0: keep all)
      3 top-p        p = softmax(l); keep the smallest prefix of the tokens sorted by p (descending)
                     whose total mass is >= top_p                        (top_p >= 1: keep all)
      4 min-p        keep tokens with p_i >= min_p * max_j p_j, i.e. l_i >= l_max + ln(min_p)
      5 temperature  l = l / temperature; temperature <= 0 means greedy: the largest logit wins
      6 dist         draw from softmax(l) with the sampler's own random generator

Top-p and min-p look at the distribution *before* temperature, as in llama.cpp. Ties between
equal logits are broken by the lower token id, so results do not depend on sort internals. The
random generator is NumPy's PCG64 seeded with ``seed``: the same seed, logits and history give
the same tokens (not the same tokens as llama.cpp, whose generator is a different one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


class Sampler:
    """The llama.cpp sampler chain (see the module docstring for the exact math).

    Parameters
    ----------
    temperature:
        Divides the logits before the draw; ``<= 0`` selects greedy decoding.
    top_k:
        Keep the ``top_k`` most likely tokens; ``<= 0`` disables.
    top_p:
        Nucleus mass; ``>= 1`` disables.
    min_p:
        Minimum probability relative to the most likely token; ``<= 0`` disables.
    repeat_penalty:
        ``1`` disables; ``> 1`` discourages tokens in the recent history.
    repeat_last_n:
        How much history the penalties look at; ``0`` disables, ``-1`` means all of it.
    frequency_penalty, presence_penalty:
        Subtracted per occurrence / once for any occurrence (OpenAI-style); ``0`` disables.
    seed:
        Seed of the random generator; ``None`` draws one from the OS.
    """

    def __init__(
        self,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        seed: int | None = None,
    ):
        for name, value in (
            ("temperature", temperature), ("top_p", top_p), ("min_p", min_p),
            ("repeat_penalty", repeat_penalty), ("frequency_penalty", frequency_penalty),
            ("presence_penalty", presence_penalty),
        ):  # fmt: skip
            if not math.isfinite(value):
                raise ValueError(f"sampler {name} must be finite, got {value}")
        if repeat_penalty <= 0:
            raise ValueError(f"repeat_penalty must be > 0, got {repeat_penalty}")
        if repeat_last_n < -1:
            raise ValueError(f"repeat_last_n must be >= -1, got {repeat_last_n}")
        self.temperature = float(temperature)
        self.top_k = int(top_k)
        self.top_p = float(top_p)
        self.min_p = float(min_p)
        self.repeat_penalty = float(repeat_penalty)
        self.repeat_last_n = int(repeat_last_n)
        self.frequency_penalty = float(frequency_penalty)
        self.presence_penalty = float(presence_penalty)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def apply_penalties(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Step 1 on a copy of ``logits`` (n_vocab,) float32; returns the penalized copy."""
        out = np.array(logits, dtype=np.float32, copy=True)  # (n_vocab,)
        n = self.repeat_last_n
        if n == 0 or len(history) == 0:
            return out
        if (
            self.repeat_penalty == 1.0
            and self.frequency_penalty == 0.0
            and self.presence_penalty == 0.0
        ):
            return out
        recent = np.asarray(history if n < 0 else history[-n:], dtype=np.int64)  # (<= n,)
        if recent.size and (recent.min() < 0 or recent.max() >= out.size):
            raise ValueError(f"history holds a token id outside 0..{out.size - 1}")
        ids, counts = np.unique(recent, return_counts=True)  # distinct tokens, occurrences
        sel = out[ids]
        r = np.float32(self.repeat_penalty)
        sel = np.where(sel <= 0, sel * r, sel / r)
        sel -= counts.astype(np.float32) * np.float32(self.frequency_penalty) + np.float32(
            self.presence_penalty
        )
        out[ids] = sel
        return out

    def candidates(
        self, logits: np.ndarray, history: Sequence[int] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1-5: the tokens that may be drawn and their probabilities.

        Parameters
        ----------
        logits:
            ``(n_vocab,)`` scores of the next token.
        history:
            Token ids so far (prompt and generated), for the penalties.

        Returns
        -------
        ids : (m,) int64
            Surviving token ids, most likely first.
        probs : (m,) float64
            Their probabilities (sum 1). Greedy (temperature <= 0) returns one token with 1.0.
        """
        logits = np.asarray(logits)
        if logits.ndim != 1 or logits.size == 0:
            raise ValueError(f"logits must be a non-empty 1-D array, got shape {logits.shape}")
        check_logits(logits)
        pen = self.apply_penalties(logits, history).astype(np.float64)  # (n_vocab,)
        order = np.argsort(-pen, kind="stable")  # (n_vocab,) descending, ties by lower id
        if self.temperature <= 0:
            return order[:1].astype(np.int64), np.ones(1)
        if 0 < self.top_k < order.size:
            order = order[: self.top_k]  # (k,)
        cand = pen[order]  # (m,) sorted descending
        if self.top_p < 1.0:
            p = _softmax(cand)
            cum = np.cumsum(p)
            keep = int(np.searchsorted(cum, self.top_p, side="left")) + 1  # first cum >= top_p
            keep = min(max(keep, 1), cand.size)
            order, cand = order[:keep], cand[:keep]
        if self.min_p > 0.0:
            keep = max(int(np.count_nonzero(cand >= cand[0] + math.log(self.min_p))), 1)
            order, cand = order[:keep], cand[:keep]
        return order.astype(np.int64), _softmax(cand / self.temperature)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Step 6: draw the next token id.

        Parameters
        ----------
        logits:
            ``(n_vocab,)`` float32 scores.
        history:
            Token ids so far (prompt and generated), for the penalties.
        """
        ids, probs = self.candidates(logits, history)
        if ids.size == 1:
            return int(ids[0])
        u = self._rng.random()
        i = int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))
        return int(ids[min(i, ids.size - 1)])


def check_logits(logits: np.ndarray) -> None:
    """The sampler never draws from non-finite logits: NaN or +Inf anywhere, or no finite
    value at all, is a ValueError (-Inf alone is allowed: a token that must not be drawn).

    Parameters
    ----------
    logits : (n_vocab,) float
    """
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise ValueError("logits contain NaN or +Inf; the model's output is not a distribution "
                         "(non-finite weights or an overflow)")
    if not np.isfinite(logits).any():
        raise ValueError("every logit is -Inf; no token can be drawn")


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax of a 1-D float array; -inf entries get probability 0."""
    e = np.exp(x - x.max())
    return e / e.sum()


class StopStrings:
    """Cut generated text at the first stop string, never emitting any part of one.

    Text arrives in pieces (one per token). Whatever might be the start of a stop string is
    held back until the next piece shows whether it is; at a full match the text before it is
    emitted and ``stopped`` is true from then on.

    Examples
    --------
    >>> stops = StopStrings(["\\nUser:"])
    >>> stops.push("Hi!\\nUs")
    ('Hi!', False)
    >>> stops.push("er: more")
    ('', True)
    """

    def __init__(self, stops: Iterable[str]):
        self.stops = [s for s in stops]
        if any(not isinstance(s, str) or not s for s in self.stops):
            raise ValueError("stop strings must be non-empty strings")
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        """Add generated text; returns (text safe to emit now, whether a stop string matched)."""
        if self.stopped:
            return "", True
        buf = self._held + text
        first = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            self._held = ""
            self.stopped = True
            return buf[:first], True
        hold = 0
        for s in self.stops:
            # longest suffix of buf that is a proper prefix of s
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """At the end of generation: the held-back text (it did not become a stop string)."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held
