"""Judging a trained branch: the only source of verdicts (AFT_SPEC §6).

Training (aft_core.aft) produces checkpoints, weights and probe rows; `judge_branch` reads the probe
table and labels every checkpoint, records the early warnings, picks the primary checkpoint (★) and the
final label, and writes them to the branch's verdict file (attractors.json). Evaluation, the summary,
the report and the CLI read the verdict from there and nowhere else, so re-judging with other
thresholds (no retraining) changes ★ everywhere at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aft_core.attractors import AttractorThresholds, Classification, classify_trajectory, select_primary
from aft_core.errors import AftInputError
from aft_core.layout import BranchLayout

VERDICT_DELTAS = ("delta_focus", "delta_bertscore", "delta_entity_accuracy")


def judge_branch(branch_dir: str | Path, thresholds: AttractorThresholds | None = None) -> dict[str, Any]:
    """Label every checkpoint of a finished branch, pick ★, write the verdict; returns it.

    A branch stopped by a run of non-finite steps ends labelled semantic_incoherence, with that run
    as its evidence. The verdict holds per checkpoint its label and evidence, and for the branch: ★
    (`primary_step`, None when no checkpoint qualifies), the last step, the final label, the last step
    of the healthy run from step 0, the Δ values at ★ and at the last checkpoint, and the thresholds used.
    """
    branch = BranchLayout(Path(branch_dir))
    for path in (branch.config, branch.result, branch.probe):
        if not path.exists():
            raise AftInputError(
                branch.root,
                path.name,
                "not a finished AFT branch folder",
                "point at a folder written by `aft train-branch` that holds result.json",
            )
    thresholds = thresholds or AttractorThresholds()
    training = branch.read_result()
    rows = branch.read_probe_rows()
    labels = classify_trajectory(rows, branch.read_config()["max_new_tokens"], thresholds)
    if training["status"] == "diverged":
        last = labels[-1]
        last.evidence["semantic_incoherence"] = {
            "nonfinite_steps_in_a_row": float(training["nonfinite_run"]),
            "stopped_at_step": float(training["steps"]),
        }
        last.label = "semantic_incoherence"
    primary = select_primary(rows, labels, thresholds)
    by_step = {int(r["step"]): r for r in rows}

    def at(step: int | None, key: str) -> float | None:
        value = by_step[step].get(key) if step is not None else None
        return None if value is None or value != value else float(value)  # NaN: a column absent at this step

    verdict: dict[str, Any] = {
        "checkpoints": [c.as_row() for c in labels],
        "primary_step": primary,
        "last_step": labels[-1].step,
        "final_label": labels[-1].label,
        "healthy_until": healthy_until(labels),
        "thresholds": dataclasses.asdict(thresholds),
    }
    for key in VERDICT_DELTAS:
        verdict[f"primary_{key}"], verdict[f"last_{key}"] = at(primary, key), at(labels[-1].step, key)
    branch.write_verdict(verdict)
    return verdict


def healthy_until(labels: Sequence[Classification]) -> int | None:
    """The last step of the healthy run that starts at step 0 (None when even step 0 is an attractor)."""
    last = None
    for c in labels:
        if c.label != "healthy":
            break
        last = c.step
    return last
