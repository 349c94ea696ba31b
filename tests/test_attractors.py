"""The attractor classifier on synthetic trajectories built to match each signature, and ★ selection."""

from __future__ import annotations

import pytest

from aft_core.attractors import (
    THRESHOLD_SETS,
    classify,
    classify_trajectory,
    select_primary,
    should_stop_early,
    terminal_streak,
    thresholds_from,
)
from aft_core.errors import AftInputError

MAX_NEW = 128
PAPER = THRESHOLD_SETS["paper"]


def row(step, **over):
    base = {
        "step": step,
        "probe_size": 200,
        "focus": -3.6,
        "bertscore": 0.80,
        "mean_length": 37.0,
        "unique_outputs": 190,
        "closing_rate": 0.02,
        "repeat": 0.02,
        "delta_focus": 0.0,
        "delta_bertscore": 0.0,
        "loss_mean": 20.0,
        "loss_rising_steps": 0,
        "reward_slope": 0.0,
    }
    return {**base, **over}


CASES = {
    "healthy": row(250, focus=-3.3, delta_focus=0.34, delta_bertscore=-0.027),
    "template_fixation": row(600, unique_outputs=120, delta_focus=0.3, delta_bertscore=-0.05),
    "length_loop": row(
        700,
        mean_length=120.0,
        repeat=0.08,
        delta_focus=0.2,
        delta_bertscore=-0.1,
        loss_rising_steps=60,
        reward_slope=0.01,
    ),
    "generic_closing": row(800, closing_rate=0.14, focus=-4.0, repeat=0.0, delta_focus=-0.4, delta_bertscore=-0.1),
    "near_sft_inertia": row(500, delta_focus=0.03, delta_bertscore=0.002),
    "semantic_incoherence": row(
        915,
        mean_length=127.0,
        unique_outputs=200,
        bertscore=0.55,
        repeat=0.6,
        loss_mean=-724.0,
        delta_focus=-0.7,
        delta_bertscore=-0.25,
    ),
}


@pytest.mark.parametrize("expected", list(CASES))
def test_each_signature_gets_its_label_with_evidence(expected):
    result = classify(CASES[expected], None, MAX_NEW, PAPER)
    assert result.label == expected
    if expected != "healthy":
        assert expected in result.evidence and result.evidence[expected]
    else:
        assert result.evidence == {}


def test_evidence_names_the_values_that_fired():
    result = classify(CASES["semantic_incoherence"], None, MAX_NEW, PAPER)
    assert result.evidence["semantic_incoherence"]["bertscore"] == 0.55
    assert result.evidence["semantic_incoherence"]["loss_mean"] == -724.0
    assert "length_loop" in result.evidence  # also long and repetitive, but the Flash Flood takes precedence


def test_early_warnings_are_separate_from_the_label():
    early = classify(row(100, delta_focus=0.02), None, MAX_NEW, PAPER)
    assert early.label == "healthy" and "near_sft_inertia" in early.warnings
    prev = row(200, bertscore=0.78, mean_length=40.0)
    falling = classify(row(300, bertscore=0.70, mean_length=60.0, delta_focus=0.2), prev, MAX_NEW, PAPER)
    assert falling.label == "healthy"
    assert falling.warnings["semantic_incoherence"]["bertscore_drop_per_100"] == pytest.approx(0.08)
    rumination = classify(row(300, loss_rising_steps=55, reward_slope=0.002, delta_focus=0.2), None, MAX_NEW, PAPER)
    assert "length_loop" in rumination.warnings and rumination.label == "healthy"


def test_thresholds_are_settings():
    strict = thresholds_from("paper", {"unique_min_fraction": 0.99})
    assert classify(CASES["healthy"], None, MAX_NEW, strict).label == "template_fixation"


def test_primary_checkpoint_is_the_best_healthy_focus_gain_within_the_bertscore_floor():
    rows = [
        row(0),
        row(250, delta_focus=0.34, delta_bertscore=-0.027),
        row(300, delta_focus=0.5, delta_bertscore=-0.04),
        CASES["template_fixation"] | {"step": 400, "delta_focus": 0.9},
        row(200, delta_focus=0.2),
    ]
    for th in (PAPER, THRESHOLD_SETS["sft"]):
        labels = classify_trajectory(rows, MAX_NEW, th)
        assert select_primary(rows, labels, th) == 250
        assert select_primary([row(0)], classify_trajectory([row(0)], MAX_NEW, th), th) is None


