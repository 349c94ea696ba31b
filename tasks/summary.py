"""The pipeline's summary task: summary.json/summary.md in the run folder, Prefect artifacts, a Comet experiment;
and the branch table row both the sweep's and the pipeline's artifacts show."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from aft_core.config import AFTConfig, SFTConfig, same_settings
from aft_core.io import write_json_atomic, write_text_atomic
from aft_core.layout import RunLayout


def branch_table_row(row: dict[str, Any]) -> dict[str, Any]:
    """The branch table of the artifacts: settings, status, ★ step, Δ at ★, final label."""

    def fmt(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) else ("" if value is None else value)

    keys = (
        "branch_id",
        "beta",
        "gamma",
        "eta_kl",
        "k",
        "status",
        "steps",
        "healthy_until",
        "primary_step",
        "primary_delta_focus",
        "primary_delta_bertscore",
        "primary_delta_entity_accuracy",
        "final_label",
        "error",
    )
    extra = [k for k in row if k not in keys and k not in _RESULT_KEYS]
    return {k: fmt(row.get(k)) for k in (*keys[:5], *extra, *keys[5:])}


_RESULT_KEYS = {
    "nonfinite_run",
    "last_step",
    "last_delta_focus",
    "last_delta_bertscore",
    "last_delta_entity_accuracy",
    "skipped_nonfinite",
    "seconds",
    "bertscore_encoder",
    "bertscore_layer",
    "thresholds",
    "early_stop",
    "steps_saved",
}


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def corpus_line(corpus: dict[str, Any], table: dict[str, Any]) -> str:
    """What was trained and tested on: the corpus, its splits, any hold-out, and where entity accuracy comes from."""
    from aft_core.evaluation import NO_VENUE_DATABASE  # torch and transformers: not for a sweep's flow run

    stats = corpus["stats"]
    line = (
        f"Corpus: `{corpus['data']}` ({stats['format']} schema; dialogues "
        + ", ".join(f"{k} {v}" for k, v in stats["dialogues"].items())
        + ")."
    )
    holdout = stats.get("holdout")
    if holdout:
        line += f" Splits held out of the single-split `{holdout['source']}`: {holdout['rule']}."
    if table.get("venue_tables"):
        skipped = ", ".join(table.get("venue_tables_skipped") or {})
        line += f" Entity accuracy reads the venue tables {', '.join(table['venue_tables'])}" + (
            f" (skipped, not venue tables: {skipped})." if skipped else "."
        )
    else:
        line += " " + NO_VENUE_DATABASE
    return line


# The frontier under the claims protocol, as measured for the main job's settings (experiments/frontier.py);
# a run's own frontier (RUN_DIR/frontier/frontier.json) is preferred when it has one.
REFERENCE_FRONTIER = Path(__file__).resolve().parents[1] / "experiments" / "reference" / "frontier-towninfo-small.json"
NOT_A_SETTING = ("sft_model", "data", "seed", "keep_checkpoints", "branch_id")  # what the figures do not depend on


SFT_NOT_RECIPE = ("seed", "data")  # an SFT model's seed and corpus path are not its recipe


def same_setting(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two stored branch configs are the same setting (defaults filled on both sides)."""
    return same_settings(AFTConfig, a, b, ignore=NOT_A_SETTING)


def pipeline_basis(parameters: dict[str, Any]) -> dict[str, Any]:
    """What a frontier must share with a run to speak for it: the corpus and the SFT recipe (all but its seed)."""
    return {
        "data": parameters.get("data"),
        "towninfo_dialogues": parameters.get("towninfo_dialogues"),
        "towninfo_seed": parameters.get("towninfo_seed"),
        "sft": {
            k: v
            for k, v in dataclasses.asdict(SFTConfig(**(parameters.get("sft") or {}))).items()
            if k not in SFT_NOT_RECIPE
        },
    }


