"""A loaded model: tokenizer + backend + the generation loop (streaming, stops, stats).

    >>> model = gguflite.runtime.load(path)
    >>> for piece in model.generate("The sea is", max_tokens=32, seed=0):
    ...     print(piece, end="")
    >>> text = model.generate("The sea is", max_tokens=32, stream=False)
    >>> text.stats.decode_tps

The backend (``Backend`` in numba_backend.py: ``forward(ids, pos)`` and ``reset()``) is the
only part that depends on the compute library; hyper-parameters, tokenizer, sampling, stop
handling, prompt-prefix reuse and perplexity are shared by every backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gguflite
from gguflite.errors import ModelError
from gguflite.finite import diagnose_nonfinite
from gguflite.models import Family, HParams, family_for_arch

from .numba_backend import Backend, NumbaBackend
from .sampling import Sampler, StopStrings
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 4096  # default KV cache length when the file's context is longer
# Template variables that render_chat sets itself; chat_template_kwargs may not name them.
_RESERVED_VARIABLES = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token",
                                 "max_chars", "name"})  # the last two: render_chat's own


@dataclass
class GenerationStats:
    """Counts and timings of one ``generate`` call."""

    n_prompt: int = 0  # prompt tokens
    n_prefill: int = 0  # prompt tokens actually run (the rest was reused from the cache)
    prefill_seconds: float = 0.0
    n_generated: int = 0  # tokens sampled (an end-of-generation token is not counted)
    n_decode: int = 0  # forward passes of generated tokens (the last one needs none)
    decode_seconds: float = 0.0
    stop_reason: str = ""  # "eog" (end-of-generation token) | "stop" (stop string) | "length"

    @property
    def prefill_tps(self) -> float:
        return self.n_prefill / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        return self.n_decode / self.decode_seconds if self.decode_seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"prefill_tps": self.prefill_tps, "decode_tps": self.decode_tps}


class Completion(str):
    """The generated text (a ``str``) with its ``stats``."""

    stats: GenerationStats


class Model:
    """A model loaded from a file. Build it with ``gguflite.runtime.load``.

    Attributes
    ----------
    path, file, hparams, tokenizer, backend, n_ctx
    tokens : list[int]
        The tokens whose keys/values are in the cache, in order.
    last_stats : GenerationStats
        Stats of the latest ``generate`` (also after a streamed one ends).
    """

    def __init__(self, path: str | Path, *, backend: str = "numba", threads: int | None = None,
                 n_ctx: int | None = None, n_batch: int = 128, **backend_options: Any):
        t0 = time.perf_counter()
        self.path = Path(path)
        self.file = gguflite.open(self.path)
        try:
            self.family = family_for_arch(self.file.metadata.get("general.architecture"))
            self.hparams: HParams = self.family.from_metadata(self.file.metadata)
            hp = self.hparams
            if n_ctx is None:
                n_ctx = min(hp.context_length, DEFAULT_N_CTX)
            if not 0 < n_ctx <= hp.context_length:
                raise ModelError(f"n_ctx={n_ctx} must be in 1..{hp.context_length} (the "
                                 f"file's {hp.arch}.context_length)")
            self.n_ctx = n_ctx
            self.tokenizer = Tokenizer.from_metadata(self.file.metadata)
            if self.tokenizer.n_vocab != hp.vocab_size:
                raise ModelError(f"the tokenizer has {self.tokenizer.n_vocab} tokens but "
                                 f"{hp.arch}.vocab_size is {hp.vocab_size}")
            self.backend: Backend = _make_backend(backend, self.file, self.family, hp,
                                                  n_ctx=n_ctx,
                                                  n_batch=n_batch, threads=threads,
                                                  **backend_options)
        except BaseException:
            self.file.close()
            raise
        self.tokens: list[int] = []
        self.last_stats = GenerationStats()
        self._longest_token: int | None = None
        self.load_seconds = time.perf_counter() - t0

    # -- cache-aware evaluation -------------------------------------------------------------
    def reset(self) -> None:
        """Forget the conversation (the KV cache)."""
        self.tokens = []
        self.backend.reset()

    def _check_fits(self, n: int, what: str) -> None:
        if n > self.n_ctx:
            raise ModelError(f"{what} needs {n} tokens but the context holds {self.n_ctx} "
                             f"(n_ctx; the file allows up to {self.hparams.context_length})")

    def _forward(self, ids: np.ndarray, pos: int, *, all_logits: bool = False) -> np.ndarray:
        """``backend.forward``, refusing non-finite logits with an error that names the first
        non-finite tensor of the file (gguflite.finite; checked only on that failure)."""
        try:
            logits = self.backend.forward(ids, pos, all_logits=all_logits)
        except (ZeroDivisionError, FloatingPointError):  # NaN/Inf reaching a Numba division
            raise diagnose_nonfinite(self.file, f"at position {pos}") from None
        if not np.isfinite(logits).all():  # ~20 us a token
            raise diagnose_nonfinite(self.file, f"at position {pos}")
        return logits

    def eval(self, ids: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly ``ids``; returns the last position's logits (vocab,).

        The longest prefix already in the cache is reused (at least one token is re-run so
        there are logits to return).
        """
        ids = [int(t) for t in ids]
        if not ids:
            raise ModelError("cannot evaluate an empty token list")
        self._check_fits(len(ids), "the prompt")
        keep = 0
        for a, b in zip(self.tokens, ids, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)
        logits = self._forward(np.asarray(ids[keep:], dtype=np.int64), keep)
        self.tokens = ids
        return logits

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits of every position of ``ids`` (n,) -> (n, vocab) float32, from an empty cache."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ModelError("logits() needs a non-empty 1-D list of token ids")
        self._check_fits(int(ids.size), "logits()")
        self.reset()
        out = self._forward(ids, 0, all_logits=True)
        self.tokens = ids.tolist()
        return out

    # -- generation --------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[int], *, max_tokens: int = 128,
                 temperature: float = 0.8, top_k: int = 40, top_p: float = 0.95,
                 min_p: float = 0.05, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                 seed: int | None = None, stop: Sequence[str] = (), stream: bool = True,
                 add_special: bool = True) -> Iterator[str] | Completion:
        """Continue ``prompt`` (text, or token ids used as given).

        Yields text pieces (``stream=True``) or returns a ``Completion`` (a str with
        ``.stats``). Generation ends at an end-of-generation token (not emitted), a stop string
        (cut before it) or after ``max_tokens`` tokens. ``temperature <= 0`` is greedy.
        """
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special=add_special)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ModelError("the prompt is empty (no tokens); give some text or a BOS")
        if max_tokens < 0:
            raise ModelError(f"max_tokens must be >= 0, got {max_tokens}")
        self._check_fits(len(ids) + max_tokens, f"a prompt of {len(ids)} tokens plus "
                         f"max_tokens={max_tokens}")
        sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed)
        gen = self._generate(ids, max_tokens, sampler, StopStrings(stop))
        if stream:
            return gen
        text = Completion("".join(gen))
        text.stats = self.last_stats
        return text

    def _generate(self, ids: list[int], max_tokens: int, sampler: Sampler,
                  stops: StopStrings) -> Iterator[str]:
        stats = GenerationStats(n_prompt=len(ids))
        self.last_stats = stats
        t0 = time.perf_counter()
        stats.n_prefill = len(ids) - min(common_prefix(self.tokens, ids), len(ids) - 1)
        logits = self.eval(ids)
        stats.prefill_seconds = time.perf_counter() - t0
        decoder = self.tokenizer.stream_decoder()
        eog = self.tokenizer.eot_ids
        history = list(ids)
        stats.stop_reason = "length"
        for _ in range(max_tokens):
            tok = sampler.sample(logits, history)
            if tok in eog:
                stats.stop_reason = "eog"
                break
            history.append(tok)
            stats.n_generated += 1
            piece, stopped = stops.push(decoder.push(tok))
            if piece:
                yield piece
            if stopped:
                stats.stop_reason = "stop"
                break
            if stats.n_generated == max_tokens:
                break  # its logits are not needed (and it is not in the cache)
            t = time.perf_counter()
            logits = self._forward(np.array([tok], dtype=np.int64), len(self.tokens))
            self.tokens.append(tok)
            stats.decode_seconds += time.perf_counter() - t
            stats.n_decode += 1
        if stats.stop_reason != "stop":
            tail, _ = stops.push(decoder.flush())
            tail += stops.flush()
            if tail:
                yield tail

    def chat(self, messages: list[dict], *, template: str | None = None,
             chat_template_kwargs: Mapping[str, Any] | None = None,
             **kwargs: Any) -> Iterator[str] | Completion:
        """Render ``messages`` with the file's chat template (or ``template``) and generate.

        ``chat_template_kwargs`` are extra template variables, e.g. ``{"enable_thinking":
        False}`` for Qwen 3 (see :meth:`render_chat`); ``kwargs`` go to :meth:`generate`.
        """
        prompt = self.render_chat(messages, template=template,
                                  chat_template_kwargs=chat_template_kwargs)
        return self.generate(prompt, add_special=self._needs_bos(prompt), **kwargs)

    def render_chat(self, messages: list[dict], *, template: str | None = None,
                    add_generation_prompt: bool = True,
                    chat_template_kwargs: Mapping[str, Any] | None = None) -> str:
        """The prompt text of ``messages``, as transformers' ``apply_chat_template`` renders it.

        Parameters
        ----------
        chat_template_kwargs:
            Extra variables for the template, passed as transformers' ``apply_chat_template
            (**kwargs)`` and llama.cpp's ``--chat-template-kwargs`` pass them, e.g.
            ``{"enable_thinking": False}`` (Qwen 3) or ``{"tools": [...]}``.
        """
        from .chat import get_chat_template, render_chat

        extra = dict(chat_template_kwargs or {})
        bad = sorted(str(k) for k in extra if not isinstance(k, str) or k in _RESERVED_VARIABLES)
        if bad:
            raise ModelError(f"chat_template_kwargs cannot set {', '.join(bad)}: names must be "
                             f"strings other than {', '.join(sorted(_RESERVED_VARIABLES))}")
        tok = self.tokenizer
        tmpl = template or get_chat_template(self.file.metadata)
        if self._longest_token is None:  # characters; n_ctx of them bound any prompt that fits
            self._longest_token = max(map(len, tok.vocab.tokens), default=1)
        return render_chat(tmpl, messages, add_generation_prompt=add_generation_prompt,
                           bos_token=_text(tok, tok.bos_id), eos_token=_text(tok, tok.eos_id),
                           max_chars=self.n_ctx * max(self._longest_token, 1),
                           name=("the template argument" if template else
                                 f"tokenizer.chat_template of {self.path.name}"), **extra)

    def _needs_bos(self, prompt: str) -> bool:
        """Add the file's BOS unless the rendered template already starts with it."""
        bos = _text(self.tokenizer, self.tokenizer.bos_id)
        return not (bos and prompt.startswith(bos))

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences (prompt-cache reuse)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _text(tok: Tokenizer, tid: int | None) -> str:
    return "" if tid is None else tok.vocab.tokens[tid]


