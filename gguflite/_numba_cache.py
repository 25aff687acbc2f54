"""Numba's on-disk cache must have somewhere to go.

Numba caches a compiled function in the first writable place among ``NUMBA_CACHE_DIR``, the
source file's ``__pycache__`` and the user's cache directory, and raises at *import* time
("cannot cache function ...: no locator available") when none of them is writable, so a
read-only install with a read-only home and a read-only ``NUMBA_CACHE_DIR`` could not even
import gguflite. ``ensure_writable_cache`` looks at those places once, before the first cached
function is defined, and when none is writable points Numba at a private temporary directory:
everything still works, compiled code is just not kept for the next run (a warning says so).

Numba keys a cached function on its source file and the CPU, not on the module globals it
froze in at compile time, so code compiled under a lowering override (``LOWERING_OVERRIDES``:
the environment variables that pick another kernel lowering than the CPU's own) would later be
loaded by runs without it, mixing lowerings (seen: a driver compiled for the AVX2 activations
fed VNNI-offset ones and returned NaN). ``separate_lowering_overrides`` gives such runs a cache
directory of their own.
"""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
import os
from pathlib import Path

LOWERING_OVERRIDES = ("GGUFLITE_GEMM_PATH", "GGUFLITE_PORTABLE_SIMD", "GGUFLITE_NO_VNNI")
"""Environment variables that change what the kernels compile to on the same CPU."""

log = logging.getLogger(__name__)


def _writable(path: Path) -> bool:
    """Whether ``path`` exists or can be created, and takes a file (Numba's own test)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


def cache_places() -> list[Path]:
    """Where Numba would cache gguflite's functions, in its order of preference."""
    from numba.core import config
    from numba.misc.appdirs import AppDirs

    places = [Path(config.CACHE_DIR)] if config.CACHE_DIR else []
    places.append(Path(__file__).resolve().parent / "__pycache__")
    places.append(Path(AppDirs(appname="numba", appauthor=False).user_cache_dir))
    return places


def ensure_writable_cache(places: list[Path] | None = None) -> Path | None:
    """Give Numba a temporary cache directory when none of ``places`` (default
    ``cache_places()``) is writable; returns that directory, or None when one was."""
    from numba.core import config

    places = cache_places() if places is None else places
    if any(_writable(p) for p in places):
        return None
    tmp = Path(tempfile.mkdtemp(prefix="gguflite-numba-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    config.CACHE_DIR = str(tmp)
    log.warning("no writable Numba cache directory among %s: compiled kernels go to %s and "
                "are not kept after this run", ", ".join(map(str, places)), tmp)
    return tmp


def separate_lowering_overrides() -> Path | None:
    """Point Numba at ``<cache>/lowering-<overrides>`` when a LOWERING_OVERRIDES variable is set
    (``<cache>``: NUMBA_CACHE_DIR, else the user's cache directory); returns that directory,
    or None when no override is set. Idempotent (a child process given the directory as its
    NUMBA_CACHE_DIR keeps it)."""
    from numba.core import config
    from numba.misc.appdirs import AppDirs

    tag = "_".join(f"{k.removeprefix('GGUFLITE_').lower()}-{os.environ[k]}"
                   for k in LOWERING_OVERRIDES if os.environ.get(k))
    if not tag:
        return None
    base = Path(config.CACHE_DIR or AppDirs(appname="numba", appauthor=False).user_cache_dir)
    target = base if base.name == f"lowering-{tag}" else base / f"lowering-{tag}"
    config.CACHE_DIR = str(target)
    return target
