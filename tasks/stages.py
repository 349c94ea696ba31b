"""Thin Prefect tasks over aft_core: each calls one library entry point and passes paths and small dicts.

Caching: SFT and branch results are persisted under `<run_dir>/.prefect-results` and keyed by the
hash of their full config (and the run folder), so a rerun of a flow (a new run with the same
parameters, or `prefect flow-run retry`) does not execute completed work again. A result on disk
is the truth: when a branch folder holds no result.json the cache is refreshed, so a deleted or
unfinished branch is trained (resuming from its last checkpoint) rather than read from a stale cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from aft_core.attractors import AttractorThresholds
from aft_core.config import AFTConfig, SFTConfig, config_id, from_dict
from aft_core.io import write_json_atomic, write_text_atomic

RESULTS_FOLDER = ".prefect-results"


class DataCheckFailed(RuntimeError):
    """The corpus failed its great-expectations suites; no training was started."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - called outside a run (e.g. from a plain test)
        return logging.getLogger("aft")


def result_storage(run_dir: str | Path) -> Path:
    """Where cached task results live: inside the run folder, so the cache travels with it."""
    return Path(run_dir).resolve() / RESULTS_FOLDER


def run_key(run_dir: str | Path, kind: str, config_hash: str) -> str:
    """Cache key: the stage, its config hash and the run folder it writes to."""
    folder = hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]
    return f"aft-{kind}-{config_hash}-{folder}"


def cached(stage: Any, run_dir: str | Path, result_file: str | Path) -> Any:
    """`stage` with its results cached in the run folder; the cache is refreshed when `result_file`,
    the stage's own mark of completion on disk, is missing (never trust a cache the disk contradicts)."""
    return stage.with_options(result_storage=result_storage(run_dir), refresh_cache=not Path(result_file).exists())


def branch_dir(run_dir: str | Path, branch_id: str) -> Path:
    return Path(run_dir) / "branches" / branch_id


def branch_complete(run_dir: str | Path, branch_id: str) -> bool:
    return (branch_dir(run_dir, branch_id) / "result.json").exists()


# --- data ------------------------------------------------------------------------------------------

@task(name="prepare-corpus")
def prepare_corpus(run_dir: str, data: str, dialogues: int, seed: int) -> dict[str, Any]:
    """The corpus path every stage reads: the user's; the hold-out of a single-split MultiWOZ file (in
    run_dir/data, links and dialogue lists, nothing copied); or the built-in TownInfo corpus generated there."""
    from aft_core.data.corpus import hold_out_splits, load_corpus
    from aft_core.data.towninfo import generate_towninfo

    path = data or str(generate_towninfo(Path(run_dir) / "data", dialogues=dialogues, seed=seed))
    corpus = load_corpus(path)
    if len(corpus.examples) == 1:
        path = str(Path(run_dir) / "data" / "held-out")
        record = hold_out_splits(data, path)
        _logger().info("%s holds one split: divided by dialogue into %s (%s)", data, record["dialogues"], record["rule"])
        corpus = load_corpus(path)
    stats = corpus.stats()
    _logger().info("corpus %s: %s", path, json.dumps({k: stats[k] for k in ("format", "dialogues", "examples")}))
    return {"data": path, "stats": stats}


@task(name="check-data")
def check_data(run_dir: str, data: str, checks: dict[str, Any]) -> dict[str, Any]:
    """Run the great-expectations suites; a failure raises DataCheckFailed naming every failed expectation."""
    from aft_core.data.corpus import load_corpus
    from data_checks.suites import DataCheckConfig, failure_summary, report_markdown, run_checks

    report = run_checks(load_corpus(data), from_dict(DataCheckConfig, checks, "checks"))
    out = Path(run_dir) / "checks"
    write_json_atomic(out / "report.json", report)
    markdown = report_markdown(report)
    write_text_atomic(out / "report.md", markdown)
    create_markdown_artifact(key="aft-data-checks", markdown=markdown, description="great-expectations data checks")
    if not report["success"]:
        summary = failure_summary(report)
        _logger().error("data checks failed: %s\n%s", summary, markdown)
        raise DataCheckFailed(f"data checks failed before training: {summary}. Report: {out / 'report.md'}")
    _logger().info("data checks passed (%s)", ", ".join(f"{k}: {v['checked']} expectations"
                                                        for k, v in report["suites"].items()))
    return {"success": True, "report": str(out / "report.json")}


