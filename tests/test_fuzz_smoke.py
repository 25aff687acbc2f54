"""A bounded run of the atheris harness (fuzz/fuzz_open.py), in a subprocess because atheris
takes over the process. New inputs go to a temporary directory, never into fuzz/corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fuzz_harness_bounded_run(tmp_path):
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_open.py"), "-max_total_time=8", "-seed=1",
         "-timeout=10", "-rss_limit_mb=3000", "-print_final_stats=1", str(scratch),
         str(ROOT / "fuzz" / "corpus"), str(ROOT / "fuzz" / "regressions")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail  # a crash, timeout or leak makes libFuzzer exit non-zero
    runs = re.search(r"Done (\d+) runs", proc.stderr)
    assert runs and int(runs.group(1)) > 100, tail
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
