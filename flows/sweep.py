"""`aft-sweep`: one AFT branch per grid point; `aft-branch`: one branch as its own flow run.

A branch is identified by the hash of its full config; the id names its folder
(`<run_dir>/branches/<id>`), its Prefect task run, its Comet experiment and its cache key.
A failing branch does not stop the others; the sweep ends Failed naming the failed branches.
Rerunning the sweep executes only branches without a result (completed ones are cache hits; an
interrupted one resumes from its last checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from aft_core.io import run_lock, write_json_atomic
from flows.params import SweepParams, branch_configs
from tasks.stages import branch_complete, branch_dir, cached, train_branch


class SweepBranchesFailed(RuntimeError):
    """Some branches of a sweep failed; the others completed."""


def _branch_task(run_dir: str, branch_id: str):
    """The cached branch task; the cache is refreshed when the branch's folder holds no result."""
    return cached(train_branch, run_dir, branch_dir(run_dir, branch_id) / "result.json")


@flow(name="aft-branch", flow_run_name="branch-{branch_id}")
def aft_branch(run_dir: str, branch_id: str, config: dict[str, Any], thresholds: dict[str, Any],
               tags: list[str]) -> dict[str, Any]:
    """One branch as its own flow run (what `runner=deployment` starts per grid point)."""
    return _branch_task(run_dir, branch_id)(run_dir, branch_id, config, thresholds, tags)


@task(name="dispatch-branch", task_run_name="dispatch-{branch_id}")
def dispatch_branch(deployment: str, run_dir: str, branch_id: str, config: dict[str, Any],
                    thresholds: dict[str, Any], tags: list[str]) -> dict[str, Any]:
    """Start the branch deployment for one branch and wait for its flow run to finish."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, timeout=None, flow_run_name=f"branch-{branch_id}",
                              parameters={"run_dir": str(Path(run_dir).resolve()), "branch_id": branch_id,
                                          "config": config, "thresholds": thresholds, "tags": tags})
    if not flow_run.state or not flow_run.state.is_completed():
        raise RuntimeError(f"branch flow run {flow_run.name} ended {flow_run.state.name if flow_run.state else 'unknown'}: "
                           f"{flow_run.state.message if flow_run.state else ''}")
    # The outcome is read from the shared run folder, not from the flow run's state: a flow run's return value
    # is not persisted, so the API hands back a state without data.
    result_file = branch_dir(Path(run_dir).resolve(), branch_id) / "result.json"
    if not result_file.exists():
        raise RuntimeError(f"branch flow run {flow_run.name} completed but {result_file} does not exist here: the "
                           "worker that ran it does not share this run folder (mount it at the same path everywhere)")
    return json.loads(result_file.read_text())


@flow(name="aft-sweep", flow_run_name="sweep-{run_dir}")
def aft_sweep(run_dir: str, sft_model: str, data: str, params: SweepParams = SweepParams(),
              max_source_tokens: int = 192) -> dict[str, Any]:
    """Train every branch of the grid; returns (and writes to run_dir/sweep.json) each branch's outcome.

    `max_source_tokens` is the SFT run's source budget (the pipeline passes `sft.max_source_tokens`)."""
    branches = branch_configs(sft_model, data, params, max_source_tokens)  # a bad grid fails before the lock
    with run_lock(run_dir, f"aft-sweep flow run {_flow_run_name()}"):
        return _sweep(run_dir, branches, params)


def _flow_run_name() -> str:
    from prefect.runtime import flow_run

    return f"'{flow_run.name}' ({flow_run.id})"


def _sweep(run_dir: str, branches: list[dict[str, Any]], params: SweepParams) -> dict[str, Any]:
    logger = get_run_logger()
    thresholds = params.resolved_thresholds()
    logger.info("sweep of %d branches (%s runner): %s", len(branches), params.runner,
                ", ".join(f"{b['branch_id']} {b['grid']}" for b in branches))
    outcomes: dict[str, Any] = {}
    todo = []
    for b in branches:
        if params.runner == "deployment" and not branch_complete(run_dir, b["branch_id"]):
            todo.append((b, dispatch_branch.submit(params.branch_deployment, run_dir, b["branch_id"], b["config"],
                                                   thresholds, b["tags"])))
        else:
            todo.append((b, None))
    # In-process branches run in waves of `parallel_branches` (2 CPU cores are busy with one).
    waves = [todo[i:i + params.parallel_branches] for i in range(0, len(todo), params.parallel_branches)]
    for wave in waves:
        submitted = [(b, future or _branch_task(run_dir, b["branch_id"]).submit(
            run_dir, b["branch_id"], b["config"], thresholds, b["tags"])) for b, future in wave]
        for b, future in submitted:
            future.wait()
            outcome = future.result(raise_on_failure=False)
            if isinstance(outcome, BaseException):
                outcomes[b["branch_id"]] = {"status": "failed", "error": f"{type(outcome).__name__}: {outcome}"}
                logger.error("branch %s %s failed: %s", b["branch_id"], b["grid"], outcome)
            else:
                outcomes[b["branch_id"]] = outcome

    rows = [{"branch_id": b["branch_id"], **b["grid"], **outcomes[b["branch_id"]]} for b in branches]
    summary = {"run_dir": run_dir, "branches": rows, "failed": [r["branch_id"] for r in rows if r["status"] == "failed"]}
    write_json_atomic(Path(run_dir) / "sweep.json", summary)
    create_table_artifact(key="aft-sweep-branches", table=[branch_table_row(r) for r in rows],
                          description=f"AFT sweep in {run_dir}")
    if summary["failed"]:
        named = "; ".join(f"{r['branch_id']} ({', '.join(f'{k}={r[k]}' for k in branches[0]['grid'])}): {r['error']}"
                          for r in rows if r["status"] == "failed")
        raise SweepBranchesFailed(f"{len(summary['failed'])} of {len(rows)} branches failed: {named}. "
                                  "Rerun the sweep to retry only these.")
    return summary


def branch_table_row(row: dict[str, Any]) -> dict[str, Any]:
    """The branch table of the artifacts: settings, status, ★ step, Δ at ★, final label."""
    def fmt(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) else ("" if value is None else value)

    keys = ("branch_id", "beta", "gamma", "eta_kl", "k", "status", "steps", "healthy_until", "primary_step",
            "primary_delta_focus", "primary_delta_bertscore", "primary_delta_entity_accuracy", "final_label", "error")
    extra = [k for k in row if k not in keys and k not in _RESULT_KEYS]
    return {k: fmt(row.get(k)) for k in (*keys[:5], *extra, *keys[5:])}


_RESULT_KEYS = {"folder", "nonfinite_run", "last_step", "last_delta_focus", "last_delta_bertscore", "last_delta_entity_accuracy",
                "skipped_nonfinite", "seconds", "bertscore_encoder", "bertscore_layer", "thresholds", "early_stop", "steps_saved"}
