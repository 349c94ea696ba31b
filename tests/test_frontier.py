"""The claims protocol (aft_core.protocol) and the frontier that uses it (experiments/frontier.py), on hand-made
tables: nested statistics, Holm, the dev-only choice, and a test split that selection never reads."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from scipy import stats

from aft_core.protocol import ClaimBar, choose_point, holm, nested_effect, variance_components
from aft_core.stats import paired_bootstrap_p

spec = importlib.util.spec_from_file_location("frontier", ROOT / "experiments" / "frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)


def test_nested_effect_by_hand():
    # 3 SFT models × 2 AFT seeds × 2 examples
    d = np.array(
        [
            [[0.2, 0.4], [0.0, 0.2]],  # branch means 0.3, 0.1 -> SFT effect 0.2
            [[0.5, 0.5], [0.3, 0.3]],  # 0.5, 0.3 -> 0.4
            [[0.1, -0.1], [0.0, 0.0]],
        ]
    )  # 0.0, 0.0 -> 0.0
    e = nested_effect(d)
    assert e["per_sft_effect"] == pytest.approx([0.2, 0.4, 0.0])
    assert e["effect"] == pytest.approx(0.2)
    sd = np.std([0.2, 0.4, 0.0], ddof=1)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert e["ci"] == pytest.approx([0.2 - half, 0.2 + half])
    t = 0.2 / (sd / math.sqrt(3))
    assert e["p"] == pytest.approx(2 * stats.t.sf(t, 2))
    # within: mean of var([0.3, 0.1]), var([0.5, 0.3]), var([0, 0]) = (0.02 + 0.02 + 0) / 3
    assert e["var_within_sft"] == pytest.approx(0.04 / 3)
    # between: (J · var([0.2, 0.4, 0.0]) − within) / J = (2 · 0.04 − 0.04/3) / 2
    assert e["var_between_sft"] == pytest.approx((0.08 - 0.04 / 3) / 2)
    assert e["per_sft_p"][1] == paired_bootstrap_p([0.4, 0.4])


def test_two_sft_models_with_opposite_effects_give_no_claim_though_each_is_significant_alone():
    rng = np.random.default_rng(0)
    turns = 300
    up = (rng.random((3, turns)) < 0.35).astype(float)  # +0.35 on average: each branch gains entities
    down = -(rng.random((3, turns)) < 0.30).astype(float)  # −0.30: each branch loses them
    e = nested_effect(np.stack([up, down]))
    assert e["per_sft_p"][0] < 0.01 and e["per_sft_p"][1] < 0.01  # each SFT model alone: a clear effect
    assert e["p"] > 0.5 and e["ci"][0] < 0 < e["ci"][1]
    assert e["share_between_sft"] > 0.9


def test_a_pooled_turn_level_test_would_claim_what_the_nested_test_does_not():
    """Two SFT models, one with a large gain and one with none: pooling every branch's turns is significant,
    the test across SFT models (df = 1) is not. The structure is what stops a one-SFT-model claim."""
    rng = np.random.default_rng(1)
    big = (rng.random((3, 400)) < 0.3).astype(float)
    none = rng.choice([-1.0, 0.0, 1.0], size=(3, 400), p=[0.05, 0.9, 0.05])
    d = np.stack([big, none])
    assert paired_bootstrap_p(d.reshape(-1)) < 0.001
    e = nested_effect(d)
    assert e["effect"] > 0.1 and e["p"] > 0.05


def test_variance_components_are_zero_between_when_sft_models_agree():
    m = np.array([[0.1, 0.3], [0.3, 0.1], [0.2, 0.2]])
    v = variance_components(m)
    assert v["var_between_sft"] == 0.0 and v["var_within_sft"] == pytest.approx((0.02 + 0.02 + 0) / 3)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.02, float("nan")]) == pytest.approx([0.04, 1.0])


def test_point_choice_prefers_the_floor_then_entity_accuracy():
    bar = ClaimBar()
    dev = {
        "star": {"delta_entity_accuracy": 0.01, "delta_bertscore": -0.01},
        "last": {"delta_entity_accuracy": 0.05, "delta_bertscore": -0.05},
    }
    assert choose_point(dev, bar) == "star"  # last is below the floor
    dev["last"]["delta_bertscore"] = -0.02
    assert choose_point(dev, bar) == "last"
    both_below = {
        "star": {"delta_entity_accuracy": 0.0, "delta_bertscore": -0.1},
        "last": {"delta_entity_accuracy": 0.2, "delta_bertscore": -0.3},
    }
    assert choose_point(both_below, bar) == "star"


IDS = [f"ex{i}" for i in range(40)]


def scores(system: str, correct: list[bool], bertscore: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "system": system,
            "example_id": IDS,
            "venue_turn": [True] * 30 + [False] * 10,
            "entity_correct": correct,
            "bertscore": bertscore,
            "focus": -3.0,
            "length": 10.0,
        }
    )


class FakeRunner:
    """Per split a table of each system's correctness; every score call is recorded in order."""

    def __init__(self, gains: dict[tuple[str, str, str], int], bert: dict[tuple[str, str], float]):
        self.gains, self.bert, self.calls = gains, bert, []

    def sft(self, seed):
        return f"sft{seed}"

    def branch(self, sft_seed, setting, aft_seed):
        points = {
            "star": {"model": f"sft{sft_seed}", "weights": "w50", "step": 50},
            "last": {"model": f"sft{sft_seed}", "weights": "w100", "step": 100},
        }
        return {
            "status": "completed",
            "steps": 100,
            "primary_step": 50,
            "final_label": "healthy",
            "setting": {"name": setting},
            "points": points,
        }

    def score(self, split, key, systems):
        self.calls.append((split, key, tuple(systems)))
        frames = []
        for name in systems:
            if name == "SFT":
                frames.append(scores("SFT", [False] * 40, 0.70))
            else:
                setting = key[0]
                n = self.gains[(split, setting, name)]
                frames.append(scores(name, [True] * n + [False] * (40 - n), self.bert[(split, setting)]))
        return pd.concat(frames)


