"""Faults: a branch killed with SIGKILL resumes exactly, divergence ends a branch cleanly, a run folder
is held by one run at a time, and no pickle is ever loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import ROOT, branch_config
from safetensors.torch import load_file

from aft_core.aft import run_branch
from aft_core.errors import AftInputError
from aft_core.faults import FAULT_ENV
from aft_core.io import LOCK_FILE, run_lock
from aft_core.judging import judge_branch
from aft_core.layout import BranchLayout

AFT = str(Path(sys.executable).with_name("aft"))


def _branch_args(sft_model: str, data: str, out: Path) -> list[str]:
    return [
        AFT,
        "train-branch",
        "--sft",
        sft_model,
        "--data",
        data,
        "--out",
        str(out),
        "--steps",
        "12",
        "--checkpoint-every",
        "4",
        "--probe-size",
        "8",
        "--batch-size",
        "4",
        "--k",
        "2",
        "--max-new-tokens",
        "12",
        "--max-source-tokens",
        "96",
        "--learning-rate",
        "1e-3",
        "--quiet",
        "--early-stop-checkpoints",
        "0",
    ]  # the run must reach step 12, however the tiny model fares


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,adapter",
    [("seq2seq", "none"), ("causal", "none"), ("seq2seq", "lora"), ("causal", "lora"), ("seq2seq", "self_play")],
)
def test_sigkill_mid_training_resumes_to_the_same_weights_and_probe(
    request, towninfo_dir, tmp_path, monkeypatch, family, adapter
):
    """The kill lands at a named point (after step 6's update, between the checkpoints at 4 and 8), not after a
    sleep, so the test holds at any machine speed. Both model families, full weights or a LoRA adapter (with
    gradient checkpointing), and a self-play branch killed mid-conversation (its buffer is fresh at 0 and 8, so
    the checkpoint at 4 holds live conversations): each resumes exactly. Only the killed run needs a process of
    its own; the straight run and the resume call the same `aft train-branch` entry point in this process, on
    one thread as it has."""
    from aft_core.cli import main

    sft_model = request.getfixturevalue("sft_model" if family == "seq2seq" else "causal_sft_model")
    memory = {
        "none": [],
        "lora": ["--adapter", "lora", "--lora-rank", "4", "--gradient-checkpointing", "true"],
        "self_play": ["--rollout", "self_play", "--self-play-conversations", "6", "--self-play-refresh-every", "8"],
    }[adapter]
    monkeypatch.setenv("AFT_THREADS", "1")
    threads = torch.get_num_threads()
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(
        _branch_args(sft_model, str(towninfo_dir), killed) + memory,
        env={**os.environ, FAULT_ENV: "after_update:6"},
        capture_output=True,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert not (killed / "result.json").exists()
    assert sorted(p.name for p in (killed / "checkpoints").iterdir() if not p.name.startswith(".")) == ["step-0000004"]
    assert len(BranchLayout(killed).steps_log.read_text().splitlines()) == 4  # steps 5 and 6 died with the process
    if adapter == "self_play":  # the checkpoint the resume starts from holds conversations in progress
        state = json.loads((killed / "checkpoints" / "step-0000004" / "state.json").read_text())["trainer"]
        assert sum(len(slot["replies"]) for slot in state["self_play"]["slots"]) > 0
    try:
        for out in (straight, killed):
            assert main(_branch_args(sft_model, str(towninfo_dir), out)[1:] + memory) == 0
    finally:
        torch.set_num_threads(threads)

    a = load_file(straight / "weights" / "step-0000012.safetensors")
    b = load_file(killed / "weights" / "step-0000012.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(("lora_" in k) == (adapter == "lora") for k in a)  # an adapter's checkpoint holds the adapter only
    pd.testing.assert_frame_equal(
        pd.read_parquet(straight / "probe.parquet"), pd.read_parquet(killed / "probe.parquet")
    )
    pd.testing.assert_frame_equal(
        pd.read_parquet(straight / "steps.parquet"), pd.read_parquet(killed / "steps.parquet")
    )


def test_truncated_checkpoint_is_named_and_the_previous_one_used(sft_model, towninfo_dir, tmp_path, caplog):
    cfg = branch_config(sft_model, towninfo_dir, steps=6)
    assert run_branch(cfg, tmp_path / "b", progress=False, stop_after=4) == {"interrupted_at": 4}
    newest = tmp_path / "b" / "checkpoints" / "step-0000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write
    result = run_branch(cfg, tmp_path / "b", progress=False)
    assert "step-0000004 is damaged" in caplog.text
    assert result["steps"] == 6 and len(pd.read_parquet(tmp_path / "b" / "steps.parquet")) == 6


def test_divergence_ends_the_branch_with_its_evidence(sft_model, towninfo_dir, tmp_path, monkeypatch):
    import aft_core.aft

    real = aft_core.aft.aft_step_loss

    def poisoned(*args, **kwargs):
        parts, metrics = real(*args, **kwargs)
        parts["loss"] = parts["loss"] * float("nan")
        return parts, metrics

    monkeypatch.setattr(aft_core.aft, "aft_step_loss", poisoned)
    before = load_file(str(Path(sft_model) / "model.safetensors"))
    result = run_branch(
        branch_config(sft_model, towninfo_dir, steps=20, max_nonfinite_steps=3), tmp_path / "d", progress=False
    )
    assert result["status"] == "diverged" and result["steps"] == 3 and result["skipped_nonfinite"] == 3
    assert judge_branch(tmp_path / "d")["final_label"] == "semantic_incoherence"
    last = json.loads((tmp_path / "d" / "attractors.json").read_text())["checkpoints"][-1]
    assert last["evidence"]["semantic_incoherence"]["nonfinite_steps_in_a_row"] == 3.0
    after = load_file(tmp_path / "d" / "weights" / "step-0000003.safetensors")
    shared = set(before) & set(after)
    assert shared and all(torch.equal(before[k], after[k]) for k in shared)  # no update was applied
    steps = pd.read_parquet(tmp_path / "d" / "steps.parquet")
    assert steps["nonfinite"].all()


def test_run_folder_is_held_by_one_run_and_a_stale_lock_is_taken_over(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lock = tmp_path / LOCK_FILE
        import socket

        lock.write_text(
            json.dumps(
                {
                    "owner": "aft-sweep flow run 'other'",
                    "pid": sleeper.pid,
                    "host": socket.gethostname(),
                    "since": "earlier",
                }
            )
        )
        with pytest.raises(AftInputError, match=rf"in use by aft-sweep flow run 'other' \(pid {sleeper.pid}"):
            with run_lock(tmp_path, "me"):
                pass
        assert json.loads(lock.read_text())["pid"] == sleeper.pid  # the owner's lock is untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(tmp_path, "me"):  # the owner is gone: the stale lock is taken over
        assert json.loads(lock.read_text())["owner"] == "me"
        with run_lock(tmp_path, "me again"):  # re-entrant in one process (pipeline → sweep)
            pass
    assert not lock.exists()


def test_no_pickle_is_ever_loaded():
    """Checkpoints are safetensors + JSON; any torch.load must pass weights_only=True."""
    offenders = []
    for path in [
        *ROOT.glob("aft_core/**/*.py"),
        *ROOT.glob("tasks/*.py"),
        *ROOT.glob("flows/*.py"),
        *ROOT.glob("bench/*.py"),
    ]:
        text = path.read_text()
        for needle in ("pickle.load", "torch.load(", "joblib.load", "pd.read_pickle"):
            for line in text.splitlines():
                if needle in line and not (needle == "torch.load(" and "weights_only=True" in line):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


def test_a_same_machine_rerun_is_exact_and_every_run_folder_records_what_its_numbers_depend_on(towninfo_dir, tmp_path):
    """SFT and a branch, each run twice from scratch in two folders: bit-identical weights and probe table;
    provenance.json names the torch build, CPU capability, BLAS, threads and seeds of each start and resume."""
    from aft_core.config import SFTConfig
    from aft_core.sft import run_sft

    sft_cfg = SFTConfig(
        data=str(towninfo_dir),
        model="tiny",
        max_steps=20,
        eval_every=10,
        warmup_steps=2,
        dev_examples=16,
        batch_size=8,
        max_source_tokens=96,
        seed=7,
    )
    models = [run_sft(sft_cfg, tmp_path / f"sft-{n}", progress=False)["model_dir"] for n in "ab"]
    first, second = (load_file(str(Path(m) / "model.safetensors")) for m in models)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    cfg = branch_config(models[0], towninfo_dir, steps=4, seed=5)
    for n in "ab":
        run_branch(cfg, tmp_path / f"branch-{n}", progress=False)
    a, b = (load_file(tmp_path / f"branch-{n}" / "weights" / "step-0000004.safetensors") for n in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "branch-a" / "probe.parquet"),
        pd.read_parquet(tmp_path / "branch-b" / "probe.parquet"),
    )

    sft_record = json.loads((tmp_path / "sft-a" / "provenance.json").read_text())
    entry = sft_record["runs"][0]
    assert entry["seeds"] == {"sft": 7} and entry["started_at_step"] == 0
    assert entry["torch"] == torch.__version__ and entry["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert entry["blas"] and entry["blas"] != "unknown" and entry["torch_threads"] == torch.get_num_threads()
    assert {"cpu", "python", "gpu", "cuda", "libraries"} <= set(entry)

    resumed = tmp_path / "resumed"
    assert run_branch(
        branch_config(models[0], towninfo_dir, steps=4, seed=5), resumed, progress=False, stop_after=2
    ) == {"interrupted_at": 2}
    run_branch(branch_config(models[0], towninfo_dir, steps=4, seed=5), resumed, progress=False)
    record = json.loads((resumed / "provenance.json").read_text())
    assert [r["started_at_step"] for r in record["runs"]] == [0, 2] and record["same_machine_throughout"]
    assert record["runs"][0]["seeds"] == {"aft": 5}
