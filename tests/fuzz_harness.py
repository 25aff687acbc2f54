"""The fuzz harness's per-input work (fuzz/exercise.py), importable by the tests without atheris
and without putting fuzz/ on sys.path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"

_spec = importlib.util.spec_from_file_location("gguflite_fuzz_exercise", FUZZ / "exercise.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
exercise = _module.exercise  # (path) -> None: read every key, string and tensor; deep validate
