"""The scheduler in-process: continuous batching gives each sequence the tokens it gets alone,
new jobs join a running batch, the prompt cache changes nothing but the work done."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gguflite.default_model import default_model_path
from gguflite.runtime import load
from gguflite.runtime.sampling import Sampler, StopStrings
from gguflite.serve import batched
from gguflite.serve.batched import BatchedSlots
from gguflite.serve.scheduler import Done, Job, Piece, QueueFull, Scheduler
from gguflite.serve.slots import SequentialSlots

PROMPTS = ["The sea is", "Once upon a time", "def fibonacci(n):", "My favourite food is",
           "The capital of France", "Water boils at"]


@pytest.fixture(scope="module")
def model():
    m = load(default_model_path(), n_ctx=128, threads=1)  # Scheduler.start warms engines up
    yield m
    m.close()


class CountingSlots(SequentialSlots):
    """SequentialSlots that counts the prompt tokens it prefilled."""

    prefilled = 0

    def prefill_many(self, work):
        self.prefilled += sum(len(ids) for _, ids, _ in work)
        super().prefill_many(work)


class Collector:
    def __init__(self):
        self.text: list[str] = []
        self.done: Done | None = None
        self.finished = threading.Event()

    def __call__(self, ev):
        if isinstance(ev, Piece):
            self.text.append(ev.text)
        else:
            self.done = ev
            self.finished.set()


def job(model, prompt, *, max_tokens=12, seed=None, temperature=0.0, **kw):
    c = Collector()
    j = Job(ids=model.tokenizer.encode(prompt), max_tokens=max_tokens,
            sampler=Sampler(temperature=temperature, seed=seed), stops=StopStrings([]),
            emit=c, **kw)
    return j, c


def run_jobs(sched, jobs):
    for j, _ in jobs:
        sched.submit(j)
    for _, c in jobs:
        assert c.finished.wait(600)
    return ["".join(c.text) for _, c in jobs]


@pytest.mark.parametrize("engine", [SequentialSlots, BatchedSlots])
def test_batched_equals_one_at_a_time(model, engine):
    alone = Scheduler(engine(model, 1), model.tokenizer, max_queue=len(PROMPTS))
    together = Scheduler(engine(model, 4), model.tokenizer, max_queue=len(PROMPTS))
    alone.start()
    together.start()
    try:
        one = [run_jobs(alone, [job(model, p, cache_prompt=False)])[0] for p in PROMPTS]
        many = run_jobs(together, [job(model, p, cache_prompt=False) for p in PROMPTS])
    finally:
        alone.stop()
        together.stop()
    assert many == one
    assert all(one)
    assert together.max_batch == 4 and alone.max_batch == 1  # 6 jobs, 4 slots: they joined


def argmax_chain(model, prompt, n):
    """Greedy tokens the slow way: prompt but its last token as one chunk, then one
    forward per token at the next position (what the scheduler must reproduce)."""
    ids = model.tokenizer.encode(prompt)
    model.reset()
    if len(ids) > 1:
        model.backend.forward(np.array(ids[:-1]), 0)
    out, tok, pos = [], ids[-1], len(ids) - 1
    for _ in range(n):
        tok = int(np.argmax(model.backend.forward(np.array([tok]), pos)))
        if tok in model.tokenizer.eot_ids:
            break
        out.append(tok)
        pos += 1
    return model.tokenizer.decode(out)


def test_greedy_tokens_are_the_argmax_chain(model):
    """Positions and caches are bookkept right: each slot decodes what one backend does."""
    sched = Scheduler(SequentialSlots(model, 2), model.tokenizer)
    sched.start()
    try:
        got = run_jobs(sched, [job(model, p, max_tokens=8) for p in PROMPTS[:3]])
    finally:
        sched.stop()
    assert got == [argmax_chain(model, p, 8) for p in PROMPTS[:3]]


def test_prompt_cache_reuses_the_prefix_and_keeps_the_tokens(model):
    engine = CountingSlots(model, 1)
    sched = Scheduler(engine, model.tokenizer)
    sched.start()
    engine.prefilled = 0  # not the warm-up's tokens
    try:
        kw = {"temperature": 1.0, "seed": 7, "max_tokens": 16}
        first = run_jobs(sched, [job(model, PROMPTS[1], **kw)])
        n_first = engine.prefilled
        again = run_jobs(sched, [job(model, PROMPTS[1], **kw)])
    finally:
        sched.stop()
    n_prompt = len(model.tokenizer.encode(PROMPTS[1]))
    assert n_first == n_prompt - 1  # the last prompt token runs in the decode step
    assert engine.prefilled == n_first  # the second run prefilled nothing
    assert again == first


def test_cancel_frees_the_slot_and_queue_is_bounded(model):
    sched = Scheduler(SequentialSlots(model, 1), model.tokenizer, max_queue=1)
    long_job, long_c = job(model, PROMPTS[0], max_tokens=100, temperature=1.0, seed=1)
    waiting, waiting_c = job(model, PROMPTS[1], max_tokens=4)
    extra, _ = job(model, PROMPTS[2])
    sched.submit(long_job)
    sched.submit(waiting)
    with pytest.raises(QueueFull):
        sched.submit(extra)
    sched.start()
    try:
        sched.cancel(long_job)
        assert waiting_c.finished.wait(600)
        assert waiting_c.done.completion_tokens == 4
        assert long_c.done is None  # a cancelled job gets no more events
        assert sched.status()["slots_idle"] == 1 and sched.n_cancelled == 1
    finally:
        sched.stop()



def test_batched_step_is_each_slot_alone_and_the_per_op_path(model):
    """One decode step for 3 slots gives each slot what a step of that slot alone gives (the
    runtime's fused step) and what the per-op graph gives (the same row kernels), up to the
    last bits: Numba inlines the row kernels into matvec_batch, and a fresh compile may
    contract multiply-adds differently from the cached kernels of the other paths (seen:
    2e-6); with warm caches the three agree bit for bit."""
    engine = BatchedSlots(model, 3)
    prompts = [model.tokenizer.encode(p) for p in PROMPTS[:3]]
    engine.prefill_many([(s, np.array(ids[:-1]), 0) for s, ids in enumerate(prompts)])
    saved = [(b.kv.k.copy(), b.kv.v.copy()) for b in engine.backends]

    def restore():
        for b, (k, v) in zip(engine.backends, saved, strict=True):
            b.kv.k, b.kv.v = k.copy(), v.copy()

    last = np.array([ids[-1] for ids in prompts])
    pos = np.array([len(ids) - 1 for ids in prompts])
    together = engine.decode([0, 1, 2], last, pos)  # (3, vocab)
    for s in range(3):
        restore()
        alone = engine.decode([s], last[s:s + 1], pos[s:s + 1])
        np.testing.assert_allclose(alone[0], together[s], rtol=0, atol=1e-4)
        restore()
        b = engine.backends[s]
        b.enable_timers(True)  # the timed forward runs the per-op graph of llama.py
        try:
            per_op = b.forward(last[s:s + 1], int(pos[s]))
        finally:
            b.enable_timers(False)
        np.testing.assert_allclose(per_op, together[s], rtol=0, atol=1e-4)


def test_batched_fingerprint_is_current():
    assert batched.DISPATCH_FINGERPRINT == batched.dispatch_fingerprint(), (
        "runtime/kernels/dispatch.py changed: update DISPATCH_FINGERPRINT in "
        "gguflite/serve/batched.py (so Numba recompiles matvec_batch)")


def test_batched_prefill_fills_each_cache_as_alone(model):
    """Prompts stacked in one prefill leave each slot's KV cache exactly as a prefill of
    that prompt alone does (BLAS rows do not depend on the other rows)."""
    engine = BatchedSlots(model, 3)
    prompts = [np.array(model.tokenizer.encode(p * 3)) for p in PROMPTS[:3]]
    engine.prefill_many([(0, prompts[0], 0)])
    alone = engine.backends[0].kv.k[:, :, :len(prompts[0])].copy()
    engine.prefill_many([(s, p, 0) for s, p in enumerate(prompts)])
    together = engine.backends[0].kv.k[:, :, :len(prompts[0])]
    np.testing.assert_array_equal(alone, together)
    assert np.abs(together).max() > 0


def test_the_warm_up_runs_on_the_scheduler_thread_and_its_failure_reaches_start(model):
    """Every parallel kernel runs on the scheduler's thread, warm-up included (a second
    thread opening OpenMP teams halves the decode speed: Scheduler.start); a warm-up that
    fails is raised by start()."""
    seen = []

    class Recording(SequentialSlots):
        def warm_up(self):
            seen.append(threading.current_thread().name)
            super().warm_up()

    sched = Scheduler(Recording(model, 1), model.tokenizer)
    sched.start()
    sched.stop()
    assert seen == ["gguflite-scheduler"]

    class Broken(SequentialSlots):
        def warm_up(self):
            raise RuntimeError("no kernels")

    with pytest.raises(RuntimeError, match="no kernels"):
        Scheduler(Broken(model, 1), model.tokenizer).start()


@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q6_K"])
def test_batched_rows_equal_each_row_alone_bit_for_bit(name):
    """linear_rows (matvec_batch: the four-activation row kernels of the 32-block types, the
    one-row kernels for the rest) gives every row of X exactly Linear.matvec of that row, for
    1 to 9 rows (four-row passes, a pass of three, and the leftover rows), on widths with an
    odd and an even block count."""
    from test_kernels_matvec import rand_weight

    from gguflite.constants import GGMLType
    from gguflite.runtime.kernels import Linear

    rng = np.random.default_rng(3)
    for rows, cols in ((70, 256 if name.endswith("_K") else 288), (33, 512)):
        lin = Linear(rand_weight(rng, name, rows, cols), GGMLType[name], (rows, cols))
        for n_seq in (1, 2, 3, 4, 5, 7, 9):
            X = rng.standard_normal((n_seq, cols)).astype(np.float32)
            together = batched.linear_rows(lin, X)
            alone = np.stack([lin.matvec(x) for x in X])
            assert np.array_equal(together, alone), (name, rows, cols, n_seq,
                                                     np.abs(together - alone).max())


WARM_THEN_STEP = """
import json, sys
import numpy as np
from numba.core import event
from gguflite.runtime import load
from gguflite.serve.batched import BatchedSlots
m = load(None, n_ctx=64, threads=1)
engine = BatchedSlots(m, 4)
engine.warm_up()
with event.install_recorder("numba:compile") as rec:
    for n in (1, 2, 3, 4):
        engine.decode(list(range(n)), np.zeros(n, np.int64), np.full(n, 1))
print(json.dumps(sum(ev.is_start for _, ev in rec.buffer)))
"""


def test_warm_up_compiles_every_step_the_batched_engine_takes(tmp_path):
    """After warm_up (fresh Numba cache), steps of 1 to 4 sequences compile nothing: the first
    step with several sequences must not stall every stream while it compiles."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GGUFLITE_KERNEL_KINDS"}  # the file's
    r = subprocess.run([sys.executable, "-c", WARM_THEN_STEP],  # kinds only: a shorter compile
                       env={**env, "NUMBA_CACHE_DIR": str(tmp_path)},
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == 0

