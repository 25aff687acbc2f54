"""runtime/sampling.py: each step of the llama.cpp chain on small hand-computed cases, the
partial selection against the sort-based definition, and the chain against llama.cpp's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gguflite.runtime.sampling import Sampler, StopStrings, top_ids

OFF = {"top_k": 0, "top_p": 1.0, "min_p": 0.0, "temperature": 1.0}  # every filter disabled
# probabilities 0.5, 0.3, 0.15, 0.05 as logits
P4 = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))


def test_greedy_takes_the_largest_logit_lowest_id_on_ties():
    s = Sampler(temperature=0.0, seed=0)
    assert s.sample(np.array([0.1, 2.0, -1.0, 2.0], np.float32)) == 1
    assert s.sample(np.array([-5.0, -3.0, -4.0], np.float32)) == 1


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    s = Sampler(repeat_penalty=2.0, repeat_last_n=64)
    out = s.apply_penalties(np.array([2.0, -1.0, 0.5, 3.0], np.float32), [0, 1, 1])
    np.testing.assert_array_equal(out, [1.0, -2.0, 0.5, 3.0])  # 2/2, -1*2, untouched, untouched


def test_frequency_and_presence_penalties_and_last_n_window():
    s = Sampler(repeat_penalty=1.0, frequency_penalty=0.1, presence_penalty=0.5)
    out = s.apply_penalties(np.array([2.0, -1.0, 0.5], np.float32), [0, 1, 1])
    # token 0 seen once: 2 - 0.1 - 0.5; token 1 seen twice: -1 - 0.2 - 0.5
    np.testing.assert_allclose(out, [1.4, -1.7, 0.5], rtol=1e-6)
    window = Sampler(repeat_penalty=2.0, repeat_last_n=1)
    out = window.apply_penalties(np.array([2.0, -1.0, 0.5], np.float32), [0, 1, 1])
    np.testing.assert_array_equal(out, [2.0, -2.0, 0.5])  # only the last token (1) counts
    np.testing.assert_array_equal(
        Sampler(repeat_penalty=2.0, repeat_last_n=0).apply_penalties(np.ones(3), [0]), np.ones(3)
    )


def test_top_k_keeps_the_k_largest():
    ids, probs = Sampler(**{**OFF, "top_k": 2}).candidates(P4)
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [0.5 / 0.8, 0.3 / 0.8], rtol=1e-6)


@pytest.mark.parametrize(
    "top_p, kept",
    [
        (0.45, [0]),  # 0.5 >= 0.45 already
        (0.75, [0, 1]),  # 0.5 < 0.75 <= 0.8
        (0.81, [0, 1, 2]),  # 0.8 < 0.81 <= 0.95
        (0.99, [0, 1, 2, 3]),
    ],
)
def test_top_p_keeps_the_minimal_set_with_mass_at_least_p(top_p, kept):
    ids, probs = Sampler(**{**OFF, "top_p": top_p}).candidates(P4)
    assert ids.tolist() == kept
    full = np.array([0.5, 0.3, 0.15, 0.05])[kept]
    np.testing.assert_allclose(probs, full / full.sum(), rtol=1e-6)


@pytest.mark.parametrize(
    "min_p, kept",
    [
        (0.2, [0, 1, 2]),  # threshold 0.2 * 0.5 = 0.1: 0.15 stays, 0.05 goes
        (0.35, [0, 1]),  # threshold 0.175
        (0.7, [0]),  # threshold 0.35
    ],
)
def test_min_p_is_relative_to_the_most_likely_token(min_p, kept):
    ids, _ = Sampler(**{**OFF, "min_p": min_p}).candidates(P4)
    assert ids.tolist() == kept


def test_temperature_scales_logits_after_the_filters():
    ids, probs = Sampler(**{**OFF, "temperature": 0.5}).candidates(np.array([1.0, 0.0], np.float32))
    assert ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs, [math.e**2 / (math.e**2 + 1), 1 / (math.e**2 + 1)])
    # top-p looks at the untempered distribution: a hot temperature does not widen the set
    ids, _ = Sampler(**{**OFF, "top_p": 0.75, "temperature": 10.0}).candidates(P4)
    assert ids.tolist() == [0, 1]


def test_chain_order_penalty_then_filters():
    logits = np.array([3.0, 2.9, 0.0, -1.0], np.float32)
    s = Sampler(top_k=2, top_p=1.0, min_p=0.0, temperature=1.0, repeat_penalty=3.0)
    ids, _ = s.candidates(logits, history=[0])  # 3.0 / 3 = 1.0 drops below 2.9
    assert ids.tolist() == [1, 0]


def test_seed_makes_draws_reproducible():
    logits = np.zeros(1000, np.float32)
    a = Sampler(**OFF, seed=42)
    b = Sampler(**OFF, seed=42)
    c = Sampler(**OFF, seed=43)
    draws_a = [a.sample(logits) for _ in range(30)]
    assert draws_a == [b.sample(logits) for _ in range(30)]
    assert draws_a != [c.sample(logits) for _ in range(30)]


def test_draws_follow_the_candidate_distribution():
    s = Sampler(**OFF, seed=7)
    n = 4000
    counts = np.bincount([s.sample(P4) for _ in range(n)], minlength=4) / n
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.03)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": math.nan},
        {"repeat_penalty": 0.0},
        {"repeat_last_n": -2},
        {"top_p": math.inf},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        Sampler(**kwargs)


def test_bad_inputs():
    s = Sampler(repeat_penalty=1.1)
    with pytest.raises(ValueError, match="NaN"):
        s.sample(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="1-D"):
        s.sample(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="outside"):
        s.sample(np.zeros(4, np.float32), history=[7])


# StopStrings: pieces pushed in order -> expected (emit, stopped) per push, then flush()
@pytest.mark.parametrize(
    "stops, pieces, expected, flushed",
    [
        # a stop string split over three pieces: nothing of it is ever emitted
        (["\nUser:"], ["Hel", "lo\nUs", "er: x"], [("Hel", False), ("lo", False), ("", True)], ""),
        # a held-back prefix that turns out not to be a stop string is released
        (["\nUser:"], ["a\nU", "nit"], [("a", False), ("\nUnit", False)], ""),
        # held text at the end comes back from flush()
        (["</s>"], ["x</"], [("x", False)], "</"),
        # the earliest of several stop strings wins; later pushes emit nothing
        (["STOP", "END"], ["aENDbSTOP", "more"], [("a", True), ("", True)], ""),
        # a stop string at the very start
        (["###"], ["###x"], [("", True)], ""),
        # overlapping prefixes: "aab" stop with text "aaab"
        (["aab"], ["a", "a", "a", "b!"], [("", False), ("", False), ("a", False), ("", True)], ""),
    ],
)  # fmt: skip
def test_stop_strings(stops, pieces, expected, flushed):
    s = StopStrings(stops)
    assert [s.push(p) for p in pieces] == expected
    assert s.flush() == flushed


def test_stop_strings_refuse_empty():
    with pytest.raises(ValueError):
        StopStrings([""])


def _llama_cpp_candidates(logits, history, *, top_k, top_p, min_p, temp, rp, last_n, fp, pp):
    """llama.cpp's own sampler chain (penalties, top-k, top-p, min-p, temp) applied via ctypes."""
    import ctypes

    import llama_cpp as L

    n = logits.size
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    try:
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(n, last_n, rp, fp, pp))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(top_k))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(min_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temp))
        for t in history:
            L.llama_sampler_accept(chain, int(t))
        data = (L.llama_token_data * n)()
        for i in range(n):
            data[i].id, data[i].logit, data[i].p = i, float(logits[i]), 0.0
        arr = L.llama_token_data_array(data=data, size=n, selected=-1, sorted=False)
        L.llama_sampler_apply(chain, ctypes.byref(arr))
        ids = np.array([arr.data[i].id for i in range(arr.size)])
        out = np.array([arr.data[i].logit for i in range(arr.size)], np.float64)
    finally:
        L.llama_sampler_free(chain)
    p = np.exp(out - out.max())
    return dict(zip(ids.tolist(), (p / p.sum()).tolist(), strict=True))


