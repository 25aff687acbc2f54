"""The README's commands are real: every `gguflite` line names an existing subcommand and only
options that subcommand has, and the fresh-clone commands are exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from gguflite.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
CLI_LINES = [line.split("#")[0].strip() for block in SH_BLOCKS for line in block.splitlines()
             if line.strip().startswith("gguflite ")]


def test_readme_has_cli_examples():
    assert len(CLI_LINES) >= 10


@pytest.mark.parametrize("line", CLI_LINES)
def test_cli_example_uses_real_subcommand_and_options(line):
    words = line.split()
    sub = words[1]
    assert sub in COMMANDS, f"README uses unknown subcommand {sub!r}"
    real = _option_names(sub)
    options = [o.split("=")[0] for w in words[2:] for o in w.strip("[]").split("|")
               if o.startswith("-")]  # "[--metadata|--tensors]" names two options
    for opt in options:
        assert opt in real, f"`gguflite {sub}` has no option {opt} (it has {sorted(real)})"


def _option_names(sub: str) -> set[str]:
    """Every spelling click accepts for ``gguflite SUB``'s options (``-o``, ``--output``,
    ``--no-progress``, the group's help flags), read from the command's parameters."""
    ctx = cli.make_context("gguflite", [sub], resilient_parsing=True)  # the group's settings
    command = cli.get_command(ctx, sub)
    names = set(ctx.help_option_names)
    for p in command.params:
        if isinstance(p, click.Option):
            names.update(p.opts, p.secondary_opts)
    return names


def test_option_check_rejects_a_prefix_of_a_real_option():
    """The check is by name, not by substring: ``-s`` is not ``--seed``."""
    real = _option_names("run")
    assert "--seed" in real and "-p" in real
    assert {"-s", "-m", "-d", "-b", "--see"}.isdisjoint(real)


def test_fresh_clone_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/main-job.sh" in ci and "bash scripts/test.sh" in ci
    assert "bash scripts/main-job.sh" in README and "bash scripts/test.sh" in README
    main_job = [ln for ln in (ROOT / "scripts" / "main-job.sh").read_text().splitlines()
                if ln and not ln.startswith(("#", "set ", "cd "))]
    for cmd in main_job:  # the README spells out every command of the main job
        assert cmd.replace(" -q", "") in README, cmd
