"""`aft-sweep`: one AFT branch per grid point; `aft-branch`: one branch as its own flow run.

A branch is identified by the hash of its full config; the id names its folder
(`<run_dir>/branches/<id>`), its Prefect task run, its Comet experiment and its cache key.
A failing branch does not stop the others; the sweep ends Failed naming the failed branches.
Rerunning the sweep executes only branches without a result (completed ones are cache hits; an
interrupted one resumes from its last checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from aft_core.io import run_lock, write_json_atomic
from flows.params import SweepParams, branch_configs
from tasks.stages import branch_complete, branch_dir, cached, dispatch_branch, train_branch
from tasks.summary import branch_table_row


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
