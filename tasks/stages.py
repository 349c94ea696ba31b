"""Thin Prefect tasks over aft_core: each calls one library entry point and passes paths and small dicts.

Caching (`StageCache`, a Prefect cache policy): an SFT or branch result is persisted in the run folder
and keyed by the stage, its config hash and the run folder, so a rerun of a flow (a new run with the
same parameters, or `prefect flow-run retry`) executes no completed work again. A stage whose result
file is missing (deleted, or interrupted) refreshes its cache: it runs, resuming from its last checkpoint.

Retries: training and evaluation tasks retry once, after TRANSIENT_RETRY_DELAY_S, on a failure that
may pass (out of memory, a full disk, a lost connection); a retried training resumes from its last
checkpoint. Bad input (AftInputError) and other errors fail at once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import CachePolicy

from aft_core.attractors import AttractorThresholds
from aft_core.config import AFTConfig, SFTConfig, config_id, from_dict
from aft_core.errors import AftInputError
from aft_core.io import write_json_atomic, write_text_atomic
from aft_core.layout import RunLayout, verdict_fields

TRANSIENT_RETRIES = 1
TRANSIENT_RETRY_DELAY_S = 5


class DataCheckFailed(RuntimeError):
    """The corpus failed its great-expectations suites; no training was started."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - called outside a run (e.g. from a plain test)
        return logging.getLogger("aft")


TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN}  # full disk or quota, I/O hiccup