def _make_backend(name: str, f: gguflite.GGUFFile, fam: type[Family], hp: HParams, *,
                  n_ctx: int, n_batch: int,
                  threads: int | None, device: str | None = None, dtype: str | None = None,
                  compile: bool = False, kv_type: str = "f16") -> Backend:
    if name == "numba":
        if device not in (None, "cpu") or dtype not in (None, "float32", "f32") or compile:
            raise ModelError("the numba backend runs on the CPU in float32; for --device, "
                             "--dtype or --compile use --backend torch")
        from . import ops

        ops.set_threads(threads)
        ops.set_blas_threads(1)  # one spinning pool at a time (see ops.set_blas_threads)
        return NumbaBackend(f, fam, hp, n_ctx=n_ctx, n_batch=n_batch, kv_type=kv_type)
    if name == "torch":
        from .torch_backend import TorchBackend  # raises ModelError naming the extra if no torch

        return TorchBackend(f, fam, hp, n_ctx=n_ctx, threads=threads, device=device, dtype=dtype,
                          compile=compile)
    raise ModelError(f"unknown backend {name!r}; choose 'numba' or 'torch'")


def load(path: str | Path | None = None, *, backend: str = "numba", threads: int | None = None,
         n_ctx: int | None = None, n_batch: int = 128, device: str | None = None,
         dtype: str | None = None, compile: bool = False, kv_type: str = "f16") -> Model:
    """Load a model file (None: the embedded default model) for generation.

    Parameters
    ----------
    path : file path, or None for ``gguflite.default_model.default_model_path()``
    backend : "numba" (CPU) or "torch" (any torch device; needs the ``torch`` extra)
    threads : CPU threads (None: all cores)
    n_ctx : KV cache length; default min(context_length, 4096)
    n_batch : largest prefill chunk
    device, dtype, compile : torch backend only: "cpu" / "cuda" / "cuda:1" / "mps"; the compute
        dtype ("float32", "float16", "bfloat16"; default float32 on CPU, float16 elsewhere);
        ``torch.compile`` of the forward pass
    kv_type : numba backend: the KV cache's element type, "f16" (default, as llama.cpp) or
        "f32"; the cache grows as the context fills

    Raises
    ------
    ModelError
        Unknown architecture, missing or mis-shaped tensor, bad hyper-parameter.
    """
    if path is None:
        from gguflite.default_model import default_model_path

        path = default_model_path()
    return Model(path, backend=backend, threads=threads, n_ctx=n_ctx, n_batch=n_batch,
                 device=device, dtype=dtype, compile=compile, kv_type=kv_type)
