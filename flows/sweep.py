"""`aft-sweep`: one AFT branch per grid point; `aft-branch`: one branch as its own flow run.

A branch is identified by the hash of its full config; the id names its folder
(`<run_dir>/branches/<id>`), its Prefect task run, its Comet experiment and its cache key.
A failing branch does not stop the others; the sweep ends Failed naming the failed branches.
Rerunning the sweep executes only branches without a result (completed ones are cache hits; an
interrupted one resumes from its last checkpoint). Every trained branch is then judged (labels, ★)
with the sweep's thresholds, so new thresholds apply to cached branches too. sweep.json records each
branch's grid point and training outcome; its verdict stays in the branch's own verdict file.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from aft_core.io import run_lock
from aft_core.layout import RunLayout
from flows.params import SweepParams, branch_configs
from tasks.stages import branch_processes, dispatch_branch, judge_branch, train_branch, with_stage_storage
from tasks.summary import branch_table_row


class SweepBranchesFailed(RuntimeError):
    """Some branches of a sweep failed; the others completed."""


@flow(name="aft-branch", flow_run_name="branch-{branch_id}")
def aft_branch(
    run_dir: str, branch_id: str, config: dict[str, Any], thresholds: dict[str, Any], tags: list[str]
) -> dict[str, Any]:
    """One branch as its own flow run (what `runner=deployment` starts per grid point)."""
    return with_stage_storage(train_branch, run_dir, branch_id)(run_dir, branch_id, config, thresholds, tags)


@flow(name="aft-sweep", flow_run_name="sweep-{run_dir}")
def aft_sweep(
    run_dir: str,
    sft_model: str,
    data: str,
    params: SweepParams = SweepParams(),  # noqa: B008 (Prefect's form reads it; never mutated)
    max_source_tokens: int = 192,
) -> dict[str, Any]:
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
    run = RunLayout(run_dir)
    thresholds = params.resolved_thresholds()
    logger.info(
        "sweep of %d branches (%s runner): %s",
        len(branches),
        params.runner,
        ", ".join(f"{b['branch_id']} {b['grid']}" for b in branches),
    )
    outcomes: dict[str, Any] = {}
    todo = []
    for b in branches:
        if params.runner == "deployment" and not run.branch(b["branch_id"]).finished():
            todo.append(
                (
                    b,
                    dispatch_branch.submit(
                        params.branch_deployment, run_dir, b["branch_id"], b["config"], thresholds, b["tags"]
                    ),
                )
            )
        else:
            todo.append((b, None))
    # In-process branches run in waves of `parallel_branches`: one at a time in this process, or several at once,
    # each in a process of its own with the cores shared among them (branch_processes).
    parallel = params.parallel_branches
    waves = [todo[i : i + parallel] for i in range(0, len(todo), parallel)]
    to_train = sum(f is None and not run.branch(b["branch_id"]).finished() for b, f in todo)  # not cache hits
    with branch_processes(parallel if to_train > 1 else 1) as submit:
        for wave in waves:
            submitted = [
                (
                    b,
                    future
                    or submit(
                        with_stage_storage(train_branch, run_dir, b["branch_id"]),
                        {
                            "run_dir": run_dir,
                            "branch_id": b["branch_id"],
                            "config": b["config"],
                            "thresholds": thresholds,
                            "tags": b["tags"],
                        },
                    ),
                )
                for b, future in wave
            ]
            _collect(submitted, outcomes, logger)
    return _judge(run, run_dir, branches, outcomes, thresholds)


def _collect(submitted: list[tuple[dict[str, Any], Any]], outcomes: dict[str, Any], logger: Any) -> None:
    """Wait for a wave of branches; a failed branch becomes a `failed` outcome, never an exception."""
    for b, future in submitted:
        future.wait()
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            outcomes[b["branch_id"]] = {"status": "failed", "error": f"{type(outcome).__name__}: {outcome}"}
            logger.error("branch %s %s failed: %s", b["branch_id"], b["grid"], outcome)
        else:
            outcomes[b["branch_id"]] = outcome


def _judge(
    run: RunLayout, run_dir: str, branches: list[dict[str, Any]], outcomes: dict[str, Any], thresholds: dict[str, Any]
) -> dict[str, Any]:
    """sweep.json, every trained branch judged, the branch table artifact; Failed naming the failed branches."""
    rows = [{"branch_id": b["branch_id"], **b["grid"], **outcomes[b["branch_id"]]} for b in branches]
    summary = {
        "run_dir": run_dir,
        "branches": rows,
        "failed": [r["branch_id"] for r in rows if r["status"] == "failed"],
    }
    run.write_sweep(summary)
    verdicts = {
        r["branch_id"]: judge_branch(run_dir, r["branch_id"], thresholds) for r in rows if r["status"] != "failed"
    }
    rows = [{**r, **verdicts.get(r["branch_id"], {})} for r in rows]
    summary = {**summary, "branches": rows}
    create_table_artifact(
        key="aft-sweep-branches", table=[branch_table_row(r) for r in rows], description=f"AFT sweep in {run_dir}"
    )
    if summary["failed"]:
        named = "; ".join(
            f"{r['branch_id']} ({', '.join(f'{k}={r[k]}' for k in branches[0]['grid'])}): {r['error']}"
            for r in rows
            if r["status"] == "failed"
        )
        raise SweepBranchesFailed(
            f"{len(summary['failed'])} of {len(rows)} branches failed: {named}. Rerun the sweep to retry only these."
        )
    return summary