def is_transient(error: BaseException) -> bool:
    """A failure a retry may get past: memory, disk space, connection; not bad input, not a missing file, not a bug."""
    if isinstance(error, AftInputError):
        return False
    if isinstance(error, (MemoryError, ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS
    return "out of memory" in str(error).lower()  # torch.cuda.OutOfMemoryError and its CPU cousins


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry only transient failures."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


RETRY = dict(
    retries=TRANSIENT_RETRIES, retry_delay_seconds=TRANSIENT_RETRY_DELAY_S, retry_condition_fn=retry_if_transient
)


@dataclass
class StageCache(CachePolicy):
    """Cache key of a training stage (`sft` or `branch`): the stage, its config hash and its run folder."""

    stage: str = "branch"

    def compute_key(
        self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        run = RunLayout(Path(inputs["run_dir"]).resolve())
        if self.stage == "sft":
            config_hash = config_id(from_dict(SFTConfig, inputs["config"], "sft"))
        else:
            config_hash = inputs["branch_id"]
        folder = hashlib.sha256(str(run.root).encode()).hexdigest()[:8]
        return f"aft-{self.stage}-{config_hash}-{folder}"


def with_stage_storage(stage: Any, run_dir: str | Path, branch_id: str | None = None) -> Any:
    """`stage` (train_sft, or train_branch for `branch_id`) with its result persisted in the run folder. The
    cache is refreshed when the stage's own result file is missing: a record the disk contradicts (a deleted
    or unfinished stage) is never read; the stage runs, resuming from its last checkpoint."""
    run = RunLayout(Path(run_dir).resolve())
    folder = run.sft if branch_id is None else run.branch(branch_id)
    return stage.with_options(result_storage=run.task_results, refresh_cache=not folder.finished())


@contextmanager
def branch_processes(parallel: int) -> Iterator[Callable[[Any, dict[str, Any]], Any]]:
    """`submit(task, parameters)` for a sweep's in-process branches. With `parallel` > 1 each branch runs in a
    process of its own (Prefect's ProcessPoolTaskRunner), the cores shared among them (AFT_THREADS, which the
    spawned processes inherit): sampling a branch is bound by per-token latency, so two branches on one core each
    finish sooner than one after the other on two. With 1, in this process (the task's own submit), as before."""
    if parallel <= 1:
        yield lambda stage, parameters: stage.submit(**parameters)
        return
    import os

    from prefect.task_runners import ProcessPoolTaskRunner

    from aft_core.models import torch_threads

    environment = {"AFT_THREADS": str(max(1, torch_threads() // parallel))}  # this process trains nothing meanwhile
    temporary_api = temporary_server_api()
    if temporary_api is not None:  # the branch processes report to this run's server instead of starting their own
        environment["PREFECT_API_URL"] = temporary_api
    before = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        with ProcessPoolTaskRunner(max_workers=parallel) as runner:
            yield lambda stage, parameters: runner.submit(stage, parameters)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def temporary_server_api() -> str | None:
    """The API address of the temporary server this process started (Prefect's ephemeral mode), or None when a
    server is configured (PREFECT_API_URL) or none was started.

    Spawned processes inherit the environment, not the parent's temporary server: without its address each starts
    a server of its own (about 7 s), and the task runs it records are lost with it when the process ends."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance get_client() started, by Prefect's one-per-port registry
    return server.api_url if server.running else None


# --- data ------------------------------------------------------------------------------------------


@task(name="prepare-corpus")
def prepare_corpus(run_dir: str, data: str, dialogues: int, seed: int) -> dict[str, Any]:
    """The corpus path every stage reads: the user's; the hold-out of a single-split MultiWOZ file (in
    run_dir/data, links and dialogue lists, nothing copied); or the built-in TownInfo corpus generated there."""
    from aft_core.data.corpus import hold_out_splits, load_corpus
    from aft_core.data.towninfo import generate_towninfo

    run = RunLayout(run_dir)
    path = data or str(generate_towninfo(run.data, dialogues=dialogues, seed=seed))
    corpus = load_corpus(path)
    if len(corpus.examples) == 1:
        path = str(run.held_out_data)
        record = hold_out_splits(data, path)
        _logger().info(
            "%s holds one split: divided by dialogue into %s (%s)", data, record["dialogues"], record["rule"]
        )
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
    out = RunLayout(run_dir).checks
    write_json_atomic(out / "report.json", report)
    markdown = report_markdown(report)
    write_text_atomic(out / "report.md", markdown)
    create_markdown_artifact(key="aft-data-checks", markdown=markdown, description="great-expectations data checks")
    if not report["success"]:
        summary = failure_summary(report)
        _logger().error("data checks failed: %s\n%s", summary, markdown)
        raise DataCheckFailed(f"data checks failed before training: {summary}. Report: {out / 'report.md'}")
    _logger().info(
        "data checks passed (%s)", ", ".join(f"{k}: {v['checked']} expectations" for k, v in report["suites"].items())
    )
    return {"success": True, "report": str(out / "report.json")}


# --- training --------------------------------------------------------------------------------------


@task(name="sft", cache_policy=StageCache(stage="sft"), persist_result=True, **RETRY)
def train_sft(run_dir: str, config: dict[str, Any]) -> dict[str, Any]:
    """Supervised fine-tuning into run_dir/sft (resumes an interrupted run; a finished one returns at once)."""
    from aft_core.sft import run_sft
    from tasks.tracking import ProgressLog

    cfg = from_dict(SFTConfig, config, "sft")
    tracker = ProgressLog(_logger(), "sft", cfg.max_steps)
    result = run_sft(cfg, RunLayout(run_dir).sft.root, tracker=tracker, progress=False)
    _logger().info(
        "SFT: %s steps, best dev loss %.4f, model %s", result["steps"], result["best_dev_loss"], result["model_dir"]
    )
    return {k: v for k, v in result.items() if k != "dev_history"}


@task(
    name="aft-branch",
    task_run_name="branch-{branch_id}",
    cache_policy=StageCache(stage="branch"),
    persist_result=True,
    **RETRY,
)
def train_branch(
    run_dir: str, branch_id: str, config: dict[str, Any], thresholds: dict[str, Any], tags: list[str]
) -> dict[str, Any]:
    """Train one AFT branch into run_dir/branches/<branch_id>, tracked as its own Comet experiment; returns
    its training outcome (its verdict is `judge_branch`'s)."""
    from aft_core.aft import run_branch
    from aft_core.tracking import MultiTracker
    from tasks.tracking import CometTracker, ProgressLog

    cfg = from_dict(AFTConfig, config, f"branch {branch_id}")
    if config_id(cfg) != branch_id:
        raise ValueError(f"branch id {branch_id} does not match its config (hash {config_id(cfg)})")
    out = RunLayout(run_dir).branch(branch_id)
    comet = CometTracker(run_dir, name=f"branch-{branch_id}", tags=[branch_id, *tags])
    tracker = MultiTracker(comet, ProgressLog(_logger(), f"branch {branch_id}", cfg.steps))
    try:
        result = run_branch(
            cfg,
            out.root,
            tracker=tracker,
            progress=False,
            thresholds=from_dict(AttractorThresholds, thresholds, "thresholds"),
        )
        comet.log_table("probe", out.probe)
    finally:
        comet.end()
    _logger().info(
        "branch %s: %s after %s steps (%.0f s)", branch_id, result["status"], result["steps"], result["seconds"]
    )
    return result


# How often a sweep asks the server whether a dispatched branch's flow run has ended: Prefect's default (5 s) adds
# 2.5 s on average to every branch; one request per branch every 2 s is nothing to the server.
BRANCH_POLL_SECONDS = 2.0


@task(name="dispatch-branch", task_run_name="dispatch-{branch_id}")
def dispatch_branch(
    deployment: str, run_dir: str, branch_id: str, config: dict[str, Any], thresholds: dict[str, Any], tags: list[str]
) -> dict[str, Any]:
    """Start the branch deployment for one branch and wait for its flow run to finish."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        deployment,
        timeout=None,
        poll_interval=BRANCH_POLL_SECONDS,
        flow_run_name=f"branch-{branch_id}",
        parameters={
            "run_dir": str(Path(run_dir).resolve()),
            "branch_id": branch_id,
            "config": config,
            "thresholds": thresholds,
            "tags": tags,
        },
    )
    if not flow_run.state or not flow_run.state.is_completed():
        raise RuntimeError(
            f"branch flow run {flow_run.name} ended {flow_run.state.name if flow_run.state else 'unknown'}: "
            f"{flow_run.state.message if flow_run.state else ''}"
        )
    # The outcome is read from the shared run folder, not from the flow run's state: a flow run's return value
    # is not persisted, so the API hands back a state without data.
    result_file = RunLayout(Path(run_dir).resolve()).branch(branch_id).result
    if not result_file.exists():
        raise RuntimeError(
            f"branch flow run {flow_run.name} completed but {result_file} does not exist here: the "
            "worker that ran it does not share this run folder (mount it at the same path everywhere)"
        )
    return json.loads(result_file.read_text())


@task(name="judge-branch", task_run_name="judge-{branch_id}")
def judge_branch(run_dir: str, branch_id: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    """Label every checkpoint of a trained branch and pick its ★ (re-run on every sweep, so new thresholds
    apply without retraining); returns the verdict without its per-checkpoint labels."""
    from aft_core.judging import judge_branch as judge

    verdict = judge(RunLayout(run_dir).branch(branch_id).root, from_dict(AttractorThresholds, thresholds, "thresholds"))
    _logger().info(
        "branch %s judged: final label %s, healthy until step %s, ★ step %s",
        branch_id,
        verdict["final_label"],
        verdict["healthy_until"],
        verdict["primary_step"],
    )
    return verdict_fields(verdict)


# --- evaluation ------------------------------------------------------------------------------------


@task(name="evaluate-test", **RETRY)
def evaluate_test(run_dir: str, systems: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Greedy test evaluation of every system; writes run_dir/evaluation/{per_example.parquet,table.json}."""
    from aft_core.config import EvalConfig
    from aft_core.evaluation import evaluate_systems

    cfg = from_dict(EvalConfig, config, "evaluation")
    table = evaluate_systems(systems, cfg, RunLayout(run_dir).evaluation.root, report_progress=_logger().info)
    _logger().info(
        "test evaluation: %d systems on %d %s examples (%.1f examples/s)",
        len(table["rows"]),
        table["examples"],
        table["split"],
        table["examples_per_second"],
    )
    return table


@task(name="converse", **RETRY)
def converse(run_dir: str, systems: dict[str, dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """SFT and each branch's ★ and last checkpoint in closed-loop conversations with the user simulator; writes
    run_dir/conversations/{conversations.jsonl,table.json}."""
    from aft_core.config import ConversationConfig
    from aft_core.dialogue.closed_loop import converse_systems

    cfg = from_dict(ConversationConfig, config, "conversation")
    table = converse_systems(
        systems,
        cfg,
        RunLayout(run_dir).conversations.root,
        on_system=lambda name: _logger().info("conversations: %s", name),
    )
    if "skipped" in table:
        _logger().info("closed-loop conversations: not run (%s)", table["skipped"])
    else:
        _logger().info(
            "closed-loop conversations: %d systems x %d goals x %s",
            len(next(iter(table["rows"].values()))),
            table["goals"],
            "/".join(table["modes"]),
        )
    return {k: v for k, v in table.items() if k != "rows"}


@task(name="qualitative-pairs", **RETRY)
def qualitative_pairs(run_dir: str) -> dict[str, Any]:
    """Choose the report's qualitative pairs and compute their attention maps (evaluation/qualitative.json)."""
    from aft_core.evaluation import qualitative_comparison

    chosen = qualitative_comparison(RunLayout(run_dir))
    _logger().info("qualitative pairs: %d, SFT against %s", len(chosen["pairs"]), chosen["star"] or "no ★")
    return {"star": chosen["star"], "pairs": [p["example_id"] for p in chosen["pairs"]]}


@task(name="build-report")
def build_report(run_dir: str) -> str:
    """The self-contained HTML report of the run, linked from a Prefect artifact."""
    from prefect.artifacts import create_link_artifact

    from aft_core.report import build_report as build

    path = build(run_dir).resolve()
    create_link_artifact(
        key="aft-report",
        link=path.as_uri(),
        link_text="AFT report (open locally)",
        description=f"report of {run_dir}: Table 1, training dynamics, sweep grid, qualitative pairs",
    )
    _logger().info("report: %s", path)
    return str(path)
