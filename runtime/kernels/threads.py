"""The one place that picks Numba's threading layer and how its OpenMP threads wait.

The ``omp`` layer starts a parallel region in about 1-3 us; ``workqueue`` takes ~100 us, which
is ruinous at ~200 mat-vecs per token. It must be chosen before the first parallel call.

Waiting: between regions, libgomp threads spin (``OMP_WAIT_POLICY`` unset: spin for a while,
then sleep), which gives the lowest latency on an idle machine. On an *oversubscribed* one
(other processes using the cores) spinning is catastrophic: a descheduled team member makes
the others spin through their time slices at every region. Measured on the 2-core project
machine at load average ~7, SmolLM2-135M decode with 2 threads: 0.3 tok/s spinning, 20 tok/s
with ``OMP_WAIT_POLICY=passive`` (1 thread: 21.5 tok/s). So, unless the user set it, the
policy is made passive when the 1-minute load average already exceeds the core count at
import. ``GGUFLITE_OMP_WAIT=active|passive|default`` overrides the heuristic. libgomp reads
these variables once, when Numba first loads it (the first parallel call), so this module must
be imported before then (``gguflite.runtime.kernels`` imports it first).
"""

from __future__ import annotations

import logging
import os

import numba

log = logging.getLogger(__name__)

PREFERRED_LAYER = "omp"

if numba.config.THREADING_LAYER in ("default", "", None):
    numba.config.THREADING_LAYER = PREFERRED_LAYER


def _choose_wait_policy() -> str | None:
    """The OMP_WAIT_POLICY to set, or None to leave libgomp's default."""
    if "OMP_WAIT_POLICY" in os.environ:
        return None  # the user decided
    choice = os.environ.get("GGUFLITE_OMP_WAIT", "auto").lower()
    if choice in ("active", "passive"):
        return choice.upper()
    if choice != "auto":
        return None
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return None
    return "PASSIVE" if load > (os.cpu_count() or 1) else None


WAIT_POLICY = _choose_wait_policy()
if WAIT_POLICY is not None:
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    log.info("OMP_WAIT_POLICY=%s (GGUFLITE_OMP_WAIT=%s)", WAIT_POLICY,
             os.environ.get("GGUFLITE_OMP_WAIT", "auto"))


def ensure_threading_layer() -> None:
    """Nothing to do at call time; importing this module set the layer. Kept as the single
    hook so callers document that they rely on it."""


def threading_layer() -> str:
    """The active layer (``"omp"`` expected); valid after the first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return numba.config.THREADING_LAYER
