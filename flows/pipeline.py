"""`aft-pipeline`: validated data → SFT → sweep → attractor classification → test evaluation → summary.

Every parameter is checked before any work (`check_parameters`): a bad one fails the run at once,
naming its path and the fix, with nothing written.

Run folder (`params.run_dir`):
    pipeline.json     the parameters of the latest run
    data/             the built-in TownInfo corpus (when no corpus is given), or the hold-out of a
                      single-split MultiWOZ file (links to it plus the held-out dialogue lists)
    checks/           great-expectations report (json and markdown)
    sft/              the SFT run (skipped when finished for the same config)
    branches/<id>/    one folder per sweep branch (see aft_core/aft.py)
    sweep.json        every branch's outcome
    evaluation/       per_example.parquet, table.json, table1.md (SFT, each branch's ★ and last checkpoint)
    summary.json, summary.md, comet/   the summary, and offline Comet archives
    report.html       the self-contained report (Table 1, dynamics, sweep grid, qualitative pairs)
A data-check failure stops the run before any training. A failing branch does not stop the
others: the completed ones are still classified and evaluated, then the run ends Failed naming it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from aft_core.io import run_lock, write_json_atomic
from flows.params import PipelineParams, check_parameters
from flows.sweep import SweepBranchesFailed, _flow_run_name, aft_sweep
from tasks.stages import (branch_dir, build_report, cached, check_data, classify_branch, evaluate_test, prepare_corpus,
                          train_sft)
from tasks.summary import summarize


def evaluation_systems(sft_model: str, branches: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """SFT, then each completed branch's ★ (when it has one) and last checkpoint."""
    from aft_core.evaluation import branch_systems

    systems: dict[str, dict[str, Any]] = {"SFT": {"model": sft_model}}
    for b in branches:
        systems.update(branch_systems(sft_model, b["folder"], b, name=b["branch_id"]))
    return systems


@flow(name="aft-pipeline", flow_run_name="pipeline-{params.run_dir}")
def aft_pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    check_parameters(params)  # before the lock, which creates the run folder
    with run_lock(params.run_dir, f"aft-pipeline flow run {_flow_run_name()}"):
        return _pipeline(params)


def _pipeline(params: PipelineParams) -> dict[str, Any]:
    logger = get_run_logger()
    run_dir = params.run_dir
    write_json_atomic(Path(run_dir) / "pipeline.json", params.model_dump())

    corpus = prepare_corpus(run_dir, params.data, params.towninfo_dialogues, params.towninfo_seed)
    data = corpus["data"]
    check_data(run_dir, data, dataclasses.asdict(params.check_config()))

    sft_config = dataclasses.asdict(params.sft_config(data).validate("sft"))
    sft = cached(train_sft, run_dir, Path(run_dir) / "sft" / "sft_result.json")(run_dir, sft_config)

    sweep_state = aft_sweep(run_dir, sft["model_dir"], data, params.sweep, params.sft.max_source_tokens,
                            return_state=True)
    sweep_failed = sweep_state.is_failed()
    sweep = sweep_state.result(raise_on_failure=False)
    if isinstance(sweep, BaseException):
        if not isinstance(sweep, SweepBranchesFailed):
            raise sweep  # the sweep itself broke (not one of its branches): nothing to evaluate
        sweep = json.loads((Path(run_dir) / "sweep.json").read_text())

    thresholds = params.sweep.resolved_thresholds()
    # Re-classified here from the probe tables, so new thresholds apply without retraining.
    branches = [{**row, **classify_branch(run_dir, row["branch_id"], thresholds),
                 "folder": str(branch_dir(run_dir, row["branch_id"]))}
                for row in sweep["branches"] if row["status"] != "failed"]
    failed = [row for row in sweep["branches"] if row["status"] == "failed"]

    evaluation = dataclasses.asdict(params.evaluation_config(data))
    table = evaluate_test(run_dir, evaluation_systems(sft["model_dir"], branches), evaluation)

    summary = summarize(run_dir, params.model_dump(), corpus, sft, branches, failed, table)
    report = build_report(run_dir)
    logger.info("results: %s (summary %s, report %s)", run_dir, Path(run_dir) / "summary.md", report)
    if sweep_failed:
        raise SweepBranchesFailed(f"{len(failed)} branch(es) failed: {', '.join(r['branch_id'] for r in failed)}; "
                                  f"the others were evaluated (see {Path(run_dir) / 'summary.md'}). "
                                  "Rerun the pipeline to retry only the failed branches.")
    return summary
