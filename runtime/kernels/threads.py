"""The one place that picks Numba's threading layer.

The ``omp`` layer starts a parallel region in about 1-3 us; ``workqueue`` takes ~100 us, which
is ruinous at ~200 mat-vecs per token. It must be chosen before the first parallel call.
"""

from __future__ import annotations

import logging

import numba

log = logging.getLogger(__name__)

PREFERRED_LAYER = "omp"

if numba.config.THREADING_LAYER in ("default", "", None):
    numba.config.THREADING_LAYER = PREFERRED_LAYER


def ensure_threading_layer() -> None:
    """Nothing to do at call time; importing this module set the layer. Kept as the single
    hook so callers document that they rely on it."""


def threading_layer() -> str:
    """The active layer (``"omp"`` expected); valid after the first parallel call."""
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return numba.config.THREADING_LAYER
