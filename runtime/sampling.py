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

Cost per token, n_vocab = V: the vocabulary is never sorted. Greedy is an argmax; the
penalties touch only the tokens in the window; top-k, top-p and min-p find their survivors with
a few O(V) passes (counting against a threshold, one ``exp`` for top-p's normaliser when top-k
is off) and sort only the n survivors (O(V + n log n); top-p without top-k sorts a prefix that
grows 4x at a time until it holds the nucleus). The results are exactly those of the sorted
definition above, with the arithmetic spelled out for the two places where order matters:

- the top-p normaliser sum(exp(l - l_max)) is summed over the top-k survivors in sorted order
  (as before), or, when top-k is off, over the whole vocabulary in token-id order (it used to
  be summed in sorted order: the two differ by rounding only, in the last bits of the mass);
- the draw walks the survivors most likely first; when nothing at all was cut (top-k and
  top-p off, min-p off or keeping every token) it walks the vocabulary in token-id order
  instead, so a given seed may draw another token than it did before in that one case (the
  distribution is the same).

tests/test_sampling.py holds the sort-based definition and checks both against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

FIRST_PREFIX = 64  # top-p without top-k: the sorted prefix tried first (then 4x, 16x, ...)


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
        self._buffers: dict[str, np.ndarray] = {}  # per-token scratch, reused (no page faults)

    # -- step 1 ------------------------------------------------------------------------------
    def apply_penalties(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Step 1 on a copy of ``logits`` (n_vocab,) float32; returns the penalized copy."""
        out = np.array(logits, dtype=np.float32, copy=True)  # (n_vocab,)
        self._penalize(out, history)
        return out

    def _penalize(self, out: np.ndarray, history: Sequence[int]) -> None:
        """Step 1 in place on ``out`` (n_vocab,) float32; O(window), not O(n_vocab)."""
        n = self.repeat_last_n
        if n == 0 or len(history) == 0 or not self._penalizes():
            return
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

    def _penalizes(self) -> bool:
        return (self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)

    def _buffer(self, name: str, n: int, dtype: type) -> np.ndarray:
        buf = self._buffers.get(name)
        if buf is None or buf.size != n:
            buf = self._buffers[name] = np.empty(n, dtype)
        return buf

    def _logits(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Checked float32 logits (n_vocab,) after step 1: ``logits`` itself when it is float32
        and no penalty applies (it is never written), else a reused buffer."""
        logits = np.asarray(logits)
        if logits.ndim != 1 or logits.size == 0:
            raise ValueError(f"logits must be a non-empty 1-D array, got shape {logits.shape}")
        check_logits(logits)
        n = self.repeat_last_n
        if logits.dtype == np.float32 and (n == 0 or len(history) == 0
                                           or not self._penalizes()):
            return logits
        x = self._buffer("x", logits.size, np.float32)
        np.copyto(x, logits, casting="unsafe")
        self._penalize(x, history)
        return x

    # -- steps 2-4 ---------------------------------------------------------------------------
    def _survivors(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Steps 2-4 on penalized logits x (V,) float32.

        Returns (ids (n,) int64 most likely first, their logits (n,) float64), or (None, None)
        when every token survives.
        """
        v = x.size
        k = self.top_k if 0 < self.top_k < v else v
        if k < v:  # everything after top-k works on its k sorted survivors
            ids = top_ids(x, k)
            cand = x[ids].astype(np.float64)  # (k,) descending
            keep = k
            if self.top_p < 1.0:
                cum = np.cumsum(_softmax(cand))
                keep = int(np.searchsorted(cum, self.top_p, side="left")) + 1  # first >= top_p
                keep = min(keep, k)
            if self.min_p > 0.0:
                floor = cand[0] + math.log(self.min_p)
                keep = min(keep, max(int(np.count_nonzero(cand >= floor)), 1))
            return ids[:keep], cand[:keep]
        x_max = float(x.max())
        bound = v  # min-p and top-p both keep a prefix of the sorted order: the shorter wins
        if self.min_p > 0.0:
            floor32 = _float32_at_least(x_max + math.log(self.min_p))  # x >= floor32 <=> l >= ..
            bound = max(int(np.count_nonzero(x >= floor32)), 1)
        keep = bound
        ids = None
        if self.top_p < 1.0:
            e = self._buffer("e", v, np.float64)
            np.subtract(x, np.float64(x_max), out=e)  # (V,) in float64, as the definition
            np.exp(e, out=e)
            total = e.sum()  # in token-id order
            m = min(FIRST_PREFIX, bound)
            while True:  # grow the sorted prefix until it holds the nucleus (or the bound)
                ids = top_ids(x, m)
                j = int(np.searchsorted(np.cumsum(e[ids] / total), self.top_p, side="left"))
                if j < m or m == bound:
                    keep = min(j + 1, bound)
                    break
                m = min(m * 4, bound)
        if keep == v:
            return None, None
        ids = ids[:keep] if ids is not None else top_ids(x, keep)
        return ids, x[ids].astype(np.float64)

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
            Surviving token ids, most likely first (when nothing is cut this sorts the whole
            vocabulary; ``sample`` does not).
        probs : (m,) float64
            Their probabilities (sum 1). Greedy (temperature <= 0) returns one token with 1.0.
        """
        x = self._logits(logits, history)
        if self.temperature <= 0:
            return np.array([np.argmax(x)], np.int64), np.ones(1)
        ids, cand = self._survivors(x)
        if ids is None:
            ids = np.argsort(-x, kind="stable")
            cand = x[ids].astype(np.float64)
        return ids.astype(np.int64), _softmax(cand / self.temperature)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Step 6: draw the next token id.

        Parameters
        ----------
        logits:
            ``(n_vocab,)`` float32 scores.
        history:
            Token ids so far (prompt and generated), for the penalties.
        """
        x = self._logits(logits, history)
        if self.temperature <= 0:
            return int(np.argmax(x))  # the first of equal maxima: the lowest id
        ids, cand = self._survivors(x)
        if ids is None:  # every token survives: draw in token-id order (nothing to sort)
            probs = self._buffer("e", x.size, np.float64)
            np.divide(x, np.float64(self.temperature), out=probs)
            probs -= probs.max()
            np.exp(probs, out=probs)
            probs /= probs.sum()
            cum = np.cumsum(probs, out=self._buffer("cum", x.size, np.float64))
        elif ids.size == 1:
            return int(ids[0])
        else:
            probs = _softmax(cand / self.temperature)
            cum = np.cumsum(probs)
        u = self._rng.random()
        i = int(np.searchsorted(cum, u * probs.sum(), side="right"))
        i = min(i, probs.size - 1)
        return int(ids[i]) if ids is not None else i


def top_ids(x: np.ndarray, m: int) -> np.ndarray:
    """The ids of the ``m`` largest entries of ``x`` (n,), largest first, ties by lower id:
    ``np.argsort(-x, kind="stable")[:m]`` without sorting ``x``.

    A threshold with at least m entries at or above it is found by counting (a few O(n)
    passes, narrowed until at most max(8 m, 4096) entries pass), then only those entries are
    partitioned and the m winners sorted: O(n + m log m) on logits of any usual spread.
    """
    n = x.size
    if m >= n:
        return np.argsort(-x, kind="stable")
    top = float(x.max())
    cap = max(8 * m, 4096)
    below, step = 0.0, 1.0  # fewer than m entries are >= top - below; m or more >= top - step
    t, c = np.float32(-np.inf), n  # the fallback (x holds +inf, or huge logits): every entry
    with np.errstate(over="ignore"):
        for _ in range(0 if math.isinf(top) else 64):
            t_try = np.float32(top - step)
            c_try = int(np.count_nonzero(x >= t_try))
            if c_try >= m:
                t, c = t_try, c_try
                break
            below, step = step, 2.0 * step
        for _ in range(16):  # narrow [below, step] while too many entries pass
            if c <= cap or t == -np.inf:
                break
            mid = 0.5 * (below + step)
            t_mid = np.float32(top - mid)
            c_mid = int(np.count_nonzero(x >= t_mid))
            if c_mid >= m:
                step, t, c = mid, t_mid, c_mid
            else:
                below = mid
    sub = np.flatnonzero(x >= t)  # (c,) ascending ids
    vals = x[sub]
    if sub.size > m:  # keep the m largest; at the m-th value the lowest ids
        kth = np.partition(vals, sub.size - m)[sub.size - m]
        above = np.flatnonzero(vals > kth)
        ties = np.flatnonzero(vals == kth)[: m - above.size]
        pick = np.sort(np.concatenate((above, ties)))
        sub, vals = sub[pick], vals[pick]
    return sub[np.argsort(-vals, kind="stable")]


def _float32_at_least(v: float) -> np.float32:
    """The smallest float32 >= v, so that ``x32 >= it`` equals ``float64(x32) >= v``."""
    with np.errstate(over="ignore"):
        t = np.float32(v)
    if float(t) < v:
        t = np.nextafter(t, np.float32(np.inf))
    return t


def check_logits(logits: np.ndarray) -> None:
    """The sampler never draws from non-finite logits: NaN or +Inf anywhere, or no finite
    value at all, is a ValueError (-Inf alone is allowed: a token that must not be drawn).

    Parameters
    ----------
    logits : (n_vocab,) float
    """
    top = logits.max()  # one pass: NaN if any is NaN, +Inf if any is, -Inf if all are
    if np.isnan(top) or np.isposinf(top):
        raise ValueError("logits contain NaN or +Inf; the model's output is not a distribution "
                         "(non-finite weights or an overflow)")
    if np.isneginf(top):
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
