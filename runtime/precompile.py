"""A first run compiles its kernels on both cores: this process and one helper process.

Numba compiles one function at a time on one core, and a cold ``gguflite run`` compiled every
kernel in the order generation first called it. ``warm_up(model)`` compiles them before
generation instead, split between this process and a helper that writes its share to Numba's
on-disk cache. Measured one at a time on SmolLM2 Q4_1 (AMD EPYC, cold cache): the int8 matrix
product of prefill (``kernels.gemm``) 8.9 s, the fused decode step (``decode.decode_step``)
3.2 s, the mat-vec driver 3.1 s, attention 2.5 s, the prefill's BLAS attention (its work
items on Numba's threads) 2.1 s, the row dequantizer 1.5 s, the prefill's row-parallel GLU
0.4 s, norms and activation 0.3 s. So, for a model with weights of a ``gemm.GEMM_TYPES`` type
(plan ``"gemm"``)::

    this process   mat-vec driver, row dequantizer, norms, activation, attention, decode step,
                   the prefill's row-parallel GLU -> (wait: helper done) -> a 16-token
                   prefill (all cached) -> a decode step (cached)
    helper         the int8 matrix product for each weight type of the blocks, the prefill's
                   BLAS attention -> ``gemm``

and for one without (float or KM weights, plan ``"step"``)::

    this process   mat-vec driver -> (signal) -> row dequantizer, a 16-token prefill
                   -> (wait: helper done) -> a decode step (cached)
    helper         norms, activation, attention -> (wait: signal) -> decode step -> ``decode``

The critical path is the longer of the two shares (~11 s and ~11 s for the first plan, where
everything in one process took ~21 s). The shares have no Numba function of their own in
common, except the activation quantizer and the row dequantizer that the GEMM packs with; both
processes may compile those at once, which is safe (Numba writes each cache file atomically;
two first runs sharing one cache do the same). Each call here is a real call of the model's
own code path on dummy inputs (token id 0, zero activations), so the compiled signatures are
the ones generation uses; the dummy writes land in KV cache positions that the next prompt
overwrites (``Model.tokens`` stays empty).

It changes nothing else: with a warm cache (the decode step's signature is in the on-disk
index) nothing happens; when the cache place is not writable, or the helper cannot start, dies
or writes nothing, this process compiles whatever it still lacks itself, as it would have
without the helper.

The helper is ``python -m gguflite.runtime.precompile FILE N_CTX KV_TYPE PLAN``; protocol,
one word a line: plan "step": this process -> ``go`` (the mat-vec driver is cached: the helper
may compile the step); helper -> ``decode`` (decode step cached), then it exits. Plan "gemm":
helper -> ``gemm`` (the matrix products cached), then it exits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def warm_up(model: Any) -> float:
    """Compile (or load) every kernel ``model``'s generation needs, on two cores when the
    Numba cache is cold.

    Parameters
    ----------
    model : gguflite.runtime.Model
        Numba backend with the fused decode step; any other model is left alone.

    Returns
    -------
    float
        Wall seconds spent; 0.0 when the cache was warm (or not writable, or nothing applies)
        and nothing was done.
    """
    from .numba_backend import NumbaBackend, decode_step_args

    be = getattr(model, "backend", None)
    if not isinstance(be, NumbaBackend) or be.plan is None or not be.fused:
        return 0.0
    from .decode import decode_step

    be.kv.reserve(1)
    probe = decode_step_args(be, 0)
    if _cached(decode_step, probe) or not _cache_writable(decode_step):
        return 0.0
    t0 = time.perf_counter()
    plan = "gemm" if _gemm_weights(be) else "step"
    helper = _start_helper(model, plan)
    try:
        hp = be.hparams
        f32 = np.float32
        be.ops.linear(be.w.output, np.zeros((1, hp.dim), f32))  # the mat-vec driver
        if plan == "step":
            helper.send("go")
        be.ops.embed(np.zeros(1, np.int64))  # the row dequantizer
        # the prefill's kernels: the int8 matrix product, and (from attention_blas.MIN_TOKENS
        # new tokens, as a chat prompt has) the BLAS attention and the row-parallel GLU
        from .attention_blas import MIN_TOKENS

        n = MIN_TOKENS
        if plan == "gemm":  # the helper's share of the other plan, and the step
            _norms_and_attention(be)
            be.forward(np.zeros(1, np.int64), 0)  # the fused step
            _activation(be, n)  # the prefill's row-parallel GLU
            t1 = time.perf_counter()
            helper.wait_for("gemm")
            log.debug("compile: this process's share %.1f s, then %.1f s waiting for the "
                      "helper", t1 - t0, time.perf_counter() - t1)
        if n + 1 <= be.n_ctx:
            be.kv.reserve(n)
            be.forward(np.zeros(n, np.int64), 0)
        if plan == "step":
            helper.wait_for("decode")
            be.forward(np.zeros(1, np.int64), 0)  # the fused step
    finally:
        helper.close()
    return time.perf_counter() - t0


def _gemm_weights(be: Any) -> list[Any]:
    """One block weight per type that the int8 matrix product runs on (kernels.gemm)."""
    from .decode import LINEARS
    from .kernels import gemm

    by_type = {}
    for b in be.w.blocks:
        for name in LINEARS:
            w = getattr(b, name)
            if getattr(w, "type", None) in gemm.GEMM_TYPES:
                by_type.setdefault(w.type, w)
    return list(by_type.values())


def _norms_and_attention(be: Any) -> None:
    """Compile (or load) rmsnorm, the activation and one-token attention, as a step uses them."""
    hp = be.hparams
    be.ops.rmsnorm(np.zeros((1, hp.dim), np.float32), be.w.output_norm)
    _activation(be, 1)
    _attention(be, 1)


def _activation(be: Any, n: int) -> None:
    """The activation as a call of n tokens runs it (from attention_blas.MIN_TOKENS: the
    row-parallel GLU of a prefill chunk)."""
    hidden = be.hparams.hidden_dim
    be.ops.glu(np.zeros((n, hidden), np.float32), np.zeros((n, hidden), np.float32))


def _attention(be: Any, n: int) -> None:
    """Attention as a call of n new tokens at position 0 runs it (from
    attention_blas.MIN_TOKENS: the prefill's BLAS attention)."""
    hp = be.hparams
    f32 = np.float32
    be.kv.reserve(n)
    be.ops.attention(0, np.zeros((n, hp.n_head, hp.head_dim), f32),
                     np.zeros((n, hp.n_kv_head, hp.head_dim), f32),
                     np.zeros((n, hp.n_kv_head, hp.head_dim), f32), 0)


_NOT_NEEDED = ("scipy.linalg", "cffi")
"""Optional packages Numba's CPU target imports when it starts, which gguflite never uses."""


def start_numba_target() -> None:
    """Start Numba's CPU target (its one-time typing and lowering registries) without letting
    it import ``scipy.linalg`` or ``cffi``.

    When the target starts, Numba imports ``scipy.linalg.cython_blas`` if it can, only to know
    whether ``np.dot`` and ``np.linalg`` may be compiled inside ``@njit`` code, and builds a
    ``cffi.FFI()`` (which imports pycparser and compiles its lexer's regular expressions) only
    to type cffi functions called from ``@njit`` code; gguflite's kernels do neither. Neither
    package is a gguflite dependency, but both are often installed; measured in a warm
    ``gguflite run``: 0.1-0.3 s of CPU for scipy.linalg, 0.1 s for cffi, out of ~1.4 s. For a
    process that runs no other Numba code (``gguflite run`` and ``chat``, the helper below)
    the probes are answered "not installed": ``sys.modules`` maps them to None while the
    target starts, then forgets it, so later imports of them work as usual (Numba's own cffi
    support stays off in this process). Compiled code and cache keys do not depend on it.
    A package already imported is left alone.
    """
    blocked = [name for name in _NOT_NEEDED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def _cached(dispatcher: Any, args: tuple) -> bool:
    """Whether ``dispatcher`` is compiled (in this process or on disk) for ``args``' types.

    Reads Numba's cache index the way ``Dispatcher.compile`` does (``_cache._index_key``,
    ``_cache_file._load_index``: Numba internals, as of 0.60-0.68); anything unexpected
    answers True, i.e. "leave it to Numba".
    """
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
        if sig in dispatcher.overloads:
            return True
        cache = dispatcher._cache
        key = cache._index_key(sig, dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - a probe: any surprise means "do nothing special"
        log.debug("Numba cache probe failed", exc_info=True)
        return True


def _cache_writable(dispatcher: Any) -> bool:
    """Whether the helper's compiled code can reach this process: the cache directory Numba
    chose for ``dispatcher`` takes files."""
    from gguflite._numba_cache import _writable

    try:
        return _writable(Path(dispatcher._cache.cache_path))
    except Exception:  # noqa: BLE001
        return False


class _Helper:
    """The helper process (or none: every method is then a no-op and this process compiles
    what it lacks itself)."""

    def __init__(self, proc: subprocess.Popen[bytes] | None):
        self.proc = proc
        self.said: set[str] = set()

    def send(self, word: str) -> None:
        if self.proc is None or self.proc.stdin is None:
            return
        try:
            self.proc.stdin.write(word.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # it is gone: this process compiles the rest
            self.close()

    def wait_for(self, word: str) -> None:
        """Block until the helper says ``word``, or is gone."""
        while self.proc is not None and word not in self.said:
            line = self.proc.stdout.readline() if self.proc.stdout is not None else b""
            if not line:
                log.debug("compile helper ended before %r (exit %s)", word, self.proc.poll())
                self.close()
                return
            self.said.add(line.decode(errors="replace").strip())

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _start_helper(model: Any, plan: str) -> _Helper:
    from numba.core import config

    env = dict(os.environ)
    if config.CACHE_DIR:  # e.g. the temporary one of _numba_cache.ensure_writable_cache
        env["NUMBA_CACHE_DIR"] = str(config.CACHE_DIR)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # its few parallel calls must not spin
    be = model.backend
    cmd = [sys.executable, "-m", __name__, str(model.path), str(be.n_ctx), be.kv.kv_type, plan]
    try:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        log.debug("cannot start the compile helper: %s", exc)
        proc = None
    return _Helper(proc)


def _helper_main(path: str, n_ctx: int, kv_type: str, plan: str) -> None:
    """The helper: the same backend as the caller's, then its share of the compilation."""
    import gguflite
    from gguflite.models import family_for_arch

    from . import ops
    from .decode import decode_step
    from .numba_backend import NumbaBackend, decode_step_args

    start_numba_target()
    ops.set_threads(1)
    f = gguflite.open(Path(path))
    fam = family_for_arch(f.metadata.get("general.architecture"))
    be = NumbaBackend(f, fam, fam.from_metadata(f.metadata), n_ctx=n_ctx, kv_type=kv_type)
    if plan == "gemm":
        from .attention_blas import MIN_TOKENS

        for w in _gemm_weights(be):  # as a prefill chunk calls them (MIN_TOKENS rows)
            be.ops.linear(w, np.zeros((MIN_TOKENS, w.in_features), np.float32))
        if MIN_TOKENS + 1 <= be.n_ctx:
            _attention(be, MIN_TOKENS)
        print("gemm", flush=True)
        return
    be.kv.reserve(1)
    _norms_and_attention(be)
    if sys.stdin.readline().strip() != "go":
        return
    decode_step(*decode_step_args(be, 0))
    print("decode", flush=True)


if __name__ == "__main__":
    _helper_main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
