"""Continuous batching: one thread steps every running sequence together.

Each iteration of the scheduler thread::

    1. drop cancelled jobs (a client went away): their slots are free at once
    2. admit waiting jobs into free slots (the slot whose cached tokens share the longest
       prefix with the prompt, so a chat's next turn only runs its new tokens)
    3. prefill: each admitted job runs one chunk (<= n_batch tokens) of its prompt, all but
       the last prompt token, so long prompts never stall the others for more than a chunk;
       the chunks of all jobs go to the engine together (``prefill_many``)
    4. decode: one step for every sequence that has a token to feed (the last prompt token
       or the token sampled last step), ``engine.decode(slots, ids, positions)``; then each
       sequence samples its next token with its own Sampler, and text goes out through its
       StreamDecoder and StopStrings to the job's ``emit`` callback

A job's first token is sampled from logits of the decode path (its last prompt token is fed
in a decode step, never inside a prefill chunk), so the same prompt and seed give the same
tokens whether or not its prefix came from the cache, and the same greedy tokens whether it
ran alone or beside others. Requests that arrive while others decode join at the next
iteration; more jobs than slots wait in a bounded queue (``QueueFull`` beyond it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gguflite.runtime.engine import common_prefix
from gguflite.runtime.sampling import Sampler, StopStrings

from .slots import SlotEngine

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Every slot is busy and the waiting queue holds its maximum."""


class ShuttingDown(Exception):
    """The scheduler is stopping and takes no new jobs."""


@dataclass
class Piece:
    """Generated text, ready to send."""

    text: str