def test_candidates_match_llama_cpp_sampler_chain():
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = 300
        logits = (rng.normal(size=n) * 3).astype(np.float32)
        history = rng.integers(0, n, size=int(rng.integers(0, 100))).tolist()
        kw = {
            "top_k": int(rng.choice([0, 5, 40, 400])),
            "top_p": float(rng.choice([1.0, 0.9, 0.5, 0.1])),
            "min_p": float(rng.choice([0.0, 0.05, 0.2])),
            "temp": float(rng.choice([0.7, 1.0, 1.5])),
            "rp": float(rng.choice([1.0, 1.1, 1.5])),
            "last_n": int(rng.choice([0, 16, 64])),
            "fp": float(rng.choice([0.0, 0.2])),
            "pp": float(rng.choice([0.0, 0.3])),
        }
        ref = _llama_cpp_candidates(logits, history, **kw)
        s = Sampler(
            temperature=kw["temp"], top_k=kw["top_k"], top_p=kw["top_p"], min_p=kw["min_p"],
            repeat_penalty=kw["rp"], repeat_last_n=kw["last_n"], frequency_penalty=kw["fp"],
            presence_penalty=kw["pp"],
        )  # fmt: skip
        ids, probs = s.candidates(logits, history)
        assert sorted(ids.tolist()) == sorted(ref), kw
        expected = [ref[i] for i in ids.tolist()]
        np.testing.assert_allclose(probs, expected, rtol=1e-5, err_msg=str(kw))