def test_template_fixation_relative_to_sft():
    """Under the sft basis the Dam is judged against the SFT model's own unique count; the paper's against 200."""

    def row(step, unique):
        return {
            "step": step,
            "probe_size": 200,
            "unique_outputs": unique,
            "mean_length": 12.0,
            "repeat": 0.0,
            "bertscore": 0.7,
            "closing_rate": 0.0,
            "focus": -2.5,
            "delta_focus": 0.2,
            "delta_bertscore": 0.0,
        }

    rows = [row(0, 110), row(50, 100), row(100, 40)]
    absolute = classify_trajectory(rows, 48, PAPER)
    relative = classify_trajectory(rows, 48)
    assert [c.label for c in absolute] == ["template_fixation"] * 3
    assert [c.label for c in relative] == ["healthy", "healthy", "template_fixation"]  # 40 < 0.775 * 110
    assert relative[2].evidence["template_fixation"]["unique_min"] == pytest.approx(0.775 * 110)


# An SFT row that every absolute paper threshold calls an attractor: few unique outputs, a repetitive,
# closing-heavy, low-BERTScore, long-winded model (a templated corpus and a small encoder).
SFT_ROW = row(
    0, unique_outputs=100, repeat=0.05, closing_rate=0.2, bertscore=0.6, mean_length=120.0, focus=-2.0, loss_mean=-1.0
)


def test_the_sft_row_is_never_an_attractor_by_its_own_row_under_the_sft_basis():
    assert classify(SFT_ROW, None, MAX_NEW, PAPER).label != "healthy"  # the paper's thresholds do label it
    rows = [SFT_ROW, {**SFT_ROW, "step": 100}, {**SFT_ROW, "step": 500}]  # later checkpoints equal to SFT
    labels = classify_trajectory(rows, MAX_NEW)
    assert labels[0].label == "healthy" and labels[0].evidence == {}
    assert labels[1].label == "healthy"
    assert labels[2].label == "near_sft_inertia"  # 500 steps without moving: the Dry Riverbed, and nothing else


@pytest.mark.parametrize(
    "mode, change, limit_key, limit",
    [
        ("template_fixation", {"unique_outputs": 77}, "unique_min", 0.775 * 100),  # 77 < 77.5
        ("length_loop", {"repeat": 0.081}, "repeat_limit", 0.05 + 0.03),  # SFT repeat + 0.03
        ("generic_closing", {"closing_rate": 0.31}, "closing_limit", 0.2 + 0.10),  # SFT closing + 0.10
        ("semantic_incoherence", {"unique_outputs": 200, "bertscore": 0.44}, "bertscore_floor", 0.6 - 0.154),
    ],
)
def test_each_relative_threshold_fires_just_past_its_sft_based_limit(mode, change, limit_key, limit):
    checkpoint = {**SFT_ROW, "step": 300, **change}
    result = classify(checkpoint, SFT_ROW, MAX_NEW, THRESHOLD_SETS["sft"], sft=SFT_ROW)
    assert mode in result.evidence
    assert result.evidence[mode][limit_key] == pytest.approx(limit)
    key, value = next(iter(change.items()))
    just_inside = {**checkpoint, key: SFT_ROW[key]}  # the same change undone: the mode does not fire
    assert mode not in classify(just_inside, SFT_ROW, MAX_NEW, THRESHOLD_SETS["sft"], sft=SFT_ROW).evidence


def test_inertia_threshold_scales_with_the_sft_focus():
    sft = row(0, focus=-2.0)
    th = THRESHOLD_SETS["sft"]  # 0.10/3.656 of |focus_SFT| = 0.0547 nats here
    still = classify(row(500, focus=-1.95, delta_focus=0.05), sft, MAX_NEW, th, sft=sft)
    moved = classify(row(500, focus=-1.94, delta_focus=0.06), sft, MAX_NEW, th, sft=sft)
    assert still.label == "near_sft_inertia"
    assert still.evidence["near_sft_inertia"]["delta_focus_limit"] == pytest.approx(2.0 * 0.10 / 3.656)
    assert moved.label == "healthy"


