"""The pipeline's summary task: summary.json/summary.md in the run folder, Prefect artifacts, a Comet experiment;
and the branch table row both the sweep's and the pipeline's artifacts show."""
from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from aft_core.evaluation import NO_VENUE_DATABASE, TABLE1_COLUMNS, paired_changes
from aft_core.io import write_json_atomic, write_text_atomic
from aft_core.layout import RunLayout


def branch_table_row(row: dict[str, Any]) -> dict[str, Any]:
    """The branch table of the artifacts: settings, status, ★ step, Δ at ★, final label."""
    def fmt(value: Any) -> Any:
        return round(value, 4) if isinstance(value, float) else ("" if value is None else value)

    keys = ("branch_id", "beta", "gamma", "eta_kl", "k", "status", "steps", "healthy_until", "primary_step",
            "primary_delta_focus", "primary_delta_bertscore", "primary_delta_entity_accuracy", "final_label", "error")
    extra = [k for k in row if k not in keys and k not in _RESULT_KEYS]
    return {k: fmt(row.get(k)) for k in (*keys[:5], *extra, *keys[5:])}


_RESULT_KEYS = {"nonfinite_run", "last_step", "last_delta_focus", "last_delta_bertscore", "last_delta_entity_accuracy",
                "skipped_nonfinite", "seconds", "bertscore_encoder", "bertscore_layer", "thresholds", "early_stop", "steps_saved"}


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
    stats = corpus["stats"]
    line = (f"Corpus: `{corpus['data']}` ({stats['format']} schema; dialogues "
            + ", ".join(f"{k} {v}" for k, v in stats["dialogues"].items()) + ").")
    holdout = stats.get("holdout")
    if holdout:
        line += f" Splits held out of the single-split `{holdout['source']}`: {holdout['rule']}."
    if table.get("venue_tables"):
        skipped = ", ".join(table.get("venue_tables_skipped") or {})
        line += (f" Entity accuracy reads the venue tables {', '.join(table['venue_tables'])}"
                 + (f" (skipped, not venue tables: {skipped})." if skipped else "."))
    else:
        line += " " + NO_VENUE_DATABASE
    return line


def summary_markdown(run_dir: str, corpus: dict[str, Any], sft: dict[str, Any], branch_rows: list[dict[str, Any]],
                     table: dict[str, Any]) -> str:
    present = [(k, name) for k, name in TABLE1_COLUMNS if any(k in r for r in table["rows"])]
    test = markdown_table(["System", *[name for _, name in present]],
                          [[r["system"], *[r.get(k) for k, _ in present]] for r in table["rows"]])
    header = list(dict.fromkeys(k for r in branch_rows for k in r)) or ["branch_id"]  # variants add their own keys
    branches = markdown_table(header, [[r.get(k) for k in header] for r in branch_rows])
    changes = "\n".join(f"- {paired_changes(r)}" for r in table["rows"] if r.get("vs_baseline")) or "- (no AFT system)"
    return (f"# AFT pipeline: {run_dir}\n\n{corpus_line(corpus, table)}\n\n"
            f"SFT: {sft['steps']} steps, best dev loss {sft['best_dev_loss']:.4f} (`{sft['model_dir']}`).\n\n"
            f"## Branches\n\n{branches}\n\n"
            f"## Test evaluation ({table['examples']} {table['split']} examples, greedy; "
            f"BERTScore encoder {table['bertscore_encoder']}, layer {table['bertscore_layer']}; "
            f"Focus under I_x = {table['ix_mode']})\n\n{test}\n\n"
            f"## What AFT changed against SFT (paired tests on the same test examples)\n\n{changes}\n")


@task(name="summarize")
def summarize(run_dir: str, params: dict[str, Any], corpus: dict[str, Any], sft: dict[str, Any],
              branches: list[dict[str, Any]], failed: list[dict[str, Any]], table: dict[str, Any]) -> dict[str, Any]:
    """Write summary.json and summary.md, publish them as Prefect artifacts, log them to Comet."""
    from tasks.tracking import CometTracker

    branch_rows = [branch_table_row(b) for b in [*branches, *failed]]
    markdown = summary_markdown(run_dir, corpus, sft, branch_rows, table)
    summary = {"run_dir": run_dir, "corpus": corpus, "sft": sft, "test": table,
               "branches": [*branches, *failed],
               "failed": [r["branch_id"] for r in failed]}
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
        tracker.log_metrics({f"test/{r['system']}/{k}": r[k] for r in table["rows"] for k, _ in TABLE1_COLUMNS
                             if isinstance(r.get(k), float)}, step=0)
    finally:
        tracker.end()
    return summary