def test_selection_never_reads_the_test_split_and_test_is_scored_once_for_the_chosen_points():
    # On dev, "a" is best at last and "b" loses entities (dropped); on test, "a" would look better at ★ — it must
    # not matter.
    gains = {
        ("validation", "a", "star"): 3,
        ("validation", "a", "last"): 9,
        ("validation", "b", "star"): 0,
        ("validation", "b", "last"): 0,
        ("test", "a", "star"): 30,
        ("test", "a", "last"): 12,
        ("test", "b", "star"): 30,
        ("test", "b", "last"): 30,
    }
    bert = {("validation", "a"): 0.69, ("validation", "b"): 0.69, ("test", "a"): 0.69, ("test", "b"): 0.69}
    runner = FakeRunner(gains, bert)
    result = frontier.run_protocol(runner, {"a": {}, "b": {}}, [0, 1, 2], [0, 1, 2], ClaimBar(), log=lambda s: None)
    splits = [c[0] for c in runner.calls]
    first_test = splits.index("test")
    assert "validation" not in splits[first_test:], "a dev score after test was read"
    test_calls = [c for c in runner.calls if c[0] == "test"]
    branch_calls = [c for c in test_calls if c[1][0] != "SFT"]
    assert all(c[1][0] == "a" and c[2] == ("last",) for c in branch_calls) and len(branch_calls) == 9
    assert len({c[1] for c in test_calls}) == len(test_calls)  # each (system, branch) scored once
    rows = {r["setting"]: r for r in result["rows"]}
    assert rows["a"]["point"] == "last" and rows["a"]["carried_to_test"]
    assert not rows["b"]["carried_to_test"] and "test" not in rows["b"] and not rows["b"]["survives"]
    a = rows["a"]["test"]["entity_accuracy"]
    assert a["effect"] == pytest.approx(12 / 30) and a["n_sft"] == 3 and a["n_aft"] == 3
    assert np.isnan(a["p"])  # every SFT model shows exactly the same effect: t is undefined, so no claim
    assert rows["a"]["p_holm"] == 1.0 and not rows["a"]["survives"]
    assert result["answer"].startswith("No. The closest is **a** (last)")


