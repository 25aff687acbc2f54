"""Keep Numba's on-disk cache of the drivers honest.

Numba keys a cached function on the modification time and size of *its own* source file. The
drivers in dispatch.py inline the row kernels of legacy.py, kquants.py, ... so an edit there
would leave a stale compiled driver in the cache. Before dispatch is imported, its modification
time is raised to the newest of the package's sources, which invalidates exactly the cached
drivers that could be stale. A read-only install (no permission) is left alone: its files do
not change.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_DRIVERS = ("dispatch.py",)


def refresh_driver_stamps() -> None:
    try:
        newest = max(p.stat().st_mtime_ns for p in _HERE.glob("*.py"))
        for name in _DRIVERS:
            path = _HERE / name
            st = path.stat()
            if st.st_mtime_ns < newest:
                os.utime(path, ns=(st.st_atime_ns, newest))
    except OSError:  # a read-only or vanished install: nothing can have changed under us
        return