@dataclass
class Done:
    """The job ended: ``finish_reason`` is "stop" (end-of-generation token or stop string)
    or "length" (max_tokens)."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    """The job could not finish (the server is stopping, or the engine failed)."""

    message: str


Event = Piece | Done | Failed


@dataclass(eq=False)
class Job:
    """One generation request, as the scheduler runs it.

    ``emit`` is called from the scheduler thread with each ``Event``; it must be thread-safe
    and quick (e.g. ``loop.call_soon_threadsafe(queue.put_nowait, event)``).
    """

    ids: list[int]  # prompt token ids
    max_tokens: int  # the caller checked len(ids) + max_tokens <= n_ctx
    sampler: Sampler
    stops: StopStrings
    emit: Callable[[Event], None]
    cache_prompt: bool = True
    ignore_eos: bool = False  # end-of-generation tokens are generated like any other
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class _Seq:
    """A job placed in a slot."""

    job: Job
    slot: int
    decoder: Any  # the tokenizer's StreamDecoder
    history: list[int]  # prompt + generated ids, for the penalties
    prefill_pos: int  # next prompt position to prefill (up to len(ids) - 1)
    next_id: int = -1  # token to feed at the next decode step (-1: still prefilling)
    pos: int = 0  # its position
    n_generated: int = 0


class Scheduler:
    """Runs jobs on a ``SlotEngine`` from one background thread.

    Parameters
    ----------
    engine : the slots to run on.
    tokenizer : for decoding generated ids (``stream_decoder``, ``eot_ids``).
    max_queue : jobs that may wait for a slot before ``submit`` raises QueueFull.
    threads : Numba threads for the scheduler thread (None: all cores).
    """

    def __init__(self, engine: SlotEngine, tokenizer: Any, *, max_queue: int = 16,
                 threads: int | None = None):
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_queue = max_queue
        self.threads = threads
        self._eog = set(tokenizer.eot_ids)
        self._slot_tokens: list[list[int]] = [[] for _ in range(engine.n_slots)]  # KV contents
        self._running: list[_Seq | None] = [None] * engine.n_slots
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0  # decode steps run
        self.max_batch = 0  # most sequences decoded in one step so far
        self.n_cancelled = 0  # jobs dropped because their client went away

    # -- the caller's side (any thread) -----------------------------------------------------
    def start(self) -> None:
        """Start the scheduler thread; returns once it has warmed the engine up (compiled or
        loaded its kernels: ``engine.warm_up()``, when the engine has one) in that thread.

        Every parallel kernel runs on this one thread. libgomp gives each thread that opens
        parallel regions a team of its own, and once the teams' threads outnumber the cores
        it throttles their spin-waiting: a decode step then waits on sleeping threads at each
        of its ~100 regions (measured, SmolLM2-135M Q4_1, 2 threads, 2 cores: 5.2 ms per step
        from one thread, 10.4-13.3 ms from a second thread after the first had used a team).
        So the warm-up runs here, not in the caller's thread."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                if self.threads is not None:
                    from gguflite.runtime import ops

                    ops.set_threads(self.threads)  # Numba's thread count is per calling thread
                warm_up = getattr(self.engine, "warm_up", None)
                if warm_up is not None:
                    warm_up()
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                return
            finally:
                ready.set()
            self._loop()

        self._thread = threading.Thread(target=run, name="gguflite-scheduler", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises QueueFull or ShuttingDown."""
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            busy = sum(s is not None for s in self._running)
            if busy + len(self._waiting) >= self.engine.n_slots + self.max_queue:
                raise QueueFull(f"all {self.engine.n_slots} slots are busy and "
                                f"{len(self._waiting)} requests are waiting")
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Stop ``job`` at the next step boundary and free its slot (no more events)."""
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Fail every waiting and running job, and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, int]:
        with self._cond:
            busy = sum(s is not None for s in self._running)
            return {"slots_idle": self.engine.n_slots - busy, "slots_processing": busy,
                    "queued": len(self._waiting), "requests_cancelled": self.n_cancelled}

    # -- the scheduler thread ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and \
                        all(s is None for s in self._running):
                    self._cond.wait()
                if self._stopping:
                    break
                self._drop_cancelled()
                self._admit()
            try:
                self._prefill()
                self._decode()
            except Exception as exc:  # an engine bug must not kill the server silently
                log.exception("scheduler step failed")
                with self._cond:
                    for seq in self._running:
                        if seq is not None:
                            self._slot_tokens[seq.slot] = []  # its cache state is unknown
                            self._finish(seq, Failed(f"internal error: {exc}"))
        with self._cond:
            for seq in self._running:
                if seq is not None:
                    self._finish(seq, Failed("the server is shutting down"))
            while self._waiting:
                _send(self._waiting.popleft(), Failed("the server is shutting down"))

    def _drop_cancelled(self) -> None:
        n_waiting = len(self._waiting)
        self._waiting = deque(j for j in self._waiting if not j.cancelled)
        self.n_cancelled += n_waiting - len(self._waiting)
        for seq in self._running:
            if seq is not None and seq.job.cancelled:
                self.n_cancelled += 1
                self._release(seq)

    def _admit(self) -> None:
        while self._waiting:
            free = [i for i, s in enumerate(self._running) if s is None]
            if not free:
                return
            job = self._waiting.popleft()
            keep = {i: common_prefix(self._slot_tokens[i], job.ids) for i in free}
            slot = max(free, key=lambda i: keep[i]) if job.cache_prompt else free[0]
            n_keep = min(keep[slot], len(job.ids) - 1) if job.cache_prompt else 0
            del self._slot_tokens[slot][n_keep:]  # the KV cache past n_keep is overwritten
            seq = _Seq(job=job, slot=slot, decoder=self.tokenizer.stream_decoder(),
                       history=list(job.ids), prefill_pos=n_keep)
            self._running[slot] = seq
            if n_keep == len(job.ids) - 1:
                seq.next_id, seq.pos = job.ids[-1], n_keep

    def _prefill(self) -> None:
        todo = [s for s in self._running if s is not None and s.next_id < 0
                and not s.job.cancelled]
        if not todo:
            return
        ends = [min(s.prefill_pos + self.engine.n_batch, len(s.job.ids) - 1) for s in todo]
        self.engine.prefill_many([
            (s.slot, np.asarray(s.job.ids[s.prefill_pos:end], np.int64), s.prefill_pos)
            for s, end in zip(todo, ends, strict=True)])  # one chunk (<= n_batch) each
        for seq, end in zip(todo, ends, strict=True):
            ids = seq.job.ids
            self._slot_tokens[seq.slot].extend(ids[seq.prefill_pos:end])
            seq.prefill_pos = end
            if end == len(ids) - 1:
                seq.next_id, seq.pos = ids[-1], end

    def _decode(self) -> None:
        batch = [s for s in self._running if s is not None and s.next_id >= 0
                 and not s.job.cancelled]
        if not batch:
            return
        slots = [s.slot for s in batch]
        ids = np.array([s.next_id for s in batch], np.int64)  # (n,)
        positions = np.array([s.pos for s in batch], np.int64)  # (n,)
        logits = self.engine.decode(slots, ids, positions)  # (n, vocab)
        self.steps += 1
        self.max_batch = max(self.max_batch, len(batch))
        for i, seq in enumerate(batch):
            self._slot_tokens[seq.slot].append(seq.next_id)
            self._advance(seq, logits[i])

    def _advance(self, seq: _Seq, logits: np.ndarray) -> None:
        """Sample the next token of ``seq`` from its logits (vocab,) and send its text."""
        job = seq.job
        tok = job.sampler.sample(logits, seq.history)
        if tok in self._eog and not job.ignore_eos:
            self._finish(seq, Done("stop", len(job.ids), seq.n_generated), flush=True)
            return
        seq.history.append(tok)
        seq.n_generated += 1
        piece, stopped = job.stops.push(seq.decoder.push(tok))
        if piece:
            _send(job, Piece(piece))
        if stopped:
            self._finish(seq, Done("stop", len(job.ids), seq.n_generated))
        elif seq.n_generated >= job.max_tokens:
            self._finish(seq, Done("length", len(job.ids), seq.n_generated), flush=True)
        else:
            seq.next_id, seq.pos = tok, seq.pos + 1

    def _finish(self, seq: _Seq, event: Event, *, flush: bool = False) -> None:
        if flush:  # text held back by the UTF-8 decoder or as a possible stop string
            tail, _ = seq.job.stops.push(seq.decoder.flush())
            tail += seq.job.stops.flush()
            if tail:
                _send(seq.job, Piece(tail))
        _send(seq.job, event)
        self._release(seq)

    def _release(self, seq: _Seq) -> None:
        if self._running[seq.slot] is seq:
            self._running[seq.slot] = None


def _send(job: Job, event: Event) -> None:
    if job.cancelled:
        return
    try:
        job.emit(event)
    except RuntimeError:  # the client's event loop is gone
        job.cancelled = True