def test_a_consistent_gain_across_sft_models_survives_and_is_written_and_shown(tmp_path):
    from aft_core.report import frontier_html

    gains = {("validation", "a", "star"): 3, ("validation", "a", "last"): 9, ("test", "a", "star"): 0}
    bert = {("validation", "a"): 0.69, ("test", "a"): 0.69}

    class Varying(FakeRunner):
        def score(self, split, key, systems):  # the test gain differs a little per SFT model and seed
            if split == "test" and key[0] == "a":
                self.gains[("test", "a", "last")] = 10 + key[1] + key[2] % 2
            return super().score(split, key, systems)

    result = frontier.run_protocol(
        Varying(gains, bert), {"a": {}}, [0, 1, 2], [0, 1, 2], ClaimBar(), log=lambda s: None
    )
    row = result["rows"][0]
    assert row["survives"] and row["p_holm"] < 0.05
    assert result["answer"].startswith("Yes: **a** (last)")
    result["meta"] = {"dev_examples": 40, "seconds": 60.0, "branches": 9, "steps_run": 900}
    frontier.write_outputs(tmp_path, result)
    assert (tmp_path / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "frontier.md").read_text()
    assert "| a | +0.100 / +0.300 | -0.010 / -0.010 | last |" in md.replace("−", "-") and "**holds**" in md
    html = frontier_html(tmp_path)
    assert "<table id='frontier'>" in html and "holds" in html and "data:image/png;base64," in html
    assert frontier_html(tmp_path / "nowhere") == ""


def test_a_resumed_experiment_says_its_wall_time_is_this_invocations_only():
    """Branches finished by an earlier invocation are counted as reused, and the closing line says so instead of
    passing one invocation's minutes off as the experiment's."""
    branches = {
        "a/sft0-aft0": {"steps": 300, "seconds": 240.0, "reused": True},
        "a/sft1-aft0": {"steps": 250, "seconds": 180.0, "reused": False},
    }
    times = frontier.branch_times(branches)
    assert times == {"steps_run": 550, "branch_seconds": 420.0, "branches_reused": 1}
    line = frontier.wall_time({"seconds": 90.0, "branches": 2, **times})
    assert line.startswith("Wall time of this invocation 1.5 min; 1 of 2 branches were finished by earlier")
    assert "training took 7.0 min, 550 AFT steps" in line
    fresh = frontier.branch_times({k: {**b, "reused": False} for k, b in branches.items()})
    assert frontier.wall_time({"seconds": 90.0, "branches": 2, **fresh}) == (
        "Wall time 1.5 min; 2 branches, 550 AFT steps run."
    )


