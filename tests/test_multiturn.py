"""experiments/multiturn.py's protocol on hand-made conversations: the point and the settings carried are chosen
on dev conversations alone, test is read once for them, and the effects are paired per goal and nested over SFT
models."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("multiturn", ROOT / "experiments" / "multiturn.py")
multiturn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(multiturn)

GOALS = [f"g{i:02d}" for i in range(20)]
EXAMPLES = [f"ex{i}" for i in range(40)]


class FakeRunner:
    """Per (split, setting, point) how many goals a branch succeeds on; SFT succeeds on the first 6 (full user) and
    the first 4 (sharded). Every call is recorded in order."""

    def __init__(self, wins: dict[tuple[str, str, str], int], extra=lambda key: 0):
        self.wins, self.extra, self.calls = wins, extra, []

    def sft(self, seed):
        return f"sft{seed}"

    def branch(self, sft_seed, setting, aft_seed):
        steps = {"star": 50, "last": 100}
        points = {p: {"model": f"sft{sft_seed}", "weights": f"w-{p}", "step": s} for p, s in steps.items()}
        return {"status": "completed", "steps": 100, "primary_step": 50, "final_label": "healthy",
                "setting": {"name": setting}, "points": points}  # fmt: skip

    def converse(self, split, key, systems, modes):
        self.calls.append(("converse", split, key, tuple(systems), modes))
        rows, trajectory = [], {}
        for name in systems:
            for mode in modes:
                if name == "SFT":
                    n = 6 if mode == "full" else 4
                else:
                    n = self.wins[(split, key[0], name)] + self.extra(key) - (2 if mode == "sharded" else 0)
                rows += [
                    {"system": name, "reveal": mode, "dialogue_id": g, "success": float(k < n), "inform": float(k < n)}
                    for k, g in enumerate(GOALS)
                ]
                trajectory[(name, mode)] = [-2.0, -3.0, -3.5]
        frame = pd.DataFrame(rows)
        frame.attrs["trajectory"] = trajectory
        return frame

    def score(self, split, key, systems):
        self.calls.append(("score", split, key, tuple(systems)))
        return pd.concat(
            pd.DataFrame(
                {"system": name, "example_id": EXAMPLES, "venue_turn": True, "entity_correct": False, "bertscore": 0.7}
            )  # fmt: skip
            for name in systems
        )


def test_dev_alone_chooses_the_point_and_the_settings_and_test_is_read_once():
    # dev: "a" gains at last only; "b" never beats SFT (dropped). On test "b" would win: it must not matter.
    wins = {
        ("validation", "a", "star"): 4,  # sharded: 2 < SFT's 4
        ("validation", "a", "last"): 9,  # sharded: 7 > 4
        ("validation", "b", "star"): 5,
        ("validation", "b", "last"): 6,  # sharded: 4 = SFT: no gain, not carried
        ("test", "a", "last"): 8,
        ("test", "b", "star"): 20,
        ("test", "b", "last"): 20,
    }
    runner = FakeRunner(wins)
    result = multiturn.run_protocol(runner, {"a": {}, "b": {}}, [0, 1, 2], [0, 1], log=lambda s: None)
    splits = [c[1] for c in runner.calls]
    first_test = splits.index("test")
    assert "validation" not in splits[first_test:], "a dev conversation after test was read"
    branch_tests = [c for c in runner.calls if c[1] == "test" and c[2][0] != "SFT"]
    assert {c[2][0] for c in branch_tests} == {"a"} and all(c[3] == ("last",) for c in branch_tests)
    assert len({(c[0], c[2]) for c in branch_tests}) == len(branch_tests) == 12  # conversations + single-turn, once
    rows = {r["setting"]: r for r in result["rows"]}
    assert rows["a"]["point"] == "last" and rows["a"]["carried_to_test"]
    assert rows["a"]["dev_delta_success"] == pytest.approx({"star": -2 / 20, "last": 3 / 20})
    assert not rows["b"]["carried_to_test"] and "test" not in rows["b"]
    t = rows["a"]["test"]
    assert t["success_sharded"]["effect"] == pytest.approx((6 - 4) / 20)
    assert t["success_full"]["effect"] == pytest.approx((8 - 6) / 20)
    assert t["sharding_drop"]["effect"] == pytest.approx(0.0)  # both lose 2 goals to sharding
    assert np.isnan(t["success_sharded"]["p"])  # every SFT model shows the same effect: no t, no claim
    assert not rows["a"]["survives"] and result["answer"].startswith("No. The closest is **a** (last)")
    assert result["sft_test"]["success_sharded"][0] == pytest.approx(4 / 20)
    assert rows["a"]["focus_by_turn"] == [-2.0, -3.0, -3.5]
    # the trajectory at the chosen point on dev, for a setting test never read too
    assert rows["b"]["dev_focus_by_turn"] == [-2.0, -3.0, -3.5] and "focus_by_turn" not in rows["b"]
    assert result["sft_test"]["dev_focus_by_turn"] == [-2.0, -3.0, -3.5]


def test_a_gain_that_varies_a_little_across_sft_models_holds_and_is_written(tmp_path):
    wins = {("validation", "a", "star"): 9, ("validation", "a", "last"): 3, ("test", "a", "star"): 10}
    runner = FakeRunner(wins, extra=lambda key: key[1] + key[2] if key[0] == "a" and len(key) == 4 else 0)
    result = multiturn.run_protocol(runner, {"a": {}}, [0, 1, 2], [0, 1, 2], log=lambda s: None)
    row = result["rows"][0]
    assert row["point"] == "star" and row["survives"] and row["p_holm"] < 0.05
    assert row["test"]["success_sharded"]["per_sft_effect"] == pytest.approx([(4 + 1) / 20, (4 + 2) / 20, (4 + 3) / 20])
    assert result["answer"].startswith("Yes: **a** (star)")
    result["meta"] = {"preset": "fake", "dev_goals": 20, "test_goals": 20, "test_examples": 40, "seconds": 6.0,
                      "branches": 9, "steps_run": 900}  # fmt: skip
    multiturn.write_json_atomic(tmp_path / "multiturn.json", result)
    md = multiturn.markdown(result)
    assert "| a | healthy | +0.150 / -0.150 | ★ |" in md and "**holds**" in md
    multiturn.plot(result, tmp_path / "multiturn.png")
    assert (tmp_path / "multiturn.png").read_bytes()[:4] == b"\x89PNG"
    from aft_core.report import multiturn_html  # the run report's section, when RUN_DIR/multiturn holds it

    html = multiturn_html(tmp_path)
    assert "<table id='multiturn'>" in html and "holds" in html and "data:image/png;base64," in html
    assert "Yes: **a** (star)" in html and multiturn_html(tmp_path / "nowhere") == ""


def test_nothing_carried_says_so_with_the_dev_figures():
    wins = {("validation", "a", "star"): 5, ("validation", "a", "last"): 6}
    result = multiturn.run_protocol(FakeRunner(wins), {"a": {}}, [0, 1, 2], [0], log=lambda s: None)
    assert result["answer"].startswith("No. No setting raised closed-loop success on dev")
    assert "a +0.000" in result["answer"]


def test_the_conversations_experiment_asks_the_same_of_the_frontiers_settings():
    """experiments/conversations.py: multiturn's protocol over the frontier's E3-20 and salient-coverage settings."""
    spec = importlib.util.spec_from_file_location("conversations", ROOT / "experiments" / "conversations.py")
    conversations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conversations)
    frontier = conversations.frontier
    assert conversations.SETTINGS == {k: frontier.SETTINGS[k] for k in ("E3-20 (focus)", "salient coverage, 200 steps")}
    assert conversations.PRESET == "towninfo-small"
    wins = {("validation", name, p): 6 for name in conversations.SETTINGS for p in ("star", "last")}
    result = conversations.multiturn.run_protocol(FakeRunner(wins), conversations.SETTINGS, [0, 1, 2], [0], print)
    assert [r["setting"] for r in result["rows"]] == list(conversations.SETTINGS)


def test_each_experiment_describes_itself_in_its_help(capsys):
    """conversations.py runs multiturn.py's command line; its --help must say what it asks, not multiturn's question."""
    spec = importlib.util.spec_from_file_location("conversations", ROOT / "experiments" / "conversations.py")
    conversations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conversations)
    for module, own, other in (
        (conversations, "Does single-turn AFT change whole conversations?", "Does training on its own"),
        (multiturn, "Does training on its own conversations help?", "Does single-turn AFT"),
    ):
        with pytest.raises(SystemExit):
            module.main(["--help"])
        shown = capsys.readouterr().out
        assert own in shown and other not in shown


def test_the_experiments_keep_their_definitions_whatever_a_preset_cuts_for_its_budget(tmp_path):
    """towninfo-selfplay's job trains a shorter SFT, towninfo-causal's too and gives up its conversations sooner, to
    hold their 15 minutes; the experiments' claims are about what they ran on: the frontier's SFT (towninfo-small's),
    the 1,000-step decoder-only SFT and 20-turn conversations. Everything the pins do not name is the preset's."""
    from flows.params import preset

    selfplay = multiturn.ConversationRunner(tmp_path / "selfplay", {}, "towninfo-selfplay", 1, 1, 1).params
    assert preset("towninfo-selfplay").sft != preset("towninfo-small").sft  # else this part checks nothing
    assert selfplay.sft == preset("towninfo-small").sft
    assert selfplay.sweep == preset("towninfo-selfplay").sweep
    assert selfplay.conversation == preset("towninfo-selfplay").conversation

    causal = multiturn.ConversationRunner(tmp_path / "causal", {}, "towninfo-causal", 1, 1, 1).params
    assert preset("towninfo-causal").conversation.max_exchanges != 20  # else this part checks nothing
    assert preset("towninfo-causal").sft.max_steps != 1000
    assert causal.sft == type(causal.sft)(model="causal-small", max_steps=1000)  # every other SFT setting the default
    assert (causal.conversation.max_exchanges, causal.sft.max_steps, causal.sft.model) == (20, 1000, "causal-small")
    assert causal.sweep == preset("towninfo-causal").sweep
    assert causal.conversation.goals == preset("towninfo-causal").conversation.goals