def test_sft_basis_without_a_step_zero_row_is_refused():
    with pytest.raises(ValueError, match="step-0"):
        classify(row(50), None, MAX_NEW)


def test_named_threshold_sets_and_overrides():
    assert thresholds_from("paper").incoherence_bertscore == 0.65
    assert thresholds_from("sft", {"primary_min_delta_entity_accuracy": 0.0}).primary_min_delta_entity_accuracy == 0.0
    with pytest.raises(AftInputError, match="unknown threshold set"):
        thresholds_from("strict")
    with pytest.raises(AftInputError, match="'nonsense'"):
        thresholds_from("sft", {"nonsense": 1})
    with pytest.raises(AftInputError, match="'basis'"):
        thresholds_from("sft", {"basis": "absolute"})


def test_primary_can_require_entity_accuracy_not_to_fall():
    rows = [
        row(0, entity_accuracy=0.6, delta_entity_accuracy=0.0),
        row(100, delta_focus=0.30, delta_bertscore=-0.01, delta_entity_accuracy=-0.05),
        row(150, delta_focus=0.20, delta_bertscore=-0.01, delta_entity_accuracy=0.02),
    ]
    th = THRESHOLD_SETS["sft"]
    labels = classify_trajectory(rows, MAX_NEW, th)
    assert select_primary(rows, labels, th) == 100  # no entity rule: the largest ΔFocus
    floor = thresholds_from("sft", {"primary_min_delta_entity_accuracy": 0.0})
    assert select_primary(rows, labels, floor) == 150
    no_db = [{k: v for k, v in r.items() if "entity" not in k} for r in rows]
    with pytest.raises(AftInputError, match="no venue database"):
        select_primary(no_db, labels, floor)


def test_early_stopping_counts_terminal_checkpoints_in_a_row():
    sft = row(0, unique_outputs=150)
    dam = {"unique_outputs": 20, "delta_focus": 0.3}
    healthy = {"unique_outputs": 150, "delta_focus": 0.1}

    def labels(*kinds):
        rows = [sft] + [row(50 * (i + 1), **kind) for i, kind in enumerate(kinds)]
        return classify_trajectory(rows, MAX_NEW)

    assert terminal_streak(labels(healthy, dam)) == 1
    assert not should_stop_early(labels(healthy, dam), 2)
    assert should_stop_early(labels(healthy, dam, dam), 2)
    assert not should_stop_early(labels(dam, healthy, dam), 2)  # a recovery resets the count
    assert not should_stop_early(labels(dam, dam, dam), 0)  # 0 = never
    inert = {"unique_outputs": 150, "delta_focus": 0.0}  # the Dry Riverbed is not terminal
    assert terminal_streak(classify_trajectory([sft, row(500, **inert), row(550, **inert)], MAX_NEW)) == 0


def test_the_dam_and_the_whirlpool_seen_in_probe_conversations_relative_to_sft():
    """With probe conversations in the rows: repeated replies more than 0.2 above SFT's label the Dam, timeouts
    more than 0.3 above SFT's the Whirlpool, each with the conversation evidence; rows without them, or a checkpoint
    equal to SFT, are judged as before."""
    conv = {"conversation_success": 0.5, "conversation_repeated_replies": 0.25, "conversation_timeout": 0.3}
    sft = row(0, **conv)
    healthy = row(100, delta_focus=0.1, **{**conv, "conversation_repeated_replies": 0.44})
    assert classify(healthy, None, MAX_NEW, sft=sft).label == "healthy"
    assert classify(row(0, **conv), None, MAX_NEW, sft=sft).label == "healthy"
    dam = classify(row(100, delta_focus=0.1, **{**conv, "conversation_repeated_replies": 0.5}), None, MAX_NEW, sft=sft)
    assert dam.label == "template_fixation"
    assert dam.evidence["template_fixation"] == {
        "conversation_repeated_replies": 0.5,
        "conversation_repeated_limit": pytest.approx(0.45),
    }
    loop = classify(row(100, delta_focus=0.1, **{**conv, "conversation_timeout": 0.7}), None, MAX_NEW, sft=sft)
    assert loop.label == "length_loop" and loop.evidence["length_loop"]["conversation_timeout_limit"] == 0.6
    assert classify(row(100, delta_focus=0.1, conversation_timeout=0.9), None, MAX_NEW, sft=row(0)).label == "healthy"