def test_the_summary_prints_this_run_as_one_draw_beside_the_frontier_interval(tmp_path):
    from aft_core.layout import RunLayout
    from tasks.summary import one_draw_lines, pipeline_basis

    run = RunLayout(tmp_path)
    parameters = {"data": "", "towninfo_dialogues": 3000, "towninfo_seed": 0, "sft": {"model": "small", "seed": 0}}
    run.parameters.write_text(json.dumps(parameters))
    config = {
        "beta": 0.0,
        "ix_mode": "salient",
        "steps": 200,
        "sft_model": "runs/main/sft/model",
        "data": "x",
        "seed": 0,
        "keep_checkpoints": 3,
        "branch_id": "abc",
    }
    run.branch("abc").root.mkdir(parents=True)
    run.branch("abc").config.write_text(json.dumps(config))
    effect = {"effect": 0.02, "ci": [-0.01, 0.05], "n_sft": 3, "n_aft": 3}
    frontier_json = {
        "rows": [
            {
                "setting": "salient coverage",
                "point": "last",
                "survives": False,
                "p_holm": 0.4,
                "config": {**config, "sft_model": "elsewhere", "seed": 2, "keep_checkpoints": 1},
                "test": {"entity_accuracy": effect},
            }
        ],
        "sft_seeds": [0, 1, 2],
        "aft_seeds": [0, 1, 2],
        "test": "nested",
        "correction": "Holm",
        "answer": "No.",
        "meta": {"basis": pipeline_basis({**parameters, "sft": {"model": "small", "seed": 5}})},
    }
    run.frontier.mkdir()
    (run.frontier / "frontier.json").write_text(json.dumps(frontier_json))
    table = {
        "rows": [
            {"system": "SFT"},
            {"system": "abc ★ step 50", "vs_baseline": {"delta_entity_accuracy": 0.5}},
            {"system": "abc last step 200", "vs_baseline": {"delta_entity_accuracy": 0.074}},
        ]
    }
    lines = one_draw_lines(run, [{"branch_id": "abc"}], table)
    assert lines[0] == (
        "- salient coverage (`abc`): this run (last): Δentity accuracy +0.074; over 3 SFT models × 3 AFT "
        "seeds: +0.020 [-0.010, +0.050], Holm p = 0.400; the claim does not hold."
    )
    assert "One run is one draw" in lines[-1]
    # another corpus (or SFT recipe): the frontier does not speak for the run
    run.parameters.write_text(json.dumps({**parameters, "data": "../shared/data/multiwoz21/val.json.zip"}))
    assert one_draw_lines(run, [{"branch_id": "abc"}], table) == []


def test_stored_configs_are_compared_with_defaults_filled_on_both_sides():
    """A field added with a default must not make an older stored config differ (and a real difference still does)."""
    import dataclasses

    from aft_core.config import AFTConfig, SFTConfig, same_settings, with_defaults

    current = dataclasses.asdict(SFTConfig(model="small", max_steps=2000))
    stored = {k: v for k, v in current.items() if k not in ("adapter", "lora_rank", "gradient_checkpointing")}
    assert stored != current  # what the summary compared before: a plain == drops the match
    assert same_settings(SFTConfig, stored, current)
    assert not same_settings(SFTConfig, {**stored, "max_steps": 1000}, current)
    assert not same_settings(SFTConfig, {**stored, "adapter": "lora"}, current)  # a stored non-default still counts
    # a derived default is resolved as the class resolves it: no learning rate stored = the model's default
    assert with_defaults(SFTConfig, {"model": "small"})["learning_rate"] == 1e-3
    assert with_defaults(SFTConfig, {"model": "hf:org/name"})["learning_rate"] == 1e-4
    # a key the class no longer has still counts
    assert not same_settings(AFTConfig, {"retired_setting": 1}, {})
    assert same_settings(AFTConfig, {"seed": 1, "beta": 1.0}, {"seed": 2}, ignore=("seed",))


def test_the_committed_reference_frontier_speaks_for_the_main_job_preset(tmp_path):
    """The main job's summary prints its branches beside REFERENCE_FRONTIER only when the bases match: a field added
    to SFTConfig or AFTConfig (with its default) must not drop that section silently."""
    from flows.params import preset
    from tasks.summary import REFERENCE_FRONTIER, basis_matches, pipeline_basis, same_setting

    params = preset("towninfo-small")
    reference = json.loads(REFERENCE_FRONTIER.read_text(encoding="utf-8"))
    assert basis_matches(reference["meta"]["basis"], pipeline_basis(params.model_dump()))
    # and every branch of the main job is a setting the frontier measured
    from flows.params import branch_configs

    (tmp_path / "config.json").write_text("{}")  # a stand-in SFT model folder: the configs only name it
    for config in branch_configs(str(tmp_path), "corpus", params.sweep, params.sft.max_source_tokens):
        assert any(same_setting(row["config"], config["config"]) for row in reference["rows"]), config["config"]
