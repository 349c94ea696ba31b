"""CI must prove what README promises: .ci/run runs README's two commands verbatim."""

from __future__ import annotations

import re

from conftest import ROOT


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme.split("## Quick start")[1].split("\n## ")[0], re.S)
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f".ci/run does not run README's command: {command}"


def test_the_readme_is_the_front_door_not_the_archive():
    """≤ 150 lines; the rest lives in the documentation site, and every docs/ page the README links to exists."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), target
