"""The narrow engine interface the scheduler drives: N sequence slots, each with a KV cache.

    engine = SequentialSlots(model, n_slots=4)
    engine.prefill_many([(slot, ids, pos), ...])       # prompt chunks into the KV caches
    logits = engine.decode(slots, ids, positions)      # (n, vocab): one step, n sequences

The scheduler (``scheduler.py``) knows which tokens each slot holds; the engine only runs
tokens at positions. ``SequentialSlots`` is the implementation on today's runtime API: every
slot gets its own backend over the same memory-mapped file (weights are views into the
mapping, so an extra slot costs only its KV cache and activation buffers), and a decode step
runs the slots one after another. ``batched.BatchedSlots`` (one pass over each weight for all
slots, four-row kernels) plugs in behind the same three calls and is what ``serve`` runs with
more than one slot; what it still lacks is in ``SlotEngine``'s docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from gguflite.runtime.engine import Model


class SlotEngine(Protocol):
    """What the scheduler needs from a model: independent sequences stepped together.

    ``batched.BatchedSlots`` is the batched implementation: one pass of the family's graph
    over the rows of all slots, the four-activation row kernels (``dispatch.rows_dot4``) for
    the 32-block types, each sequence's numbers exactly those it gets alone. What it still
    lacks (measured in benchmarks/results/server.md):

    - a fused multi-sequence decode step (decode.decode_step over n rows, each row's RoPE and
      attention at its own position in its own KV cache) instead of ~15 Python calls per
      layer (~2.5 ms of a 13 ms 4-slot step of SmolLM2);
    - four-row kernels for the k-quants (they take one-row passes per sequence);
    - a per-sequence cache object the engine hands out (``new_cache()``) rather than a whole
      backend per slot, and a public ``Model.chat_ids(messages)`` (the server calls
      ``Model._needs_bos`` today).
    """

    n_slots: int
    n_ctx: int  # positions per slot
    n_vocab: int
    n_batch: int  # largest prefill chunk

    def prefill_many(self, work: Sequence[tuple[int, np.ndarray, int]]) -> None:
        """Prompt chunks of several slots, (slot, ids (n,), pos) each, into their KV caches
        (no logits: the scheduler feeds a prompt's last token in a decode step)."""
        ...

    def decode(self, slots: Sequence[int], ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """One token per slot: ids (n,) at positions (n,); returns logits (n, vocab)."""
        ...


def _new_backend(model: Model, n_ctx: int, n_batch: int) -> Any:
    """Another backend over ``model``'s open file (shares the weights, owns its KV cache,
    of the model's KV type). The one place that names the runtime's backend class."""
    from gguflite.runtime.numba_backend import NumbaBackend

    if not isinstance(model.backend, NumbaBackend):
        from gguflite.errors import ModelError

        raise ModelError("gguflite serve runs on the numba backend")
    return NumbaBackend(model.file, model.family, model.hparams, n_ctx=n_ctx,
                        n_batch=n_batch, kv_type=model.backend.kv.kv_type)


class SequentialSlots:
    """``SlotEngine`` on today's runtime: one backend per slot, stepped one after another.

    Parameters
    ----------
    model : a loaded ``gguflite.runtime.Model`` (numba backend); kept open by the caller.
    n_slots : number of sequences that can run at once.
    n_ctx : positions per slot (default: the model's n_ctx).
    n_batch : largest prefill chunk per call.
    """

    def __init__(self, model: Model, n_slots: int, *, n_ctx: int | None = None,
                 n_batch: int = 64):
        if n_slots < 1:
            raise ValueError(f"n_slots must be >= 1, got {n_slots}")
        self.n_slots = n_slots
        self.n_ctx = model.n_ctx if n_ctx is None else n_ctx
        self.n_vocab = model.hparams.vocab_size
        self.n_batch = n_batch
        self.backends = [_new_backend(model, self.n_ctx, n_batch) for _ in range(n_slots)]

    def warm_up(self) -> None:
        """Run a tiny prefill and decode step on slot 0 so the kernels are compiled (or
        loaded from Numba's cache) before the first request; slot 0's cache is then junk,
        which is fine: the scheduler never reuses tokens it did not record."""
        self.prefill_many([(0, np.zeros(9, np.int64), 0)])
        self.decode([0], np.zeros(1, np.int64), np.array([9]))

    def prefill_many(self, work: Sequence[tuple[int, np.ndarray, int]]) -> None:
        for slot, ids, pos in work:  # one slot after another, on its own backend
            self.backends[slot].forward(np.asarray(ids, dtype=np.int64), pos)

    def decode(self, slots: Sequence[int], ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(slots), self.n_vocab), np.float32)  # (n, vocab)
        for i, slot in enumerate(slots):
            out[i] = self.backends[slot].forward(np.asarray(ids[i:i + 1], np.int64),
                                                 int(positions[i]))
        return out
