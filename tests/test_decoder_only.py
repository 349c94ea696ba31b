"""experiments/decoder_only.py on hand-made branches and scores: windows, attractors, effects across SFT seeds, the
table and the report section."""

from __future__ import annotations

import importlib.util
import json

import pandas as pd
import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location("decoder_only", ROOT / "experiments" / "decoder_only.py")
decoder_only = importlib.util.module_from_spec(spec)
spec.loader.exec_module(decoder_only)


class FakeRunner:
    """Branch i of every setting raises focus by 0.1·(i+1) and lowers lookback by 0.05 on 4 examples."""

    def __init__(self, train_dir):
        self.train_dir = train_dir

    def sft(self, seed):
        return f"sft-{seed}"

    def branch(self, sft_seed, setting, aft_seed):
        folder = self.train_dir / "branches" / decoder_only.frontier.slug(setting) / f"sft{sft_seed}-aft{aft_seed}"
        folder.mkdir(parents=True)
        pd.DataFrame(
            {"step": [0, 50], "delta_focus": [0.0, 0.1], "delta_bertscore": [0.0, -0.01], "lookback": [0.6, 0.55]}
        ).to_parquet(folder / "probe.parquet")
        star = 50 if sft_seed != 1 else None
        points = {"last": {"model": "m", "weights": "w", "step": 50}}
        if star:
            points["star"] = {"model": "m", "weights": "w", "step": 50}
        return {
            "status": "completed",
            "steps": 50,
            "primary_step": star,
            "healthy_until": 50 if star else 0,
            "final_label": "healthy" if star else "template_fixation",
            "points": points,
            "sft_seed": sft_seed,
        }

    def score(self, split, key, systems):
        name = next(iter(systems))
        shift = 0.0 if name == "SFT" else 0.1 * (key[1] + 1)
        return pd.DataFrame(
            {
                "system": name,
                "example_id": list("abcd"),
                "focus": [-3.0 + shift] * 4,
                "bertscore": [0.8] * 4,
                "venue_turn": [True, True, False, False],
                "entity_correct": [True, name == "SFT", False, False],
                "lookback": [0.6 - (0.05 if name != "SFT" else 0.0)] * 4,
            }
        )


def test_effects_windows_and_the_report(tmp_path):
    runner = FakeRunner(tmp_path)
    fam = decoder_only.run_family(
        "decoder-only", "towninfo-causal", runner, tmp_path, [0, 1, 2], [0], log=lambda s: None
    )
    row = fam["rows"][0]
    assert row["with_star"] == 2 and row["n"] == 3 and row["final_labels"] == ["healthy", "template_fixation"]
    assert row["test"]["focus"]["effect"] == pytest.approx(0.2) and row["test"]["focus"][
        "per_sft_effect"
    ] == pytest.approx([0.1, 0.2, 0.3])
    assert row["test"]["lookback"]["effect"] == pytest.approx(-0.05)
    assert row["test"]["entity_accuracy"]["effect"] == pytest.approx(-0.5)  # one of two venue turns lost
    assert [b["point"] for b in row["branches"]] == ["star", "last", "star"]  # no ★: the last checkpoint
    result = {"families": [fam], "meta": {"sft_seeds": [0, 1, 2], "aft_seeds": [0]}}
    result["answer"] = decoder_only.answer(result)
    assert "a ★ in 4 of 6 branches" in result["answer"] and "lookback ratio of SFT 0.600" in result["answer"]
    table = decoder_only.markdown(result)
    assert "| decoder-only | E3-20 (focus) | 2/3 | 33 | healthy, template_fixation | +0.200 [" in table
    out = tmp_path / "run" / "decoder_only"
    out.mkdir(parents=True)
    (out / "decoder_only.json").write_text(json.dumps(result))
    from aft_core.report import decoder_only_html

    html = decoder_only_html(out)
    assert "<table id='decoder-only'>" in html and "+0.200" in html and "−" not in html.split("<table")[0]
