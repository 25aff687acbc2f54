"""`gguflite run` reports when its timings include one-time Numba compilation."""

from __future__ import annotations

import click
import numpy as np
from click.testing import CliRunner
from gguflite.runtime.engine import GenerationStats
from numba import njit

from gguflite.cli.run import CompileTimer, print_stats


def test_compile_timer_counts_compilation_and_nothing_else():
    @njit(cache=False)
    def fresh(x):  # a new function object: compiled inside the block
        return (x * 2.0).sum()

    with CompileTimer() as t:
        fresh(np.ones(4))
    assert t.seconds > 0.0
    with CompileTimer() as t2:
        fresh(np.ones(8))  # same signature: no compilation
    assert t2.seconds == 0.0


def test_stats_line_mentions_compilation_only_when_it_happened():
    stats = GenerationStats(n_prompt=3, n_prefill=3, prefill_seconds=1.0, n_generated=2,
                            n_decode=2, decode_seconds=1.0, stop_reason="length")
    runner = CliRunner()

    @click.command()
    @click.option("--c", type=float)
    def show(c):
        print_stats(stats, c)

    assert "compilation" in runner.invoke(show, ["--c", "12.5"]).output
    assert "12.5 s" in runner.invoke(show, ["--c", "12.5"]).output
    assert "compilation" not in runner.invoke(show, ["--c", "0.0"]).output


def test_notice_goes_to_stderr_once_and_only_when_compiling(capsys, monkeypatch):
    import gguflite.cli.run as run_cli

    monkeypatch.setattr(run_cli, "_noticed", False)

    @njit(cache=False)
    def warm(x):
        return x + 1

    warm(1)
    with CompileTimer(notify=True):
        warm(2)  # compiled already: silent
    assert capsys.readouterr().err == ""

    @njit(cache=False)
    def cold_a(x):
        return x + 2

    with CompileTimer(notify=True) as t:
        cold_a(1)  # not gguflite's: compiles silently (Numba's typed List does, every run)
    assert capsys.readouterr().err == "" and t.count == 1

    cold_b = njit(cache=False)(lambda x: x + 3)
    cold_c = njit(cache=False)(lambda x: x + 4)
    cold_b.py_func.__module__ = cold_c.py_func.__module__ = "gguflite.runtime.kernels.fake"
    with CompileTimer(notify=True):
        cold_b(1)
    with CompileTimer(notify=True):
        cold_c(1)
    assert capsys.readouterr().err.count(CompileTimer.NOTICE) == 1
