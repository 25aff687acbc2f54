"""Importance matrices from the runtime: per-column mean squared activations of weight inputs.

For every 2-D weight ``W`` of a block (numpy shape (rows, cols), ``y = W @ x``) this records
over the calibration tokens::

    sum2[j] = sum over tokens t of x[t, j] ** 2        (cols,) float64
    count   = number of tokens                          importance = sum2 / count

which is what llama.cpp's ``llama-imatrix`` collects (tools/imatrix/imatrix.cpp,
``collect_imatrix``: ``e.values[j] += x[j] * x[j]``, ``e.counts += 1`` per row) and what the
quantizers use as ``quant_weights``. Weights that read the same input share the statistics:
attn_q/attn_k/attn_v read ``rmsnorm(x) * attn_norm``; ffn_gate/ffn_up read
``rmsnorm(x) * ffn_norm``; attn_output reads the attention output and ffn_down reads
``silu(gate) * up``. Like llama.cpp by default, ``output.weight`` (and ``token_embd``) are not
collected.

How: the Numba backend's forward is used unchanged. ``ImatrixCollector`` swaps the first
linear of each input group (``wq``, ``wo``, ``w_gate``, ``w_down``) for a thin wrapper that adds
the input rows to the sums and then calls the real kernel (prefill ``matmul`` and decode
``matvec``/``matvec_many`` alike; the fused one-call decode step is switched off meanwhile),
and puts the originals back on ``detach``. The text is cut
into chunks exactly as for perplexity (``perplexity.chunk_tokens``: ``ctx`` tokens, first one
replaced by BOS), each chunk run from an empty cache, every token counted, as llama.cpp does.

    >>> model = gguflite.runtime.load(path, n_ctx=512)
    >>> stats = collect_imatrix(model, text, ctx=512)
    >>> stats.save("imatrix.gguf")            # llama.cpp's imatrix GGUF (converters/imatrix.py)
    >>> imp = stats.importance()              # name -> (cols,) float32
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gguflite.errors import ModelError

from .engine import Model
from .numba_backend import NumbaBackend

# Block attribute wrapped -> the llama.cpp tensor suffixes that read the same input.
GROUPS: dict[str, tuple[str, ...]] = {
    "wq": ("attn_q.weight", "attn_k.weight", "attn_v.weight"),
    "wo": ("attn_output.weight",),
    "w_gate": ("ffn_gate.weight", "ffn_up.weight"),
    "w_down": ("ffn_down.weight",),
}


@dataclass
class ImatrixStats:
    """Accumulated statistics: per group key ``blk.L.<attr>``, sum of x**2 and token count."""

    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # key -> tensor names
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (cols,) float64
    counts: dict[str, int] = field(default_factory=dict)  # key -> tokens
    chunk_count: int = 0
    chunk_size: int = 0
    datasets: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, key: str, x: np.ndarray) -> None:
        """Add input rows x (n, cols) (or one row (cols,)) of group ``key``."""
        x2 = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])  # (n, cols)
        s = np.einsum("ij,ij->j", x2, x2)  # (cols,)
        if key in self.sums:
            self.sums[key] += s
            self.counts[key] += x2.shape[0]
        else:
            self.sums[key] = s
            self.counts[key] = x2.shape[0]

    def tensor_stats(self) -> dict[str, tuple[np.ndarray, int]]:
        """Tensor name -> (sum of x**2 (cols,) float64, count), every tensor of every group."""
        out: dict[str, tuple[np.ndarray, int]] = {}
        for key, names in self.names.items():
            if key not in self.sums:
                continue
            for name in names:
                out[name] = (self.sums[key], self.counts[key])
        return out

    def importance(self) -> dict[str, np.ndarray]:
        """Tensor name -> (cols,) float32 mean of x**2 (the quantizers' importance)."""
        return {name: (s / c).astype(np.float32) for name, (s, c) in self.tensor_stats().items()}

    def save(self, path: str | Path) -> Path:
        """Write llama.cpp's imatrix GGUF (``converters.imatrix.save_imatrix``)."""
        from gguflite.converters.imatrix import save_imatrix

        return save_imatrix(path, self.tensor_stats(), datasets=self.datasets,
                            chunk_count=self.chunk_count, chunk_size=self.chunk_size)


class _Observed:
    """A linear that reports its input to the stats, then runs the real one (``inner``)."""

    def __init__(self, inner: Any, stats: ImatrixStats, key: str):
        self.inner = inner
        self.stats = stats
        self.key = key

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.stats.add(self.key, x)
        return self.inner.matvec(x, out=out)

    def matmul(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        self.stats.add(self.key, x)
        return self.inner.matmul(x, out=out)

    @staticmethod
    def matvec_many(linears: Sequence[Any], x: np.ndarray,
                    outs: Sequence[np.ndarray]) -> Any:
        inner = []
        for lin in linears:
            if isinstance(lin, _Observed):
                lin.stats.add(lin.key, x)
                lin = lin.inner
            inner.append(lin)
        return type(inner[0]).matvec_many(inner, x, outs=outs)


class ImatrixCollector:
    """Attach to a Numba backend; every forward pass then adds to ``self.stats``.

    Use as a context manager (``with ImatrixCollector(model.backend) as stats: ...``) so the
    original linears are restored even on error.
    """

    def __init__(self, backend: Any):
        if not isinstance(backend, NumbaBackend):
            raise ModelError("imatrix collection needs the Numba backend (backend='numba'), "
                             f"got {type(backend).__name__}")
        self.backend = backend
        self.stats = ImatrixStats()
        self._saved: list[tuple[Any, str, Any]] = []
        self._fused = False

    def attach(self) -> ImatrixStats:
        if self._saved:
            return self.stats
        # The one-call decode step (decode.py) reads the weights directly; turn it off
        # so single-token steps also go through the (observed) linears.
        self._fused, self.backend.fused = self.backend.fused, False
        fused = {logical: name for name, parts in
                 self.backend.family.split_rows(self.backend.hparams).items()
                 for logical, _, _ in parts}
        for layer, blk in enumerate(self.backend.w.blocks):
            for attr, suffixes in GROUPS.items():
                key = f"blk.{layer}.{attr}"
                self.stats.names[key] = tuple(dict.fromkeys(  # fused tensors: stored names
                    f"blk.{layer}.{fused.get(s, s)}" for s in suffixes))
                inner = getattr(blk, attr)
                self._saved.append((blk, attr, inner))
                setattr(blk, attr, _Observed(inner, self.stats, key))
        return self.stats

    def detach(self) -> None:
        for blk, attr, inner in self._saved:
            setattr(blk, attr, inner)
        if self._saved:
            self.backend.fused = self._fused
        self._saved = []

    def __enter__(self) -> ImatrixStats:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()


def collect_imatrix(model: Model, text_or_ids: str | Sequence[int], *, ctx: int = 512,
                    n_chunks: int | None = None, dataset: str = "",
                    progress: Callable[[int, int], None] | None = None) -> ImatrixStats:
    """Run the calibration text through ``model`` in ``ctx``-token chunks and collect stats.

    Parameters
    ----------
    model : Model
        Loaded with the Numba backend and ``n_ctx >= ctx``.
    text_or_ids : the calibration text (tokenized with the file's tokenizer) or token ids
    ctx : chunk length in tokens; the text needs at least 2 chunks (as for perplexity)
    n_chunks : use at most this many chunks (default all)
    dataset : name stored in ``imatrix.datasets``
    progress : called as progress(done, total) after each chunk
    """
    from .perplexity import chunk_tokens

    t0 = time.perf_counter()
    chunks, _ = chunk_tokens(model, text_or_ids, ctx)
    if n_chunks is not None:
        chunks = chunks[:max(1, n_chunks)]
    collector = ImatrixCollector(model.backend)
    with collector as stats:
        for i, chunk in enumerate(chunks):
            model.reset()
            model.backend.forward(chunk, 0)  # last logits only; every layer sees all tokens
            if progress is not None:
                progress(i + 1, len(chunks))
    model.reset()
    stats.chunk_count = len(chunks)
    stats.chunk_size = ctx
    stats.datasets = [dataset] if dataset else []
    stats.seconds = time.perf_counter() - t0
    return stats
