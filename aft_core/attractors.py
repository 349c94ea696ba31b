"""Checkpoint-level attractor classification and primary-checkpoint (★) selection (AFT_SPEC §6).

A probe row is one checkpoint's metrics on the fixed probe (see `monitor.py`): step, focus,
bertscore, mean_length, unique_outputs, probe_size, closing_rate, repeat, the Δ values against
the SFT model on the same probe, and the loss/reward trend since the previous checkpoint.
Each label carries its evidence: the signals that fired, with their values. Early warnings are
reported separately from the final label.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from aft_core.config import _check, check_shares, setting

MODES = ("semantic_incoherence", "length_loop", "template_fixation", "generic_closing", "near_sft_inertia")
PAPER_NAMES = {"template_fixation": "The Dam", "length_loop": "The Whirlpool", "generic_closing": "The Underground River",
               "near_sft_inertia": "The Dry Riverbed", "semantic_incoherence": "The Flash Flood", "healthy": "healthy"}


@dataclass
class AttractorThresholds:
    """Every threshold of the classifier; defaults are the paper's appendix values (200-example probe)."""

    unique_min_fraction: float = setting(155 / 200, "Dam: unique outputs below this share of the probe (paper: 155/200)")
    unique_relative_to_sft: bool = setting(False, "Dam: measure unique outputs as a share of the SFT model's (step 0) "
                                                  "instead of the probe size; for templated corpora whose SFT model is already below 155/200")
    length_near_max_fraction: float = setting(0.9, "Whirlpool/Flash Flood: mean length at or above this share of max_new_tokens")
    repeat_max: float = setting(0.03, "Whirlpool: repeat penalty above this (paper: 0.03)")
    loss_rising_steps: int = setting(50, "Whirlpool early warning: smoothed loss rising this many consecutive steps while reward rises")
    closing_rate_min: float = setting(0.10, "Underground River: share of outputs that are a generic closing (paper: 10%)")
    inertia_step: int = setting(500, "Dry Riverbed: judged from this step on (paper: 500)")
    inertia_delta_focus_max: float = setting(0.10, "Dry Riverbed: ΔFocus below this at/after inertia_step (paper: +0.10)")
    inertia_bertscore_flat: float = setting(0.01, "Dry Riverbed: |ΔBERTScore| below this counts as flat")
    inertia_warning_step: int = setting(100, "Dry Riverbed early warning: judged at this step (paper: 100)")
    inertia_warning_delta_focus: float = setting(0.05, "Dry Riverbed early warning: ΔFocus below this (paper: +0.05)")
    incoherence_bertscore_max: float = setting(0.65, "Flash Flood: BERTScore below this (paper: 0.65)")
    incoherence_unique_min_fraction: float = setting(1.0, "Flash Flood: unique outputs at this share of the probe (ceiling)")
    incoherence_bertscore_drop_per_100: float = setting(0.05, "Flash Flood early warning: BERTScore falling faster than this per 100 steps while length rises")
    primary_min_delta_bertscore: float = setting(-0.03, "★ selection: ΔBERTScore at or above this among healthy checkpoints")

    def validate(self, where: str = "thresholds") -> "AttractorThresholds":
        check_shares(self, ("unique_min_fraction", "length_near_max_fraction", "closing_rate_min",
                            "incoherence_unique_min_fraction"), where, "use the paper's default")
        for name in ("loss_rising_steps", "inertia_step", "inertia_warning_step"):
            _check(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}", "use a step count", where)
        return self


@dataclass
class Classification:
    step: int
    label: str  # "healthy" or one of MODES
    evidence: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> fired signals with values
    warnings: dict[str, dict[str, float]] = field(default_factory=dict)  # early warnings (do not set the label)

    def as_row(self) -> dict[str, Any]:
        return {"step": self.step, "label": self.label, "paper_name": PAPER_NAMES[self.label],
                "evidence": self.evidence, "warnings": self.warnings}


