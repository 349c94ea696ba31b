"""The deployment path end to end, against a real `prefect server` on 127.0.0.1 and a real process worker.

It starts and stops everything it uses: server → work pool → `prefect deploy --all` →
`prefect deployment run 'aft-sweep/tiny'` → `prefect worker start --run-once` → the run is
Completed and its results are on disk.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HANG_S, ROOT, prefect_server_env

pytestmark = pytest.mark.slow
PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture
def prefect_server(tmp_path):
    """A real Prefect server on loopback with its own home; yields the environment that points at it."""
    with prefect_server_env(tmp_path) as env:
        yield env


def _prefect(env: dict, *args: str, timeout: float = HANG_S) -> str:
    done = subprocess.run([PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_sweep_deployment_runs_on_a_real_server_and_worker(prefect_server, tmp_path):
    from aft_core.config import SFTConfig
    from aft_core.data.towninfo import generate_towninfo
    from aft_core.sft import run_sft
    from flows.params import PRESETS

    env = prefect_server
    corpus = generate_towninfo(tmp_path / "data", dialogues=60, seed=0)
    sft_settings = PRESETS["tiny"]["sft"]
    sft = run_sft(dataclasses.replace(SFTConfig(**sft_settings), data=str(corpus)), tmp_path / "sft", progress=False)
    run_dir = tmp_path / "run"

    _prefect(env, "work-pool", "create", "aft-pool", "--type", "process")
    deployed = _prefect(env, "--no-prompt", "deploy", "--all")
    assert "aft-sweep/tiny" in deployed and "aft-pipeline/towninfo-small" in deployed
    started = _prefect(env, "deployment", "run", "aft-sweep/tiny", "--param", f"run_dir={run_dir}",
                       "--param", f"sft_model={sft['model_dir']}", "--param", f"data={corpus}")
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1)
    _prefect(env, "worker", "start", "--pool", "aft-pool", "--run-once", timeout=HANG_S)

    inspected = _prefect(env, "flow-run", "inspect", flow_run_id)
    assert "COMPLETED" in inspected, inspected
    sweep = json.loads((run_dir / "sweep.json").read_text())
    assert sweep["failed"] == [] and len(sweep["branches"]) == 2
    for branch in sweep["branches"]:
        assert (run_dir / "branches" / branch["branch_id"] / "result.json").exists()
    assert len(list((run_dir / "comet").glob("*.zip"))) == 2
