"""Run a check script in a subprocess with the portable (generic vector IR) SIMD lowering."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_portable_check(code: str, numba_cache_dir: Path | str,
                       lowering: dict[str, str] | None = None) -> str:
    """Run ``code`` with GGUFLITE_PORTABLE_SIMD=1 (or the environment ``lowering``, e.g.
    GGUFLITE_NO_VNNI=1) and its own Numba cache directory (never mixed with the default one);
    it must exit 0 and print "portable ok". Returns its stdout."""
    tests_dir = os.path.dirname(__file__)
    env = dict(os.environ, **(lowering or {"GGUFLITE_PORTABLE_SIMD": "1"}),
               NUMBA_CACHE_DIR=str(numba_cache_dir))
    env["PYTHONPATH"] = tests_dir + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tests_dir,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "portable ok" in proc.stdout
    return proc.stdout