# --- training --------------------------------------------------------------------------------------

def _sft_key(context: Any, parameters: dict[str, Any]) -> str:
    cfg = from_dict(SFTConfig, parameters["config"], "sft")
    return run_key(parameters["run_dir"], "sft", config_id(cfg))


@task(name="sft", cache_key_fn=_sft_key, persist_result=True)
def train_sft(run_dir: str, config: dict[str, Any]) -> dict[str, Any]:
    """Supervised fine-tuning into run_dir/sft (resumes an interrupted run; a finished one returns at once)."""
    from aft_core.sft import run_sft

    from tasks.tracking import ProgressLog

    cfg = from_dict(SFTConfig, config, "sft")
    tracker = ProgressLog(_logger(), "sft", cfg.max_steps)
    result = run_sft(cfg, Path(run_dir) / "sft", tracker=tracker, progress=False)
    _logger().info("SFT: %s steps, best dev loss %.4f, model %s", result["steps"], result["best_dev_loss"],
                   result["model_dir"])
    return {k: v for k, v in result.items() if k != "dev_history"}


def _branch_key(context: Any, parameters: dict[str, Any]) -> str:
    return run_key(parameters["run_dir"], "branch", parameters["branch_id"])


@task(name="aft-branch", task_run_name="branch-{branch_id}", cache_key_fn=_branch_key, persist_result=True)
def train_branch(run_dir: str, branch_id: str, config: dict[str, Any], thresholds: dict[str, Any],
                 tags: list[str]) -> dict[str, Any]:
    """One AFT branch into run_dir/branches/<branch_id>, tracked as its own Comet experiment."""
    from aft_core.aft import run_branch
    from aft_core.tracking import MultiTracker
    from tasks.tracking import CometTracker, ProgressLog

    cfg = from_dict(AFTConfig, config, f"branch {branch_id}")
    if config_id(cfg) != branch_id:
        raise ValueError(f"branch id {branch_id} does not match its config (hash {config_id(cfg)})")
    out = branch_dir(run_dir, branch_id)
    comet = CometTracker(run_dir, name=f"branch-{branch_id}", tags=[branch_id, *tags])
    tracker = MultiTracker(comet, ProgressLog(_logger(), f"branch {branch_id}", cfg.steps))
    try:
        result = run_branch(cfg, out, tracker=tracker, progress=False,
                            thresholds=from_dict(AttractorThresholds, thresholds, "thresholds"))
        comet.log_table("probe", out / "probe.parquet")
        comet.log_table("attractors", out / "attractors.json")
    finally:
        comet.end()
    _logger().info("branch %s: %s, final label %s, ★ step %s", branch_id, result["status"],
                   result["final_label"], result["primary_step"])
    return result


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


@task(name="classify-branch", task_run_name="classify-{branch_id}")
def classify_branch(run_dir: str, branch_id: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Label every checkpoint of a finished branch and pick its ★ (re-runnable with new thresholds)."""
    from aft_core.aft import reclassify_branch

    return reclassify_branch(branch_dir(run_dir, branch_id), from_dict(AttractorThresholds, thresholds, "thresholds"))


# --- evaluation ------------------------------------------------------------------------------------

@task(name="evaluate-test")
def evaluate_test(run_dir: str, systems: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Greedy test evaluation of every system; writes run_dir/evaluation/{per_example.parquet,table.json}."""
    from aft_core.evaluation import EvalConfig, evaluate_systems

    cfg = from_dict(EvalConfig, config, "evaluation")
    table = evaluate_systems(systems, cfg, Path(run_dir) / "evaluation", report_progress=_logger().info)
    _logger().info("test evaluation: %d systems on %d %s examples (%.1f examples/s)", len(table["rows"]),
                   table["examples"], table["split"], table["examples_per_second"])
    return table


@task(name="build-report")
def build_report(run_dir: str) -> str:
    """The self-contained HTML report of the run, linked from a Prefect artifact."""
    from prefect.artifacts import create_link_artifact

    from aft_core.report import build_report as build

    path = build(run_dir).resolve()
    create_link_artifact(key="aft-report", link=path.as_uri(), link_text="AFT report (open locally)",
                         description=f"report of {run_dir}: Table 1, training dynamics, sweep grid, qualitative pairs")
    _logger().info("report: %s", path)
    return str(path)
