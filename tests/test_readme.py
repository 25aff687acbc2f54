"""The README's commands are real: every `gguflite` line names an existing subcommand and only
options that subcommand has, and the fresh-clone commands are exactly what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

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
    result = CliRunner().invoke(cli, [sub, "--help"])
    assert result.exit_code == 0, result.output
    options = [o.split("=")[0] for w in words[2:] for o in w.strip("[]").split("|")
               if o.startswith("-")]  # "[--metadata|--tensors]" names two options
    for opt in options:
        assert opt in result.output, f"`gguflite {sub}` has no option {opt}"


def test_fresh_clone_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/main-job.sh" in ci and "bash scripts/test.sh" in ci
    assert "bash scripts/main-job.sh" in README and "bash scripts/test.sh" in README
    main_job = [ln for ln in (ROOT / "scripts" / "main-job.sh").read_text().splitlines()
                if ln and not ln.startswith(("#", "set ", "cd "))]
    for cmd in main_job:  # the README spells out every command of the main job
        assert cmd.replace(" -q", "") in README, cmd