def classify(row: dict[str, Any], previous: dict[str, Any] | None, max_new_tokens: int,
             th: AttractorThresholds | None = None, sft: dict[str, Any] | None = None) -> Classification:
    """Label one checkpoint from its probe row (and the previous checkpoint's, for trends; SFT's, step 0)."""
    th = th or AttractorThresholds()
    size = row["probe_size"]
    unique_base = (sft or row)["unique_outputs"] if th.unique_relative_to_sft else size
    near_max = row["mean_length"] >= th.length_near_max_fraction * max_new_tokens
    fired: dict[str, dict[str, float]] = {}

    if (near_max and row["unique_outputs"] >= th.incoherence_unique_min_fraction * size
            and row["bertscore"] < th.incoherence_bertscore_max and row.get("loss_mean", 0.0) < 0):
        fired["semantic_incoherence"] = {"mean_length": row["mean_length"], "unique_outputs": row["unique_outputs"],
                                         "bertscore": row["bertscore"], "loss_mean": row["loss_mean"]}
    if near_max and row["repeat"] > th.repeat_max:
        fired["length_loop"] = {"mean_length": row["mean_length"], "repeat": row["repeat"],
                                "loss_rising_steps": row.get("loss_rising_steps", 0)}
    if row["unique_outputs"] < th.unique_min_fraction * unique_base:
        fired["template_fixation"] = {"unique_outputs": row["unique_outputs"],
                                      "delta_bertscore": row["delta_bertscore"]}
    if row["closing_rate"] >= th.closing_rate_min:
        fired["generic_closing"] = {"closing_rate": row["closing_rate"], "focus": row["focus"],
                                    "delta_bertscore": row["delta_bertscore"]}
    if (row["step"] >= th.inertia_step and row["delta_focus"] < th.inertia_delta_focus_max
            and abs(row["delta_bertscore"]) < th.inertia_bertscore_flat):
        fired["near_sft_inertia"] = {"delta_focus": row["delta_focus"], "delta_bertscore": row["delta_bertscore"]}

    warnings: dict[str, dict[str, float]] = {}
    if row["unique_outputs"] < th.unique_min_fraction * unique_base:
        warnings["template_fixation"] = {"unique_outputs": row["unique_outputs"]}
    if row.get("loss_rising_steps", 0) >= th.loss_rising_steps and row.get("reward_slope", 0.0) > 0:
        warnings["length_loop"] = {"loss_rising_steps": row["loss_rising_steps"], "reward_slope": row["reward_slope"]}
    if row["closing_rate"] > th.closing_rate_min:
        warnings["generic_closing"] = {"closing_rate": row["closing_rate"]}
    if row["step"] >= th.inertia_warning_step and row["delta_focus"] < th.inertia_warning_delta_focus:
        warnings["near_sft_inertia"] = {"delta_focus": row["delta_focus"]}
    if previous is not None and row["step"] > previous["step"]:
        per_100 = 100.0 / (row["step"] - previous["step"])
        drop = (previous["bertscore"] - row["bertscore"]) * per_100
        if drop > th.incoherence_bertscore_drop_per_100 and row["mean_length"] > previous["mean_length"]:
            warnings["semantic_incoherence"] = {"bertscore_drop_per_100": drop,
                                                "length_rise": row["mean_length"] - previous["mean_length"]}

    label = next((mode for mode in MODES if mode in fired), "healthy")
    return Classification(int(row["step"]), label, fired, warnings)


def classify_trajectory(rows: Sequence[dict[str, Any]], max_new_tokens: int,
                        th: AttractorThresholds | None = None) -> list[Classification]:
    ordered = sorted(rows, key=lambda r: r["step"])
    sft = ordered[0] if ordered and ordered[0]["step"] == 0 else None
    return [classify(row, ordered[i - 1] if i else None, max_new_tokens, th, sft) for i, row in enumerate(ordered)]


def select_primary(rows: Sequence[dict[str, Any]], labels: Sequence[Classification],
                   th: AttractorThresholds | None = None) -> int | None:
    """★ = the AFT checkpoint (step > 0) with the largest ΔFocus among healthy ones with ΔBERTScore ≥ the floor."""
    th = th or AttractorThresholds()
    by_step = {c.step: c for c in labels}
    candidates = [r for r in rows if r["step"] > 0 and by_step[int(r["step"])].label == "healthy"
                  and r["delta_bertscore"] >= th.primary_min_delta_bertscore]
    return int(max(candidates, key=lambda r: r["delta_focus"])["step"]) if candidates else None
