"""The frontier experiment's statistics on hand-made per-example tables (experiments/frontier.py)."""
from __future__ import annotations

import importlib.util
import math

import pandas as pd
import pytest
from scipy import stats

from conftest import ROOT

spec = importlib.util.spec_from_file_location("frontier", ROOT / "experiments" / "frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)

IDS = [f"ex{i}" for i in range(6)]
VENUE = [True, True, True, True, False, False]


def frame(system, correct, bertscore, length=10.0):
    return pd.DataFrame({"system": system, "example_id": IDS, "venue_turn": VENUE, "entity_correct": correct,
                         "focus": -3.0, "bertscore": bertscore, "coverage_salient": 0.01, "length": length})


def run(seed, star_correct, star_bertscore, last_correct):
    per_example = pd.concat([frame("branch ★ step 50", star_correct, star_bertscore, 8.0),
                             frame("branch last step 100", last_correct, 0.5, 5.0)])
    return {"seed": seed, "per_example": per_example, "result": {"primary_step": 50, "last_step": 100}}


def test_deltas_confidence_intervals_and_paired_test_by_hand():
    sft = frame("SFT", [False, False, True, False, False, False], 0.70, 12.0)  # entity accuracy 1/4 on venue turns
    runs = {"salient": [run(0, [True, True, True, False, False, False], 0.69, [False] * 6),    # 3/4: +0.50
                        run(1, [True, False, True, False, False, False], 0.68, [False] * 6)]}  # 2/4: +0.25
    rows = {r["point"]: r for r in frontier.summarize(sft, runs)}
    star = rows["star"]
    assert star["seeds"] == 2 and star["steps"] == [50, 50] and star["venue_turns"] == 4
    assert star["delta_entity_accuracy"] == pytest.approx(0.375)
    half = stats.t.ppf(0.975, 1) * pd.Series([0.5, 0.25]).std(ddof=1) / math.sqrt(2)
    assert star["delta_entity_accuracy_ci"] == pytest.approx([0.375 - half, 0.375 + half])
    assert star["delta_bertscore"] == pytest.approx(-0.015)
    assert star["avg_len"] == 8.0
    # per venue turn, mean over seeds of correct(AFT) − correct(SFT): [1, 0.5, 0, 0] — positive, 4 turns
    assert star["entity_p_pooled"] == pytest.approx(frontier.paired_bootstrap_p([1.0, 0.5, 0.0, 0.0]))
    assert len(star["entity_p_per_seed"]) == 2
    assert rows["last"]["delta_entity_accuracy"] == pytest.approx(-0.25)
    assert not rows["last"]["raises_entity_accuracy"]


def test_a_setting_counts_as_raising_entity_accuracy_only_with_p_below_005_and_bertscore_within_the_floor():
    many_ids = [f"ex{i}" for i in range(60)]

    def big(system, correct, bertscore):
        return pd.DataFrame({"system": system, "example_id": many_ids, "venue_turn": True, "entity_correct": correct,
                             "focus": -3.0, "bertscore": bertscore, "coverage_salient": 0.0, "length": 9.0})

    sft = big("SFT", [False] * 60, 0.70)
    gain = [True] * 30 + [False] * 30  # +0.5 on 60 turns: p ≈ 0

    def runs(bertscore):
        per = pd.concat([big("branch ★ step 50", gain, bertscore), big("branch last step 100", gain, bertscore)])
        return {"s": [{"seed": s, "per_example": per, "result": {"primary_step": 50, "last_step": 100}} for s in range(3)]}

    assert all(r["raises_entity_accuracy"] for r in frontier.summarize(sft, runs(0.69)))
    assert not any(r["raises_entity_accuracy"] for r in frontier.summarize(sft, runs(0.60)))  # ΔBERTScore −0.10
    assert frontier.answer(frontier.summarize(sft, runs(0.69))).startswith("Yes: **s**")
    assert frontier.answer(frontier.summarize(sft, runs(0.60))).startswith("No. The closest is **s**")


def test_a_seed_without_a_star_is_counted_and_blocks_the_claim():
    sft = frame("SFT", [False] * 6, 0.70)
    no_star = run(1, [True] * 6, 0.70, [True] * 6)
    no_star["per_example"] = no_star["per_example"][no_star["per_example"]["system"].str.startswith("branch last")]
    rows = {r["point"]: r for r in frontier.summarize(sft, {"s": [run(0, [True] * 6, 0.70, [True] * 6), no_star]})}
    assert rows["star"]["seeds"] == 1 and rows["star"]["of_seeds"] == 2
    assert not rows["star"]["raises_entity_accuracy"]
    assert rows["last"]["seeds"] == 2


def test_outputs_are_written_and_shown_by_the_report(tmp_path):
    from aft_core.report import frontier_html

    sft = frame("SFT", [False, False, True, False, False, False], 0.70, 12.0)
    runs = {"salient coverage": [run(0, [True, True, True, False, False, False], 0.69, [False] * 6)],
            "focus lr1e-5 (default)": [run(0, [False] * 6, 0.60, [False] * 6)]}
    rows = frontier.summarize(sft, runs)
    meta = {"seeds": [0], "branches": 2, "test_examples": 6, "venue_turns": 4, "sft_entity_accuracy": 0.25,
            "sft_bertscore": 0.7, "sft_avg_len": 12.0, "steps_planned": 600, "steps_run": 500, "steps_saved": 100,
            "seconds": 60.0}
    folder = tmp_path / "frontier"
    frontier.write_outputs(folder, rows, meta, {})
    assert (folder / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (folder / "frontier.md").read_text()
    assert "| salient coverage | ★ | 1/1 |" in markdown and "early stopping saved 100 steps (17%)" in markdown
    html = frontier_html(folder)
    assert "<table id='frontier'>" in html and "salient coverage" in html and "data:image/png;base64," in html
    assert frontier.answer(rows) in html.replace("&#x27;", "'")
    assert frontier_html(tmp_path / "nowhere") == ""
