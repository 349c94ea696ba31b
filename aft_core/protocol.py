"""The claims protocol: what it takes for "AFT setting X changes metric Y against SFT" to be stated.

A reviewer's protocol, used by experiments/frontier.py (and any script that makes a claim):

1. **Select on dev.** Settings are compared, and each setting's checkpoint (★ or last) is chosen, on the
   validation split only (`choose_point`). A setting is carried to the test split only when its chosen
   point passes the claim's bar on dev (`passes_bar`).
2. **Score test once**, for the carried settings at their chosen point only.
3. **Replicate.** Every setting runs over several independently trained SFT models (SFT seeds) × several
   AFT seeds, all scored on the same examples; a branch is compared with its own SFT model.
4. **Analyse with the structure** (`nested_effect`): the per-example paired differences d[i, j, t]
   (SFT model i, AFT seed j, example t) are averaged to one effect per SFT model, and those are tested
   across SFT models with a one-sample t-test (df = n_SFT − 1): the SFT model is a random effect, so
   a claim must hold for SFT models not yet trained. The spread is decomposed (one-way random-effects
   ANOVA on the branch means) into between-SFT and within-SFT (AFT-seed) variance.
5. **Correct** for the number of settings compared (Holm over every setting, those dropped on dev
   counted with p = 1), and say per setting whether its claim survives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aft_core.stats import paired_bootstrap_p

NESTED_TEST = (
    "two-stage random-effects test: per-SFT-model paired mean Δ (AFT seeds averaged over the same "
    "examples), then a one-sample t-test across SFT models (df = n_SFT − 1)"
)
CORRECTION = "Holm over all settings compared (settings dropped on dev count with p = 1)"


@dataclass(frozen=True)
class ClaimBar:
    """What a setting must show to be claimed: Δentity accuracy > 0 at ΔBERTScore ≥ `bertscore_floor`,
    with the corrected p below `alpha`."""

    bertscore_floor: float = -0.03
    alpha: float = 0.05


def passes_bar(delta_entity: float, delta_bertscore: float, bar: ClaimBar) -> bool:
    """The claim's direction and floor (no p-value): Δentity > 0 and ΔBERTScore ≥ floor."""
    return bool(delta_entity > 0 and delta_bertscore >= bar.bertscore_floor)


def choose_point(dev: dict[str, dict[str, float]], bar: ClaimBar) -> str:
    """The checkpoint rule of a setting, chosen from its dev figures only.

    `dev` maps a point ("star", "last") to its mean dev Δ over the setting's branches
    ({"delta_entity_accuracy", "delta_bertscore"}); a point missing in any branch is absent. Among the
    points within the BERTScore floor, the one with the largest Δentity accuracy; if none is within
    the floor, the one that loses the least BERTScore.
    """
    if not dev:
        raise ValueError("no point to choose from")
    within = {p: v for p, v in dev.items() if v["delta_bertscore"] >= bar.bertscore_floor}
    if within:
        return max(sorted(within), key=lambda p: within[p]["delta_entity_accuracy"])
    return max(sorted(dev), key=lambda p: dev[p]["delta_bertscore"])


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and `level` t-interval (a point for one value; NaNs for none)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def variance_components(branch_means: np.ndarray) -> dict[str, float]:
    """One-way random-effects ANOVA of branch means m[i, j] (SFT model i, AFT seed j; balanced).

    MSB = J · var_i(mean_j m[i, j]), MSW = mean_i var_j(m[i, j]) (ddof 1);
    σ²_between = max(0, (MSB − MSW) / J), σ²_within = MSW; share_between = σ²_b / (σ²_b + σ²_w).
    """
    m = np.asarray(branch_means, dtype=float)  # [I, J]
    n_sft, n_aft = m.shape
    within = float(m.var(axis=1, ddof=1).mean()) if n_aft > 1 else float("nan")
    msb = float(n_aft * m.mean(axis=1).var(ddof=1)) if n_sft > 1 else float("nan")
    between = max(0.0, (msb - within) / n_aft) if not (math.isnan(msb) or math.isnan(within)) else float("nan")
    total = between + within
    return {
        "var_between_sft": between,
        "var_within_sft": within,
        "share_between_sft": between / total if total > 0 else float("nan"),
    }


def nested_effect(deltas: np.ndarray) -> dict[str, Any]:
    """The effect of a setting from per-example paired differences d[i, j, t] (SFT i, AFT seed j, example t).

    effect_i = mean_{j,t} d[i, j, t]; effect = mean_i effect_i, with the 95% t-interval and the two-sided
    p-value of a one-sample t-test of the effect_i against 0 (df = I − 1; NaN when I < 2, or when the effect_i
    are all equal and non-zero, where the t statistic is undefined; 1 when all are 0). Also each SFT model's own paired
    bootstrap p over examples (AFT seeds averaged), and the variance components of the branch means.
    """
    from scipy import stats

    d = np.asarray(deltas, dtype=float)  # [I, J, T]
    if d.ndim != 3 or d.size == 0:
        raise ValueError(f"deltas must be [SFT models, AFT seeds, examples], got shape {d.shape}")
    branch_means = d.mean(axis=2)  # [I, J]
    per_sft = branch_means.mean(axis=1)  # [I]
    mean, low, high = t_interval(per_sft.tolist())
    if per_sft.size < 2:
        p = float("nan")
    elif np.allclose(per_sft, per_sft[0]):
        p = 1.0 if per_sft[0] == 0 else float("nan")  # no spread: t is 0, or undefined (never claimed)
    else:
        p = float(stats.ttest_1samp(per_sft, 0.0).pvalue)
    return {
        "effect": mean,
        "ci": [low, high],
        "p": p,
        "n_sft": int(d.shape[0]),
        "n_aft": int(d.shape[1]),
        "examples": int(d.shape[2]),
        "per_sft_effect": per_sft.tolist(),
        "per_sft_p": [paired_bootstrap_p(d[i].mean(axis=0)) for i in range(d.shape[0])],
        "branch_effects": branch_means.tolist(),
        **variance_components(branch_means),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN counts as 1), in the input order."""
    p = np.asarray([1.0 if v is None or math.isnan(v) else v for v in pvalues], dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adjusted[i] = running
    return [float(x) for x in adjusted]
