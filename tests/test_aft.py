"""A tiny AFT branch end to end: it moves the weights, raises the reward on a fixed batch, probes and labels."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pandas as pd
import pytest
import torch
from conftest import branch_config

from aft_core.aft import aft_step_loss, run_branch
from aft_core.data.batching import SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.errors import AftInputError
from aft_core.judging import judge_branch
from aft_core.models import family_of, load_model, parse_layers


def test_reward_rises_on_a_fixed_batch_and_weights_move(sft_model, towninfo_dir):
    torch.manual_seed(0)
    policy, tokenizer = load_model(sft_model)
    reference, _ = load_model(sft_model)
    policy.eval()
    reference.eval().requires_grad_(False)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = branch_config(sft_model, towninfo_dir, k=8, max_new_tokens=16, learning_rate=3e-3, eta_kl=0.0)
    family = family_of(policy, tokenizer)
    rows = encode_table(
        corpus_to_dataset(load_corpus(towninfo_dir))["train"].select(range(8)), tokenizer, family, 96, 8
    )
    src = SourceBatch.from_rows(rows.to_list(), tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
    layers = parse_layers("all", family.attention_layers(policy))
    rewards = []
    for _ in range(30):
        parts, metrics = aft_step_loss(policy, reference, family, src, cfg, layers)
        parts["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        rewards.append(metrics["reward_mean"])
    assert sum(rewards[-5:]) / 5 > sum(rewards[:5]) / 5, rewards
    assert any(not torch.equal(start[k], v) for k, v in policy.state_dict().items())


def test_branch_writes_probe_table_labels_and_resumes_exactly(tmp_path, sft_model, towninfo_dir):
    cfg = branch_config(sft_model, towninfo_dir)
    straight = run_branch(cfg, tmp_path / "a", progress=False)
    assert straight["steps"] == 4 and straight["bertscore_encoder"].startswith("all-MiniLM-L6-v2")
    probe = pd.read_parquet(tmp_path / "a" / "probe.parquet")
    assert probe["step"].tolist() == [0, 2, 4]
    for column in (
        "focus",
        "coverage",
        "repeat",
        "bertscore",
        "mean_length",
        "unique_outputs",
        "closing_rate",
        "delta_focus",
        "delta_bertscore",
        "loss_rising_steps",
        "reward_slope",
    ):
        assert column in probe and probe[column].notna().all(), column
    assert probe["delta_focus"].iloc[0] == 0.0
    assert not (tmp_path / "a" / "attractors.json").exists()  # training writes no verdict; judging does
    steps = pd.read_parquet(tmp_path / "a" / "steps.parquet")
    assert steps["step"].tolist() == [1, 2, 3, 4]
    for column in (
        "loss",
        "wmle",
        "kl",
        "reward_mean",
        "reward_std",
        "focus",
        "coverage",
        "repeat",
        "sample_length",
        "weight_entropy",
    ):
        assert column in steps, column
    verdict = judge_branch(tmp_path / "a")
    labels = json.loads((tmp_path / "a" / "attractors.json").read_text())
    assert labels == json.loads(json.dumps(verdict)) and [c["step"] for c in labels["checkpoints"]] == [0, 2, 4]

    assert run_branch(cfg, tmp_path / "b", progress=False, stop_after=2) == {"interrupted_at": 2}
    resumed = run_branch(cfg, tmp_path / "b", progress=False)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "a" / "checkpoints" / "step-0000004" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "step-0000004" / "model.safetensors")
    assert all(a[k].equal(b[k]) for k in a)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "probe.parquet"), pd.read_parquet(tmp_path / "b" / "probe.parquet")
    )
    assert resumed["steps"] == straight["steps"] and resumed["status"] == straight["status"] == "completed"
    assert judge_branch(tmp_path / "b") == verdict


def test_bad_branch_settings(sft_model, towninfo_dir, tmp_path):
    for over, field in (
        ({"k": 1}, "'k'"),
        ({"eta": 0.0}, "'eta'"),
        ({"gamma": -1.0}, "'gamma'"),
        ({"eta_kl": -0.1}, "'eta_kl'"),
        ({"max_new_tokens": 0}, "'max_new_tokens'"),
    ):
        with pytest.raises(AftInputError, match=field):
            branch_config(sft_model, towninfo_dir, **over).validate()
    with pytest.raises(AftInputError, match="probe_size.*exceeds the dev split"):
        run_branch(branch_config(sft_model, towninfo_dir, probe_size=10_000), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_probe_records_entity_accuracy_on_a_corpus_with_a_venue_database(tmp_path, sft_model, towninfo_dir):
    result = run_branch(branch_config(sft_model, towninfo_dir, steps=2, probe_size=40), tmp_path / "b", progress=False)
    probe = pd.read_parquet(tmp_path / "b" / "probe.parquet")
    assert (probe["venue_turns"] > 0).all()  # TownInfo's dev split opens with venue offers
    assert probe["entity_accuracy"].between(0, 1).all()
    assert probe["delta_entity_accuracy"].iloc[0] == 0.0
    assert probe["delta_entity_accuracy"].iloc[-1] == pytest.approx(
        probe["entity_accuracy"].iloc[-1] - probe["entity_accuracy"].iloc[0]
    )
    assert result["status"] == "completed"
    verdict = judge_branch(tmp_path / "b")
    assert verdict["last_delta_entity_accuracy"] == pytest.approx(probe["delta_entity_accuracy"].iloc[-1])


def test_a_branch_stuck_in_a_terminal_attractor_stops_early_with_its_evidence(tmp_path, sft_model, towninfo_dir):
    from aft_core.attractors import TERMINAL_MODES, thresholds_from

    # A closing-rate floor of 0 puts every checkpoint in the Underground River: the rule must stop the branch
    # at the second checkpoint in a row (step 0 counts: the paper basis labels SFT itself).
    always = thresholds_from("paper", {"closing_rate_min": 0.0})
    cfg = branch_config(sft_model, towninfo_dir, steps=8, early_stop_checkpoints=2)
    result = run_branch(cfg, tmp_path / "stuck", progress=False, thresholds=always)
    assert result["status"] == "stopped_in_attractor"
    assert result["steps"] == 2 and result["steps_saved"] == 6
    assert result["early_stop"]["checkpoints_in_attractor"] == 2 and result["early_stop"]["thresholds_basis"] == "paper"
    judge_branch(tmp_path / "stuck", always)
    labels = json.loads((tmp_path / "stuck" / "attractors.json").read_text())["checkpoints"]
    assert [c["step"] for c in labels] == [0, 2]
    assert all(c["label"] in TERMINAL_MODES for c in labels)  # the label by precedence; the closing rule fired in each
    assert all(c["evidence"]["generic_closing"]["closing_limit"] == 0.0 for c in labels)
    assert (tmp_path / "stuck" / "weights" / "step-0000002.safetensors").exists()  # the evidence is kept

    off = run_branch(
        branch_config(sft_model, towninfo_dir, steps=4, early_stop_checkpoints=0),
        tmp_path / "off",
        progress=False,
        thresholds=always,
    )
    assert off["status"] == "completed" and off["steps"] == 4


def test_adaptive_kl_follows_its_controller_step_by_step_and_resumes(tmp_path, sft_model, towninfo_dir):
    from aft_core.loss import adaptive_kl_update

    cfg = branch_config(sft_model, towninfo_dir, kl_estimator="k3", eta_kl=0.1, kl_target=0.001, kl_horizon=10)
    run_branch(cfg, tmp_path / "a", progress=False)
    steps = pd.read_parquet(tmp_path / "a" / "steps.parquet")
    assert steps["eta_kl"].iloc[0] == 0.1
    n = cfg.batch_size * cfg.k
    for before, after in itertools.pairwise(steps.itertuples()):
        assert after.eta_kl == pytest.approx(adaptive_kl_update(before.eta_kl, before.kl_per_token, 0.001, n, 10))
    assert steps["eta_kl"].nunique() > 1  # it moved

    assert run_branch(cfg, tmp_path / "b", progress=False, stop_after=2) == {"interrupted_at": 2}
    run_branch(cfg, tmp_path / "b", progress=False)
    resumed = pd.read_parquet(tmp_path / "b" / "steps.parquet")
    assert resumed["eta_kl"].tolist() == pytest.approx(steps["eta_kl"].tolist(), rel=1e-12)


def test_aft_classify_relabels_a_finished_branch_without_retraining(tmp_path, sft_model, towninfo_dir, capsys):
    from aft_core.cli import main

    folder = tmp_path / "branch"
    run_branch(branch_config(sft_model, towninfo_dir, early_stop_checkpoints=0), folder, progress=False)
    weights = sorted(p.name for p in (folder / "weights").iterdir())
    capsys.readouterr()

    training = json.loads((folder / "result.json").read_text())
    assert not {"primary_step", "final_label", "healthy_until"} & set(
        training
    )  # the verdict is stored once, by judging
    from aft_core.evaluation import branch_systems

    with pytest.raises(AftInputError, match="has not been judged.*aft classify"):
        branch_systems(sft_model, folder)  # evaluation reads ★ from the verdict only

    # Every checkpoint in the Underground River: no ★, the final label changes, nothing is retrained.
    assert main(["classify", str(folder), "--thresholds", "paper", "--threshold", "closing_rate_min=0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    labels = json.loads((folder / "attractors.json").read_text())
    assert printed["primary_step"] is None and labels["primary_step"] is None
    assert printed["final_label"] == labels["final_label"] == labels["checkpoints"][-1]["label"] != "healthy"
    assert labels["thresholds"]["basis"] == "paper" and labels["thresholds"]["closing_rate_min"] == 0
    assert printed["healthy_until"] is None  # the paper set with this floor labels SFT itself
    assert sorted(p.name for p in (folder / "weights").iterdir()) == weights
    assert json.loads((folder / "result.json").read_text()) == training  # training's record is untouched

    # Back to the default set: SFT is healthy again, and what is printed is what is stored.
    assert main(["classify", str(folder)]) == 0
    printed = json.loads(capsys.readouterr().out)
    labels = json.loads((folder / "attractors.json").read_text())
    assert labels["checkpoints"][0]["label"] == "healthy" and labels["healthy_until"] is not None
    assert printed["primary_step"] == labels["primary_step"] and labels["thresholds"]["basis"] == "sft"
    systems = branch_systems(sft_model, folder, name="b")
    star = labels["primary_step"]
    expected = {"b ★ = last step 4"} if star == 4 else {"b last step 4"} | ({f"b ★ step {star}"} if star else set())
    assert set(systems) == expected
    assert all(s["weights"].endswith(f"step-{int(n.split()[-1]):07d}.safetensors") for n, s in systems.items())

    assert main(["classify", str(tmp_path / "nowhere")]) == 2
    assert "not a finished AFT branch folder" in capsys.readouterr().err
    assert main(["classify", str(folder), "--threshold", "closing_rate_min"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_completions_and_candidates_tables_in_the_branch_folder_and_an_offline_comet_archive(
    tmp_path, sft_model, towninfo_dir
):
    """Each checkpoint: the probe's prompt, reference, greedy response and scores; every N steps: one prompt's K
    candidates with R, R̃ and weights (summing to 1). Both in the branch folder and in the Comet archive."""
    import zipfile

    from aft_core.layout import BranchLayout
    from tasks.tracking import CometTracker

    tracker = CometTracker(tmp_path, name="branch-tables", tags=["test"])
    try:
        run_branch(
            branch_config(sft_model, towninfo_dir, steps=4, probe_size=8),
            tmp_path / "b",
            tracker=tracker,
            progress=False,
            candidates_every=2,
        )
    finally:
        tracker.end()
    branch = BranchLayout(tmp_path / "b")
    completions = pd.read_parquet(branch.completions(4))
    probe = pd.read_parquet(branch.probe).set_index("step")
    assert len(completions) == 8 and set(completions["step"]) == {4}
    assert {"prompt", "reference", "response", "focus", "coverage", "repeat", "bertscore", "entity_correct"} <= set(
        completions
    )
    assert completions["focus"].mean() == pytest.approx(probe.loc[4, "focus"])  # the probe row is their mean
    assert completions["bertscore"].mean() == pytest.approx(probe.loc[4, "bertscore"])
    scored = completions["entity_correct"].dropna()
    assert len(scored) == probe.loc[4, "venue_turns"]
    if len(scored):
        assert scored.astype(float).mean() == pytest.approx(probe.loc[4, "entity_accuracy"])
    assert [p.name for p in sorted(branch.candidates(0).parent.iterdir())] == [
        "step-0000002.parquet",
        "step-0000004.parquet",
    ]
    candidates = pd.read_parquet(branch.candidates(2))
    assert len(candidates) == 2 and candidates["weight"].sum() == pytest.approx(1.0, abs=1e-5)
    assert candidates["normalised_reward"].sum() == pytest.approx(0.0, abs=1e-4)

    archive = zipfile.ZipFile(next((tmp_path / "comet").glob("*.zip")))
    uploads = [
        json.loads(line)["payload"]
        for line in archive.read("messages.json").decode().splitlines()
        if json.loads(line).get("type") == "file_upload"
    ]
    names = {u["additional_params"]["fileName"]: u["file_path"] for u in uploads}
    assert {f"completions-step-{s:07d}.csv" for s in (0, 2, 4)} | {"candidates-step-0000002.csv"} <= set(names)
    table = pd.read_csv(archive.open(names["completions-step-0000004.csv"]), index_col=0)
    assert table["response"].fillna("").tolist() == completions["response"].tolist()


def test_a_self_play_branch_trains_on_its_own_conversations_and_resumes_exactly(tmp_path, sft_model, towninfo_dir):
    """rollout=self_play: prompts are live conversations with the simulated user on training goals; each goes on
    with its prompt's highest-weighted candidate; the buffer is in every checkpoint, and a resumed branch equals an
    uninterrupted one bit for bit."""
    from safetensors.torch import load_file

    cfg = branch_config(
        sft_model,
        towninfo_dir,
        rollout="self_play",
        steps=5,
        checkpoint_every=2,
        self_play_conversations=6,
        self_play_refresh_every=4,  # fresh at 0 and 4: the resume at 2 replays live conversations
    )
    straight = run_branch(cfg, tmp_path / "a", progress=False)
    assert straight["status"] == "completed" and straight["steps"] == 5
    steps = pd.read_parquet(tmp_path / "a" / "steps.parquet")
    assert {"self_play_ended", "self_play_inform", "self_play_success"} <= set(steps.columns)
    # step 5 (after the refresh at 4) gave the first batch_size conversations their first reply each
    state = json.loads((tmp_path / "a" / "checkpoints" / "step-0000005" / "state.json").read_text())["trainer"]
    replies = [len(slot["replies"]) for slot in state["self_play"]["slots"]]
    assert len(replies) == 6 and state["self_play"]["cursor"] == cfg.batch_size % 6
    assert sum(replies) == cfg.batch_size - int(steps["self_play_ended"].iloc[-1])

    assert run_branch(cfg, tmp_path / "b", progress=False, stop_after=2) == {"interrupted_at": 2}
    run_branch(cfg, tmp_path / "b", progress=False)
    a = load_file(tmp_path / "a" / "checkpoints" / "step-0000005" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "step-0000005" / "model.safetensors")
    assert all(a[k].equal(b[k]) for k in a)
    pd.testing.assert_frame_equal(steps, pd.read_parquet(tmp_path / "b" / "steps.parquet"))

    # `rollout` is in the branch id and in the deployments' form, with its help
    from aft_core.config import config_id
    from flows.params import PipelineParams

    assert config_id(cfg) != config_id(dataclasses.replace(cfg, rollout="corpus"))
    schema = json.dumps(PipelineParams.model_json_schema())
    assert '"rollout"' in schema and "highest-weighted candidate" in schema
    corpus = run_branch(
        branch_config(sft_model, towninfo_dir, steps=5, checkpoint_every=2), tmp_path / "c", progress=False
    )
    c = load_file(tmp_path / "c" / "checkpoints" / "step-0000005" / "model.safetensors")
    assert not all(a[k].equal(c[k]) for k in a)  # other prompts, other updates
    assert corpus["status"] == "completed"


def test_the_self_play_buffer_replays_exactly_from_its_saved_state(towninfo_dir):
    """A checkpoint holds each conversation's goal, user seed and replies; restoring replays the simulated users,
    so the histories and whatever follows are those of the buffer that was saved."""
    from aft_core.data.towninfo import load_database
    from aft_core.dialogue.goals import load_goals
    from aft_core.dialogue.reader import Reader
    from aft_core.dialogue.rollout import SelfPlayBuffer

    def buffer():
        reader = Reader(load_database(towninfo_dir))
        return SelfPlayBuffer(
            load_goals(towninfo_dir, "train"), reader, size=5, reveal="agenda", max_exchanges=6, seed=1
        )

    replies = ["what area would you like ?", "i have booked it . reference number is abcd1234 .", "goodbye ."]
    first = buffer()
    first.restart(0)
    for turn in range(4):
        picked = first.take(3)
        first.answer(picked, [replies[(turn + i) % 3] for i in range(3)])
    second = buffer()
    second.restore(json.loads(json.dumps(first.state())))
    assert second.histories(range(5)) == first.histories(range(5))
    for buf in (first, second):
        picked = buf.take(4)
        buf.answer(picked, ["there is a cheap restaurant in the north ."] * 4)
    assert second.histories(range(5)) == first.histories(range(5)) and second.state() == first.state()
    again = buffer()
    again.restart(0)
    fresh = buffer()
    fresh.restart(0)
    assert again.state() == fresh.state()  # a refresh is a function of the seed and the step
    fresh.restart(2)
    assert fresh.state() != again.state()


def test_the_trajectory_term_credits_focus_across_a_conversations_turns(tmp_path, sft_model, towninfo_dir):
    """reward_trajectory > 0 (self-play): the chosen replies' focus is kept per conversation (in the checkpoint
    too) and enters later rewards, so the rewards differ from the per-turn HACA alone; on corpus prompts the term
    is refused with the fix. The branch also probes three conversations at each checkpoint (and the report plots
    them)."""
    base = dict(rollout="self_play", steps=3, checkpoint_every=4, self_play_conversations=4)
    turn = run_branch(branch_config(sft_model, towninfo_dir, **base), tmp_path / "turn", progress=False)
    cfg = branch_config(
        sft_model, towninfo_dir, reward_trajectory=1.0, trajectory_window=3, probe_conversations=3, **base
    )
    both = run_branch(cfg, tmp_path / "both", progress=False)
    # the probe conversations, at every checkpoint: outcome shares, and focus by system turn
    probe = pd.read_parquet(tmp_path / "both" / "probe.parquet")
    for column in ("conversation_success", "conversation_repeated_replies", "conversation_timeout"):
        assert probe[column].between(0, 1).all(), column
    assert all(len(json.loads(by_turn)) >= 1 for by_turn in probe["conversation_focus_by_turn"])
    from aft_core.report import probe_conversations_figure  # the report's plot of them; none without them

    assert probe_conversations_figure("both", probe, None).startswith("data:image/png;base64,")
    assert probe_conversations_figure("turn", pd.read_parquet(tmp_path / "turn" / "probe.parquet"), None) is None
    assert turn["status"] == both["status"] == "completed"
    state = json.loads((tmp_path / "both" / "checkpoints" / "step-0000003" / "state.json").read_text())["trainer"]
    kept = [slot["focus"] for slot in state["self_play"]["slots"]]
    assert [len(f) for f in kept] == [len(slot["replies"]) for slot in state["self_play"]["slots"]]
    assert sum(len(f) for f in kept) > 0 and all(v < 0 for f in kept for v in f)  # focus is a negative entropy
    a = pd.read_parquet(tmp_path / "turn" / "steps.parquet")["reward_mean"].tolist()
    b = pd.read_parquet(tmp_path / "both" / "steps.parquet")["reward_mean"].tolist()
    assert a[0] != b[0]  # the first step already adds the term (focus of the candidate itself)
    with pytest.raises(AftInputError, match="set rollout to self_play"):
        branch_config(sft_model, towninfo_dir, reward_trajectory=1.0).validate()
