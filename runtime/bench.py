"""Prefill / decode throughput, measured like llama-bench.

``pp{P}``: P random tokens prefilled from an empty cache, in one ``forward`` (chunked by the
backend's n_batch). ``tg{N}``: N tokens decoded one at a time from an empty cache (llama-bench's
tg test has no prompt either). Each test runs once untimed to warm up, then ``repetitions``
times; tokens/s is reported as mean and standard deviation over the repetitions.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .engine import Model


@dataclass
class BenchResult:
    test: str  # "pp128" | "tg64"
    n_tokens: int
    repetitions: int
    tps_mean: float
    tps_std: float
    seconds: list[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _random_ids(model: Model, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, model.hparams.vocab_size, size=n, dtype=np.int64)  # (n,)


def time_prefill(model: Model, n: int, seed: int = 0) -> float:
    """Seconds to prefill n random tokens from an empty cache."""
    ids = _random_ids(model, n, seed)
    model.reset()
    t0 = time.perf_counter()
    model.backend.forward(ids, 0)
    dt = time.perf_counter() - t0
    model.reset()
    return dt


def time_decode(model: Model, n: int, seed: int = 0) -> float:
    """Seconds to decode n random tokens one by one from an empty cache."""
    ids = _random_ids(model, n, seed)
    model.reset()
    forward = model.backend.forward
    t0 = time.perf_counter()
    for i in range(n):
        forward(ids[i:i + 1], i)
    dt = time.perf_counter() - t0
    model.reset()
    return dt


def bench(model: Model, *, n_prompt: int = 128, n_gen: int = 64,
          repetitions: int = 5) -> list[BenchResult]:
    """Run pp{n_prompt} and tg{n_gen} (a count of 0 skips that test)."""
    results = []
    for test, n, fn in (("pp", n_prompt, time_prefill), ("tg", n_gen, time_decode)):
        if n <= 0:
            continue
        fn(model, n, seed=0)  # warm-up (first-call costs, page faults)
        secs = [fn(model, n, seed=r + 1) for r in range(repetitions)]
        tps = [n / s for s in secs]
        results.append(BenchResult(
            test=f"{test}{n}", n_tokens=n, repetitions=repetitions,
            tps_mean=statistics.fmean(tps),
            tps_std=statistics.stdev(tps) if len(tps) > 1 else 0.0, seconds=secs,
        ))
    return results