# -- the partial selection is the sorted definition ----------------------------------------------
def _sorted_candidates(s, logits, history):
    """The module docstring's chain by one stable sort of the whole vocabulary.

    Returns (ids most likely first, their logits float64, whether every token survived).
    """
    pen = s.apply_penalties(logits, history).astype(np.float64)  # (V,)
    order = np.argsort(-pen, kind="stable")  # descending, ties by lower id
    v = order.size
    top_k_on = 0 < s.top_k < v
    if top_k_on:
        order = order[: s.top_k]
    cand = pen[order]
    if s.top_p < 1.0:
        e = np.exp(cand - cand[0])
        # the normaliser: over the top-k survivors in sorted order, else the vocabulary in id order
        total = e.sum() if top_k_on else np.exp(pen - pen.max()).sum()
        keep = int(np.searchsorted(np.cumsum(e / total), s.top_p, side="left")) + 1
        order, cand = order[:keep], cand[:keep]
    if s.min_p > 0.0:
        keep = max(int(np.count_nonzero(cand >= cand[0] + math.log(s.min_p))), 1)
        order, cand = order[:keep], cand[:keep]
    return order, cand, order.size == v


def _sorted_sample(s, rng, logits, history):
    """Step 6 on _sorted_candidates: sorted order, or id order when every token survived."""
    if s.temperature <= 0:
        return int(np.argsort(-s.apply_penalties(logits, history), kind="stable")[0])
    ids, cand, everything = _sorted_candidates(s, logits, history)
    if everything:
        pen = s.apply_penalties(logits, history).astype(np.float64)
        ids, cand = np.arange(pen.size), pen
    if ids.size == 1:
        return int(ids[0])
    z = cand / s.temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    i = int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), side="right"))
    return int(ids[min(i, ids.size - 1)])


def _random_logits(rng, kinds=7):
    """Logits of the shapes that break partial selections: ties, plateaus, -inf, spikes, huge
    values, +inf (kind 5; the sampler's softmax turns it into NaN, as llama.cpp's does)."""
    n = int(rng.choice([1, 2, 7, 64, 300, 5000]))
    kind = rng.integers(0, kinds)
    x = rng.normal(size=n) * float(rng.choice([0.1, 1.0, 3.0, 30.0]))
    if kind == 1:
        x = np.round(x * 2) / 2  # many ties
    elif kind == 2:
        x = np.zeros(n)  # one plateau
    elif kind == 3:
        x[rng.random(n) < 0.5] = -np.inf
    elif kind == 4:
        x[rng.integers(0, n)] = 50.0  # one spike
    elif kind == 5:
        x = rng.integers(-3, 3, size=n).astype(np.float64) * 1e30  # huge, tied
    elif kind == 6:
        x[rng.integers(0, n, size=2)] = np.inf
    return x.astype(np.float32)


def test_top_ids_is_the_head_of_a_stable_sort():
    rng = np.random.default_rng(1)
    for _ in range(400):
        x = _random_logits(rng)
        full = np.argsort(-x, kind="stable")
        for m in {1, 2, 40, 64, max(x.size // 3, 1), x.size}:
            m = min(m, x.size)
            np.testing.assert_array_equal(top_ids(x, m), full[:m], err_msg=f"m={m} x={x[:8]}")


def test_sampler_is_exactly_the_sorted_definition():
    rng = np.random.default_rng(2)
    for case in range(500):
        logits = _random_logits(rng, kinds=6)
        n = logits.size
        history = rng.integers(0, n, size=int(rng.integers(0, 80))).tolist()
        if not np.isfinite(logits).any():
            logits[0] = 0.0  # at least one finite logit
        s = Sampler(
            temperature=float(rng.choice([0.0, 0.7, 1.0, 1.5])),
            top_k=int(rng.choice([0, 1, 5, 40, 400, n])),
            top_p=float(rng.choice([1.0, 0.999, 0.9, 0.5, 0.1])),
            min_p=float(rng.choice([0.0, 0.0, 0.05, 0.2])),
            repeat_penalty=float(rng.choice([1.0, 1.3])),
            repeat_last_n=int(rng.choice([0, 16, -1])),
            frequency_penalty=float(rng.choice([0.0, 0.2])),
            seed=case,
        )  # fmt: skip
        what = f"case {case}: n={n} {vars(s)}"
        if s.temperature > 0:
            ref_ids, ref_cand, _ = _sorted_candidates(s, logits, history)
            ids, probs = s.candidates(logits, history)
            np.testing.assert_array_equal(ids, ref_ids, err_msg=what)
            np.testing.assert_array_equal(probs, _sorted_probs(ref_cand, s.temperature),
                                          err_msg=what)
        ref_rng = np.random.default_rng(case)
        draws = [s.sample(logits, history) for _ in range(5)]
        assert draws == [_sorted_sample(s, ref_rng, logits, history) for _ in range(5)], what


def _sorted_probs(cand, temperature):
    z = cand / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def test_logits_are_never_written():
    logits = np.array([3.0, 1.0, 2.0, 0.5], np.float32)
    before = logits.copy()
    for kw in ({"repeat_penalty": 1.5}, {"top_k": 0, "top_p": 0.5}, {"top_k": 0, "min_p": 0.0,
                                                                     "top_p": 1.0}):
        Sampler(seed=0, **kw).sample(logits, history=[0, 2])
        np.testing.assert_array_equal(logits, before)
