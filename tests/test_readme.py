"""CI must prove what README promises: .ci/run runs README's two commands verbatim."""

from __future__ import annotations

import os
import re

import pytest
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


def test_the_suite_gives_each_xdist_worker_one_thread():
    """README's test command runs two pytest-xdist workers on the two cores. A worker inherits the environment
    that conftest already set in the controlling process (AFT_THREADS=2 there); read back, it ran torch on two
    threads in each worker, and the two spin-waited on each other's cores (test_sft 23 s against 3 s alone, the
    whole suite 557 s against 355 s). Each worker, and every process its tests start, must run one."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("checks an xdist worker; this is one process alone (-n 0), which takes AFT_THREADS or 2")
    import torch

    expected = os.environ.get("AFT_WORKER_THREADS", "1")
    assert os.environ["AFT_THREADS"] == os.environ["OMP_NUM_THREADS"] == expected
    assert torch.get_num_threads() == int(expected)
    assert "--no-loadscope-reorder" in (ROOT / "pyproject.toml").read_text()  # conftest's FILE_ORDER applies
