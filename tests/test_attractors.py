"""The attractor classifier on synthetic trajectories built to match each signature, and ★ selection."""
from __future__ import annotations

import pytest

from aft_core.attractors import AttractorThresholds, classify, classify_trajectory, select_primary

MAX_NEW = 128


def row(step, **over):
    base = {"step": step, "probe_size": 200, "focus": -3.6, "bertscore": 0.80, "mean_length": 37.0,
            "unique_outputs": 190, "closing_rate": 0.02, "repeat": 0.02, "delta_focus": 0.0,
            "delta_bertscore": 0.0, "loss_mean": 20.0, "loss_rising_steps": 0, "reward_slope": 0.0}
    return {**base, **over}


CASES = {
    "healthy": row(250, focus=-3.3, delta_focus=0.34, delta_bertscore=-0.027),
    "template_fixation": row(600, unique_outputs=120, delta_focus=0.3, delta_bertscore=-0.05),
    "length_loop": row(700, mean_length=120.0, repeat=0.08, delta_focus=0.2, delta_bertscore=-0.1,
                       loss_rising_steps=60, reward_slope=0.01),
    "generic_closing": row(800, closing_rate=0.14, focus=-4.0, repeat=0.0, delta_focus=-0.4, delta_bertscore=-0.1),
    "near_sft_inertia": row(500, delta_focus=0.03, delta_bertscore=0.002),
    "semantic_incoherence": row(915, mean_length=127.0, unique_outputs=200, bertscore=0.55, repeat=0.6,
                                loss_mean=-724.0, delta_focus=-0.7, delta_bertscore=-0.25),
}


@pytest.mark.parametrize("expected", list(CASES))
def test_each_signature_gets_its_label_with_evidence(expected):
    result = classify(CASES[expected], None, MAX_NEW)
    assert result.label == expected
    if expected != "healthy":
        assert expected in result.evidence and result.evidence[expected]
    else:
        assert result.evidence == {}


def test_evidence_names_the_values_that_fired():
    result = classify(CASES["semantic_incoherence"], None, MAX_NEW)
    assert result.evidence["semantic_incoherence"]["bertscore"] == 0.55
    assert result.evidence["semantic_incoherence"]["loss_mean"] == -724.0
    assert "length_loop" in result.evidence  # also long and repetitive, but the Flash Flood takes precedence


def test_early_warnings_are_separate_from_the_label():
    early = classify(row(100, delta_focus=0.02), None, MAX_NEW)
    assert early.label == "healthy" and "near_sft_inertia" in early.warnings
    prev = row(200, bertscore=0.78, mean_length=40.0)
    falling = classify(row(300, bertscore=0.70, mean_length=60.0, delta_focus=0.2), prev, MAX_NEW)
    assert falling.label == "healthy"
    assert falling.warnings["semantic_incoherence"]["bertscore_drop_per_100"] == pytest.approx(0.08)
    rumination = classify(row(300, loss_rising_steps=55, reward_slope=0.002, delta_focus=0.2), None, MAX_NEW)
    assert "length_loop" in rumination.warnings and rumination.label == "healthy"


def test_thresholds_are_settings():
    strict = AttractorThresholds(unique_min_fraction=0.99)
    assert classify(CASES["healthy"], None, MAX_NEW, strict).label == "template_fixation"


def test_primary_checkpoint_is_the_best_healthy_focus_gain_within_the_bertscore_floor():
    rows = [row(0), row(250, delta_focus=0.34, delta_bertscore=-0.027), row(300, delta_focus=0.5, delta_bertscore=-0.04),
            CASES["template_fixation"] | {"step": 400, "delta_focus": 0.9}, row(200, delta_focus=0.2)]
    labels = classify_trajectory(rows, MAX_NEW)
    assert select_primary(rows, labels) == 250
    assert select_primary([row(0)], classify_trajectory([row(0)], MAX_NEW)) is None


def test_template_fixation_relative_to_sft():
    """With unique_relative_to_sft, the Dam is judged against the SFT model's own unique count."""
    from aft_core.attractors import AttractorThresholds, classify_trajectory

    def row(step, unique):
        return {"step": step, "probe_size": 200, "unique_outputs": unique, "mean_length": 12.0, "repeat": 0.0,
                "bertscore": 0.7, "closing_rate": 0.0, "delta_focus": 0.2, "delta_bertscore": 0.0}

    rows = [row(0, 110), row(50, 100), row(100, 40)]
    absolute = classify_trajectory(rows, 48)
    relative = classify_trajectory(rows, 48, AttractorThresholds(unique_relative_to_sft=True))
    assert [c.label for c in absolute] == ["template_fixation"] * 3
    assert [c.label for c in relative] == ["healthy", "healthy", "template_fixation"]  # 40 < 0.775 * 110