def basis_matches(stored: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether a frontier measured on `stored` speaks for a run on `current` (both `pipeline_basis` results): the
    same corpus and the same SFT recipe, a setting added to SFTConfig since the frontier was measured taking its
    default on both sides."""
    if not stored:
        return False
    corpus = {k: v for k, v in stored.items() if k != "sft"} == {k: v for k, v in current.items() if k != "sft"}
    return corpus and same_settings(SFTConfig, stored.get("sft") or {}, current["sft"], ignore=SFT_NOT_RECIPE)


def frontier_reference(run: RunLayout) -> tuple[dict[str, Any], str] | None:
    """The multi-seed frontier that speaks for this run's settings, and where it comes from."""
    for path in (run.frontier / "frontier.json", REFERENCE_FRONTIER):
        if path.exists():
            shown = path.relative_to(REFERENCE_FRONTIER.parents[2]) if path == REFERENCE_FRONTIER else path
            return json.loads(path.read_text(encoding="utf-8")), str(shown)
    return None


def one_draw_lines(run: RunLayout, branch_rows: list[dict[str, Any]], table: dict[str, Any]) -> list[str]:
    """Per branch whose setting the frontier measured: this run's Δentity accuracy (one draw) beside the frontier's
    interval over SFT models × AFT seeds at the same point, and whether the claim holds there."""
    found = frontier_reference(run)
    if found is None:
        return []
    frontier, source = found
    if not basis_matches(frontier.get("meta", {}).get("basis"), pipeline_basis(run.read_parameters())):
        return []  # another corpus or another SFT recipe: the frontier does not speak for this run
    lines = []
    for branch in branch_rows:
        folder = run.branch(str(branch["branch_id"]))
        if not folder.config.exists():
            continue
        config = folder.read_config()
        match = next((r for r in frontier["rows"] if same_setting(r["config"], config)), None)
        if match is None:
            continue
        point = {"star": "★", "last": "last"}.get(match["point"], "–")
        wanted = " ★ step " if match["point"] == "star" else " last step "
        mine = next(
            (
                r
                for r in table["rows"]
                if r["system"].startswith(f"{branch['branch_id']} ")
                and (wanted in r["system"] or " ★ = last step " in r["system"])
            ),
            None,
        )
        this = (
            f"this run ({point}): Δentity accuracy {mine['vs_baseline']['delta_entity_accuracy']:+.3f}"
            if mine and (mine.get("vs_baseline") or {}).get("delta_entity_accuracy") is not None
            else "this run: –"
        )
        test = (match.get("test") or {}).get("entity_accuracy")
        if test:
            over = (
                f"over {test['n_sft']} SFT models × {test['n_aft']} AFT seeds: {test['effect']:+.3f} "
                f"[{test['ci'][0]:+.3f}, {test['ci'][1]:+.3f}], Holm p = {match['p_holm']:.3f}"
            )
        else:
            over = (
                f"over {len(frontier['sft_seeds'])} SFT models × {len(frontier['aft_seeds'])} AFT seeds: dropped on dev"
            )
        verdict = "the claim holds" if match["survives"] else "the claim does not hold"
        lines.append(f"- {match['setting']} (`{branch['branch_id']}`): {this}; {over}; {verdict}.")
    if lines:
        lines += [
            "",
            f"One run is one draw: its SFT model, and so every figure above, changes with the CPU's kernels and the "
            f"seeds. The intervals come from `{source}` (experiments/frontier.py: settings chosen on dev, "
            f"test scored once, {frontier['test']}; {frontier['correction']}). {frontier['answer']}",
        ]
    return lines


def provenance_line(run: RunLayout) -> str:
    """What the figures depend on; a rerun on the same machine reproduces them exactly."""
    if not run.provenance.exists():
        return ""
    entry = json.loads(run.provenance.read_text(encoding="utf-8"))["runs"][-1]
    device = entry["gpu"] or f"CPU {entry['cpu']} ({entry['cpu_capability']})"
    seeds = ", ".join(f"{k} {v}" for k, v in entry["seeds"].items())
    return (
        f"Computed with torch {entry['torch']} on {device}, BLAS {entry['blas']}, {entry['torch_threads']} threads; "
        f"seeds {seeds}. A rerun on this machine reproduces every figure exactly; another CPU runs other kernels "
        f"and gives other figures (`provenance.json` in each run folder)."
    )


def summary_markdown(
    run_dir: str, corpus: dict[str, Any], sft: dict[str, Any], branch_rows: list[dict[str, Any]], table: dict[str, Any]
) -> str:
    from aft_core.evaluation import TABLE1_COLUMNS, paired_changes, table1_systems

    present = [(k, name) for k, name in TABLE1_COLUMNS if any(k in r for r in table["rows"])]
    test = markdown_table(
        ["System", *[name for _, name in present]],
        [[r["system"], *[r.get(k) for k, _ in present]] for r in table1_systems(table)],
    )
    header = list(dict.fromkeys(k for r in branch_rows for k in r)) or ["branch_id"]  # variants add their own keys
    branches = markdown_table(header, [[r.get(k) for k in header] for r in branch_rows])
    changes = "\n".join(f"- {paired_changes(r)}" for r in table["rows"] if r.get("vs_baseline")) or "- (no AFT system)"
    draws = one_draw_lines(RunLayout(run_dir), branch_rows, table)
    beside = ("\n\n## This run beside the multi-seed frontier\n\n" + "\n".join(draws)) if draws else ""
    return (
        f"# AFT pipeline: {run_dir}\n\n{corpus_line(corpus, table)}\n\n{provenance_line(RunLayout(run_dir))}\n\n"
        f"SFT: {sft['steps']} steps, best dev loss {sft['best_dev_loss']:.4f} (`{sft['model_dir']}`).\n\n"
        f"## Branches\n\n{branches}\n\n"
        f"## Test evaluation ({table['examples']} {table['split']} examples, greedy; "
        f"BERTScore encoder {table['bertscore_encoder']}, layer {table['bertscore_layer']}; "
        f"Focus under I_x = {table['ix_mode']})\n\n{test}\n\n"
        f"## What AFT changed against SFT in this run (paired tests on the same test examples; one draw)\n\n"
        f"{changes}{beside}\n{conversations_section(RunLayout(run_dir))}"
    )


def conversations_section(run: RunLayout) -> str:
    """The closed-loop stage's table, when the run has one (aft_core.dialogue.closed_loop)."""
    from aft_core.dialogue.closed_loop import conversation_markdown

    if not run.conversations.table.exists():
        return ""
    return "\n## Conversations with the user simulator\n\n" + conversation_markdown(run.conversations.read_table())


@task(name="summarize")
def summarize(
    run_dir: str,
    params: dict[str, Any],
    corpus: dict[str, Any],
    sft: dict[str, Any],
    branches: list[dict[str, Any]],
    failed: list[dict[str, Any]],
    table: dict[str, Any],
) -> dict[str, Any]:
    """Write summary.json and summary.md, publish them as Prefect artifacts, log them to Comet."""
    from aft_core.evaluation import TABLE1_COLUMNS
    from tasks.tracking import CometTracker

    branch_rows = [branch_table_row(b) for b in [*branches, *failed]]
    markdown = summary_markdown(run_dir, corpus, sft, branch_rows, table)
    summary = {
        "run_dir": run_dir,
        "corpus": corpus,
        "sft": sft,
        "test": table,
        "branches": [*branches, *failed],
        "failed": [r["branch_id"] for r in failed],
    }
    run = RunLayout(run_dir)
    write_json_atomic(run.summary, summary)
    write_text_atomic(run.summary_markdown, markdown)
    create_table_artifact(key="aft-branches", table=branch_rows, description=f"AFT branches of {run_dir}")
    create_markdown_artifact(key="aft-summary", markdown=markdown, description=f"AFT pipeline summary of {run_dir}")
    tracker = CometTracker(run_dir, name=f"pipeline-{run.root.resolve().name}", tags=["pipeline"])
    try:
        tracker.log_params({"run_dir": run_dir, "sft_model": sft["model_dir"], "branches": len(branch_rows)})
        tracker.log_table("test_table", run.evaluation.per_example)
        tracker.log_table("summary", run.summary)
        tracker.log_table("summary_markdown", run.summary_markdown)
        tracker.log_metrics(
            {
                f"test/{r['system']}/{k}": r[k]
                for r in table["rows"]
                for k, _ in TABLE1_COLUMNS
                if isinstance(r.get(k), float)
            },
            step=0,
        )
        if run.conversations.table.exists():
            tracker.log_table("conversations", run.conversations.table)
            conversations = run.conversations.read_table()
            tracker.log_metrics(
                {
                    f"conversation/{mode}/{r['system']}/{k}": r[k][0]
                    for mode, rows in conversations.get("rows", {}).items()
                    for r in rows
                    for k in ("inform", "success", "book", "complete")
                    if r.get(k)
                },
                step=0,
            )
    finally:
        tracker.end()
    return summary
