"""runtime/sampling.py: each step of the llama.cpp chain on small hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gguflite.runtime.sampling import Sampler, StopStrings

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
