"""`aft-pipeline`: validated data → SFT → sweep (training, then judging) → test evaluation → conversations →
summary → report.

Every parameter is checked before any work (`check_parameters`): a bad one fails the run at once,
naming its path and the fix, with nothing written.

The run folder (`params.run_dir`) is aft_core.layout's RunLayout: pipeline.json, data/, checks/,
sft/, branches/<id>/, sweep.json, evaluation/, conversations/, provenance.json, summary.json, summary.md, comet/
and report.html.
A data-check failure stops the run before any training. A failing branch does not stop the
others: the completed ones are still judged and evaluated, then the run ends Failed naming it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger

from aft_core.io import run_lock, write_json_atomic
from aft_core.layout import RunLayout
from aft_core.provenance import record_provenance
from flows.params import PipelineParams, check_parameters, conversation_config
from flows.sweep import SweepBranchesFailed, _flow_run_name, aft_sweep
from tasks.stages import (
    build_report,
    check_data,
    converse,
    evaluate_test,
    prepare_corpus,
    qualitative_pairs,
    train_sft,
    with_stage_storage,
)
from tasks.summary import summarize


def evaluation_systems(
    run: RunLayout, sft_model: str, branch_ids: list[str], base_model: str | None = None
) -> dict[str, dict[str, Any]]:
    """SFT, the pretrained model SFT started from (Table 1's Base row, AFT_SPEC §7; none for a preset trained from
    scratch), then each judged branch's ★ (when it has one) and last checkpoint."""
    from aft_core.config import PRESETS as MODEL_PRESETS
    from aft_core.evaluation import branch_systems

    systems: dict[str, dict[str, Any]] = {"SFT": {"model": sft_model}}
    if base_model and base_model not in MODEL_PRESETS:
        systems["Base"] = {"model": base_model}
    for branch_id in branch_ids:
        systems.update(branch_systems(sft_model, run.branch(branch_id).root, name=branch_id))
    return systems


@flow(name="aft-pipeline", flow_run_name="pipeline-{params.run_dir}")
# Prefect builds the deployment form from the default instance, which nothing mutates
def aft_pipeline(params: PipelineParams = PipelineParams()) -> dict[str, Any]:  # noqa: B008
    check_parameters(params)  # before the lock, which creates the run folder
    with run_lock(params.run_dir, f"aft-pipeline flow run {_flow_run_name()}"):
        return _pipeline(params)


def _pipeline(params: PipelineParams) -> dict[str, Any]:
    logger = get_run_logger()
    run_dir = params.run_dir
    run = RunLayout(run_dir)
    write_json_atomic(run.parameters, params.model_dump())
    record_provenance(
        run.provenance,
        {"towninfo": params.towninfo_seed, "sft": params.sft.seed, "aft": params.sweep.branch.seed},
        step=0,
    )

    corpus = prepare_corpus(run_dir, params.data, params.towninfo_dialogues, params.towninfo_seed)
    data = corpus["data"]
    check_data(run_dir, data, dataclasses.asdict(params.check_config()))

    sft_config = dataclasses.asdict(params.sft_config(data).validate("sft"))
    sft = with_stage_storage(train_sft, run_dir)(run_dir, sft_config)

    sweep_state = aft_sweep(
        run_dir, sft["model_dir"], data, params.sweep, params.sft.max_source_tokens, return_state=True
    )
    sweep_failed = sweep_state.is_failed()
    sweep = sweep_state.result(raise_on_failure=False)
    if isinstance(sweep, BaseException):
        if not isinstance(sweep, SweepBranchesFailed):
            raise sweep  # the sweep itself broke (not one of its branches): nothing to evaluate
        sweep = {"branches": run.branch_rows()}  # the failed sweep judged its completed branches before failing

    branches = [row for row in sweep["branches"] if row["status"] != "failed"]
    failed = [row for row in sweep["branches"] if row["status"] == "failed"]

    evaluation = dataclasses.asdict(params.evaluation_config(data))
    table = evaluate_test(
        run_dir,
        evaluation_systems(run, sft["model_dir"], [b["branch_id"] for b in branches], params.sft.model),
        evaluation,
    )
    if params.conversation.run:
        converse(
            run_dir,
            evaluation_systems(run, sft["model_dir"], [b["branch_id"] for b in branches]),
            dataclasses.asdict(conversation_config(params, data)),
        )

    summary = summarize(run_dir, params.model_dump(), corpus, sft, branches, failed, table)
    qualitative_pairs(run_dir)
    report = build_report(run_dir)
    logger.info("results: %s (summary %s, report %s)", run_dir, run.summary_markdown, report)
    if sweep_failed:
        raise SweepBranchesFailed(
            f"{len(failed)} branch(es) failed: {', '.join(r['branch_id'] for r in failed)}; "
            f"the others were evaluated (see {run.summary_markdown}). "
            "Rerun the pipeline to retry only the failed branches."
        )
    return summary
