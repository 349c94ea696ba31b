"""Checkpoint-level attractor classification, primary-checkpoint (★) selection and the early-stopping rule
(AFT_SPEC §6).

A probe row is one checkpoint's metrics on the fixed probe (see `monitor.py`): step, focus,
bertscore, mean_length, unique_outputs, probe_size, closing_rate, repeat, entity_accuracy (where the
corpus has a venue database), the Δ values against the SFT model on the same probe, and the
loss/reward trend since the previous checkpoint. Each label carries its evidence: the signals that
fired, with their values. Early warnings are reported separately from the final label.

Thresholds have a basis. `sft` (the default) judges every figure that the paper gives as an absolute
number of its own model, corpus and probe relative to the branch's step-0 row (the SFT model on the
same probe), so the SFT model is never an attractor by its own row. `paper` applies the paper's
appendix values as written (`THRESHOLD_SETS["paper"]`); on a templated corpus it labels the SFT model
itself a Dam.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aft_core.config import _check, check_shares, setting
from aft_core.errors import AftInputError

MODES = ("semantic_incoherence", "length_loop", "template_fixation", "generic_closing", "near_sft_inertia")
# Attractors a branch does not leave by training on (the Dry Riverbed is the absence of movement, not a trap).
TERMINAL_MODES = ("semantic_incoherence", "length_loop", "template_fixation", "generic_closing")
PAPER_NAMES = {
    "template_fixation": "The Dam",
    "length_loop": "The Whirlpool",
    "generic_closing": "The Underground River",
    "near_sft_inertia": "The Dry Riverbed",
    "semantic_incoherence": "The Flash Flood",
    "healthy": "healthy",
}
BASES = ("sft", "paper")


@dataclass
class AttractorThresholds:
    """Every threshold of the classifier and of ★ selection. Defaults: the `sft` basis (relative to step 0)."""

    basis: str = setting(
        "sft",
        "sft: thresholds marked 'relative' are judged against the branch's step-0 (SFT) probe "
        "row; paper: the paper's absolute values (its model, corpus and 200-example probe)",
    )
    unique_min_fraction: float = setting(
        155 / 200,
        "Dam: unique outputs below this share of the SFT model's unique "
        "outputs (sft) or of the probe size (paper: 155/200)",
    )
    length_near_max_fraction: float = setting(
        0.9, "Whirlpool/Flash Flood: mean length at or above this share of max_new_tokens"
    )
    repeat_max: float = setting(
        0.03, "Whirlpool: repeat penalty above SFT's by more than this (sft), or above this (paper: 0.03)"
    )
    loss_rising_steps: int = setting(
        50, "Whirlpool early warning: smoothed loss rising this many consecutive steps while reward rises"
    )
    closing_rate_min: float = setting(
        0.10, "Underground River: generic-closing share at least this above SFT's (sft), or at least this (paper: 10%)"
    )
    inertia_step: int = setting(500, "Dry Riverbed: judged from this step on (paper: 500)")
    inertia_delta_focus_max: float = setting(
        0.10 / 3.656,
        "Dry Riverbed: ΔFocus below this share of |SFT focus| (sft; "
        "the paper's +0.10 over its SFT focus −3.656), or in nats (paper: 0.10)",
    )
    inertia_bertscore_flat: float = setting(0.01, "Dry Riverbed: |ΔBERTScore| below this counts as flat")
    inertia_warning_step: int = setting(100, "Dry Riverbed early warning: judged at this step (paper: 100)")
    inertia_warning_delta_focus: float = setting(
        0.05 / 3.656,
        "Dry Riverbed early warning: ΔFocus below this share of |SFT focus| (sft), or in nats (paper: 0.05)",
    )
    incoherence_bertscore: float = setting(
        0.154,
        "Flash Flood: BERTScore more than this below SFT's (sft; the paper's "
        "0.65 against its SFT 0.804), or below this (paper: 0.65)",
    )
    incoherence_unique_min_fraction: float = setting(
        1.0, "Flash Flood: unique outputs at this share of the probe (ceiling)"
    )
    incoherence_bertscore_drop_per_100: float = setting(
        0.05, "Flash Flood early warning: BERTScore falling faster than this per 100 steps while length rises"
    )
    conversation_repeat_rise: float = setting(
        0.2,
        "Dam in conversations (probe conversations): the share of a conversation's system replies that repeat an "
        "earlier one, above SFT's by more than this (sft), or above this (paper)",
    )
    conversation_timeout_rise: float = setting(
        0.3,
        "Whirlpool in conversations (probe conversations): the share that hit the turn cap without ending, above "
        "SFT's by more than this (sft), or above this (paper)",
    )
    primary_min_delta_bertscore: float = setting(
        -0.03, "★ selection: ΔBERTScore at or above this among healthy checkpoints"
    )
    primary_min_delta_entity_accuracy: float = setting(
        -1.0, "★ selection: probe Δentity accuracy at or above this (needs a venue database; -1 = no rule)"
    )

    def validate(self, where: str = "thresholds") -> AttractorThresholds:
        _check(self.basis in BASES, "basis", f"unknown basis '{self.basis}'", f"use one of {list(BASES)}", where)
        check_shares(
            self,
            ("unique_min_fraction", "length_near_max_fraction", "closing_rate_min", "incoherence_unique_min_fraction"),
            where,
            "use a share in [0, 1] (see the field's help)",
        )
        for name in ("loss_rising_steps", "inertia_step", "inertia_warning_step"):
            _check(
                getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}", "use a step count", where
            )
        _check(
            -1.0 <= self.primary_min_delta_entity_accuracy <= 1.0,
            "primary_min_delta_entity_accuracy",
            f"must lie in [-1, 1], got {self.primary_min_delta_entity_accuracy}",
            "use e.g. 0.0, or -1 for no rule",
            where,
        )
        return self


THRESHOLD_SETS: dict[str, AttractorThresholds] = {
    "sft": AttractorThresholds(),
    "paper": AttractorThresholds(
        basis="paper", inertia_delta_focus_max=0.10, inertia_warning_delta_focus=0.05, incoherence_bertscore=0.65
    ),
}


def thresholds_from(
    name: str = "sft", overrides: dict[str, Any] | None = None, where: str = "thresholds"
) -> AttractorThresholds:
    """A named threshold set (`sft` or `paper`) with some settings overridden, validated."""
    if name not in THRESHOLD_SETS:
        raise AftInputError(
            where, "thresholds", f"unknown threshold set '{name}'", f"use one of {sorted(THRESHOLD_SETS)}"
        )
    known = {f.name for f in dataclasses.fields(AttractorThresholds)}
    unknown = sorted(set(overrides or {}) - known)
    if unknown:
        raise AftInputError(where, unknown[0], "unknown threshold", f"use one of {sorted(known)}")
    return dataclasses.replace(THRESHOLD_SETS[name], **(overrides or {})).validate(where)


@dataclass
class Classification:
    step: int
    label: str  # "healthy" or one of MODES
    evidence: dict[str, dict[str, float]] = field(default_factory=dict)  # mode -> fired signals with values
    warnings: dict[str, dict[str, float]] = field(default_factory=dict)  # early warnings (do not set the label)

    def as_row(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "label": self.label,
            "paper_name": PAPER_NAMES[self.label],
            "evidence": self.evidence,
            "warnings": self.warnings,
        }


def classify(
    row: dict[str, Any],
    previous: dict[str, Any] | None,
    max_new_tokens: int,
    th: AttractorThresholds | None = None,
    sft: dict[str, Any] | None = None,
) -> Classification:
    """Label one checkpoint from its probe row, the previous checkpoint's (for trends) and SFT's (step 0).

    Under the `sft` basis the limits are: unique < f·unique_SFT; repeat > repeat_SFT + r; closing rate ≥
    closing_SFT + c; BERTScore < BERTScore_SFT − b; ΔFocus < d·|focus_SFT|. Under `paper` they are
    unique < f·probe size, repeat > r, closing ≥ c, BERTScore < b, ΔFocus < d. The limits used are part
    of the evidence.
    """
    th = th or AttractorThresholds()
    relative = th.basis == "sft"
    if relative and sft is None:
        raise ValueError(
            "thresholds with basis 'sft' need the branch's step-0 (SFT) probe row: pass sft=..., "
            "or use THRESHOLD_SETS['paper']"
        )
    size = row["probe_size"]
    sft = sft if sft is not None else {}  # read only when relative (checked above)
    unique_min = th.unique_min_fraction * (sft["unique_outputs"] if relative else size)
    repeat_limit = th.repeat_max + (sft["repeat"] if relative else 0.0)
    closing_limit = th.closing_rate_min + (sft["closing_rate"] if relative else 0.0)
    bertscore_floor = sft["bertscore"] - th.incoherence_bertscore if relative else th.incoherence_bertscore
    focus_scale = abs(sft["focus"]) if relative else 1.0
    near_max = row["mean_length"] >= th.length_near_max_fraction * max_new_tokens
    fired: dict[str, dict[str, float]] = {}

    if (
        near_max
        and row["unique_outputs"] >= th.incoherence_unique_min_fraction * size
        and row["bertscore"] < bertscore_floor
        and row.get("loss_mean", 0.0) < 0
    ):
        fired["semantic_incoherence"] = {
            "mean_length": row["mean_length"],
            "unique_outputs": row["unique_outputs"],
            "bertscore": row["bertscore"],
            "bertscore_floor": bertscore_floor,
            "loss_mean": row["loss_mean"],
        }
    if near_max and row["repeat"] > repeat_limit:
        fired["length_loop"] = {
            "mean_length": row["mean_length"],
            "repeat": row["repeat"],
            "repeat_limit": repeat_limit,
            "loss_rising_steps": row.get("loss_rising_steps", 0),
        }
    if row["unique_outputs"] < unique_min:
        fired["template_fixation"] = {
            "unique_outputs": row["unique_outputs"],
            "unique_min": unique_min,
            "delta_bertscore": row["delta_bertscore"],
        }
    if row["closing_rate"] >= closing_limit:
        fired["generic_closing"] = {
            "closing_rate": row["closing_rate"],
            "closing_limit": closing_limit,
            "focus": row["focus"],
            "delta_bertscore": row["delta_bertscore"],
        }
    inertia_limit = th.inertia_delta_focus_max * focus_scale
    if (
        row["step"] >= th.inertia_step
        and row["delta_focus"] < inertia_limit
        and abs(row["delta_bertscore"]) < th.inertia_bertscore_flat
    ):
        fired["near_sft_inertia"] = {
            "delta_focus": row["delta_focus"],
            "delta_focus_limit": inertia_limit,
            "delta_bertscore": row["delta_bertscore"],
        }
    if row.get("conversation_success") is not None and (not relative or sft.get("conversation_success") is not None):
        # the Dam and the Whirlpool seen in the probe conversations (AFT_SPEC §9), as evidence of the same modes
        repeat_limit = th.conversation_repeat_rise + (sft["conversation_repeated_replies"] if relative else 0.0)
        if row["conversation_repeated_replies"] > repeat_limit:
            fired.setdefault("template_fixation", {}).update(
                conversation_repeated_replies=row["conversation_repeated_replies"],
                conversation_repeated_limit=repeat_limit,
            )
        timeout_limit = th.conversation_timeout_rise + (sft["conversation_timeout"] if relative else 0.0)
        if row["conversation_timeout"] > timeout_limit:
            fired.setdefault("length_loop", {}).update(
                conversation_timeout=row["conversation_timeout"], conversation_timeout_limit=timeout_limit
            )

    warnings: dict[str, dict[str, float]] = {}
    if row["unique_outputs"] < unique_min:
        warnings["template_fixation"] = {"unique_outputs": row["unique_outputs"], "unique_min": unique_min}
    if row.get("loss_rising_steps", 0) >= th.loss_rising_steps and row.get("reward_slope", 0.0) > 0:
        warnings["length_loop"] = {"loss_rising_steps": row["loss_rising_steps"], "reward_slope": row["reward_slope"]}
    if row["closing_rate"] > closing_limit:
        warnings["generic_closing"] = {"closing_rate": row["closing_rate"], "closing_limit": closing_limit}
    warning_limit = th.inertia_warning_delta_focus * focus_scale
    if row["step"] >= th.inertia_warning_step and row["delta_focus"] < warning_limit:
        warnings["near_sft_inertia"] = {"delta_focus": row["delta_focus"], "delta_focus_limit": warning_limit}
    if previous is not None and row["step"] > previous["step"]:
        per_100 = 100.0 / (row["step"] - previous["step"])
        drop = (previous["bertscore"] - row["bertscore"]) * per_100
        if drop > th.incoherence_bertscore_drop_per_100 and row["mean_length"] > previous["mean_length"]:
            warnings["semantic_incoherence"] = {
                "bertscore_drop_per_100": drop,
                "length_rise": row["mean_length"] - previous["mean_length"],
            }

    label = next((mode for mode in MODES if mode in fired), "healthy")
    return Classification(int(row["step"]), label, fired, warnings)


def classify_trajectory(
    rows: Sequence[dict[str, Any]], max_new_tokens: int, th: AttractorThresholds | None = None
) -> list[Classification]:
    """Label every checkpoint of a branch, in step order; step 0 (SFT) is the baseline of the `sft` basis."""
    ordered = sorted(rows, key=lambda r: r["step"])
    sft = ordered[0] if ordered and ordered[0]["step"] == 0 else None
    return [classify(row, ordered[i - 1] if i else None, max_new_tokens, th, sft) for i, row in enumerate(ordered)]


def select_primary(
    rows: Sequence[dict[str, Any]], labels: Sequence[Classification], th: AttractorThresholds | None = None
) -> int | None:
    """★ = the AFT checkpoint (step > 0) with the largest ΔFocus among healthy ones with ΔBERTScore ≥ the floor
    (and, when `primary_min_delta_entity_accuracy` > −1, probe Δentity accuracy ≥ that floor)."""
    th = th or AttractorThresholds()
    entity_rule = th.primary_min_delta_entity_accuracy > -1.0
    if entity_rule and any(r.get("delta_entity_accuracy") is None for r in rows):
        raise AftInputError(
            "thresholds",
            "primary_min_delta_entity_accuracy",
            "the probe has no entity accuracy (the corpus has no venue database)",
            "set it to -1 (no entity rule) for this corpus",
        )
    by_step = {c.step: c for c in labels}
    candidates = [
        r
        for r in rows
        if r["step"] > 0
        and by_step[int(r["step"])].label == "healthy"
        and r["delta_bertscore"] >= th.primary_min_delta_bertscore
        and (not entity_rule or r["delta_entity_accuracy"] >= th.primary_min_delta_entity_accuracy)
    ]
    return int(max(candidates, key=lambda r: r["delta_focus"])["step"]) if candidates else None


def terminal_streak(labels: Sequence[Classification]) -> int:
    """How many of the latest checkpoints in a row sit in a terminal attractor (TERMINAL_MODES)."""
    streak = 0
    for c in reversed(labels):
        if c.label not in TERMINAL_MODES:
            break
        streak += 1
    return streak


def should_stop_early(labels: Sequence[Classification], patience: int) -> bool:
    """Attractor-aware early stopping: the last `patience` checkpoints all sat in a terminal attractor (0 = never)."""
    return patience > 0 and terminal_streak(labels) >= patience
