"""LoRA adapters and memory switches (issue 23), for both model families: a LoRA branch starts exactly at SFT,
π_ref with the adapter disabled is the SFT model, only the adapter learns, gradient checkpointing changes no
number, a LoRA SFT model is base + adapter, and `aft export --merge` writes a plain model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import branch_config
from safetensors import safe_open

from aft_core.aft import load_policy_and_reference, run_branch, score_candidates
from aft_core.config import SFTConfig
from aft_core.data.batching import SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.errors import AftInputError
from aft_core.evaluation import load_system
from aft_core.models import adapters, family_of, load_model, parse_layers
from aft_core.models.family import enable_gradient_checkpointing
from aft_core.sft import run_sft

pytestmark = pytest.mark.slow
FAMILIES = {"seq2seq": "sft_model", "causal": "causal_sft_model"}


@pytest.fixture(params=list(FAMILIES))
def sft(request):
    return request.getfixturevalue(FAMILIES[request.param])


def _batch(tokenizer, family, towninfo_dir, n=4):
    rows = encode_table(
        corpus_to_dataset(load_corpus(towninfo_dir))["train"].select(range(n)), tokenizer, family, 96, 8
    )
    return SourceBatch.from_rows(rows.to_list(), family.pad_id())


def _samples(policy, family, src, k=2, seed=0):
    torch.manual_seed(seed)
    return family.generate(policy, src, max_new_tokens=10, do_sample=True, k=k)


def _perturb(model):
    """Non-zero adapter weights (a fresh adapter's B is zero, and would prove nothing)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def test_a_lora_branch_starts_exactly_at_sft_and_saves_only_its_adapter(sft, towninfo_dir, tmp_path):
    rows = {}
    for adapter in ("none", "lora"):
        cfg = branch_config(sft, towninfo_dir, adapter=adapter, steps=1, checkpoint_every=1, probe_size=8)
        run_branch(cfg, tmp_path / adapter, progress=False)
        rows[adapter] = pd.read_parquet(tmp_path / adapter / "probe.parquet")
    pd.testing.assert_series_equal(rows["none"].iloc[0], rows["lora"].iloc[0])  # step 0: the SFT model, bit for bit
    with safe_open(str(tmp_path / "lora" / "weights" / "step-0000001.safetensors"), "pt") as f:
        names = list(f.keys())
        assert json.loads(f.metadata()[adapters.ADAPTER_METADATA])["lora_rank"] == 8
    assert names and all("lora_" in name for name in names)
    full = tmp_path / "none" / "weights" / "step-0000001.safetensors"
    assert (tmp_path / "lora" / "weights" / "step-0000001.safetensors").stat().st_size < full.stat().st_size / 4


def test_the_reference_is_the_sft_model_with_the_adapter_disabled(sft, towninfo_dir):
    cfg = branch_config(sft, towninfo_dir, adapter="lora")
    policy, adapter, reference, tokenizer = load_policy_and_reference(cfg)
    assert isinstance(reference, adapters.AdapterDisabled)
    _perturb(policy)
    family = family_of(policy, tokenizer)
    src = _batch(tokenizer, family, towninfo_dir)
    samples = _samples(policy, family, src)
    separate, _ = load_model(sft)
    with torch.no_grad(), adapters.reference_model(reference) as ref_model:
        disabled = family.teacher_forced(ref_model, src, samples, 2, None)["token_logp"]
    with torch.no_grad():
        loaded = family.teacher_forced(separate.eval(), src, samples, 2, None)["token_logp"]
        enabled = family.teacher_forced(policy, src, samples, 2, None)["token_logp"]
    mask = family.teacher_forced(separate, src, samples, 2, None)["tgt_mask"]
    assert torch.equal(disabled[mask], loaded[mask])  # per token, exactly
    assert not torch.allclose(enabled[mask], loaded[mask])  # the adapter is really there when enabled


def test_only_the_adapter_learns(sft, towninfo_dir):
    cfg = branch_config(sft, towninfo_dir, adapter="lora", eta_kl=0.1, learning_rate=1e-2)
    policy, adapter, reference, tokenizer = load_policy_and_reference(cfg)
    family = family_of(policy, tokenizer)
    frozen = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" not in n}
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=cfg.learning_rate)
    src = _batch(tokenizer, family, towninfo_dir)
    parts, _ = score_candidates(
        policy,
        reference,
        family,
        src,
        _samples(policy, family, src),
        cfg,
        parse_layers("all", family.attention_layers(policy)),
    )
    parts["loss"].backward()
    grads = {n: p.grad for n, p in policy.named_parameters()}
    assert all(grads[n] is None for n in frozen)
    assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in trainable if "lora_B" in n)
    optimizer.step()
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if n in frozen)


@pytest.mark.parametrize("adapter", ["none", "lora"])
def test_gradient_checkpointing_changes_no_loss_and_no_gradient(sft, towninfo_dir, adapter):
    cfg = branch_config(sft, towninfo_dir, adapter=adapter, eta_kl=0.1)
    results = []
    for checkpointed in (False, True):
        policy, _, reference, tokenizer = load_policy_and_reference(cfg)
        if adapter == "lora":
            _perturb(policy)
        if checkpointed:
            enable_gradient_checkpointing(policy)
        family = family_of(policy, tokenizer)
        src = _batch(tokenizer, family, towninfo_dir)
        samples = _samples(policy, family, src)
        parts, metrics = score_candidates(
            policy, reference, family, src, samples, cfg, parse_layers("all", family.attention_layers(policy))
        )
        parts["loss"].backward()
        results.append(
            (
                samples,
                parts["loss"].item(),
                metrics["focus"],
                {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None},
            )
        )
    (s0, loss0, focus0, g0), (s1, loss1, focus1, g1) = results
    assert torch.equal(s0, s1)  # sampling (no gradients) is untouched
    assert loss1 == pytest.approx(loss0, rel=1e-5) and focus1 == pytest.approx(focus0, rel=1e-5)
    assert g0.keys() == g1.keys() and g0
    whole0, whole1 = (torch.cat([g[name].flatten() for name in sorted(g0)]) for g in (g0, g1))
    assert float((whole1 - whole0).norm() / whole0.norm()) < 1e-5  # summation order only


def test_a_lora_sft_model_is_base_plus_adapter_and_resumes_exactly(towninfo_dir, tmp_path):
    settings = dict(
        data=str(towninfo_dir),
        model="tiny",
        max_steps=20,
        eval_every=10,
        warmup_steps=2,
        dev_examples=32,
        batch_size=8,
        max_source_tokens=96,
        learning_rate=3e-3,
        adapter="lora",
        lora_rank=4,
        gradient_checkpointing=True,
    )
    straight = run_sft(SFTConfig(**settings), tmp_path / "a", progress=False)
    run_sft(SFTConfig(**settings), tmp_path / "b", progress=False, stop_after=10)
    resumed = run_sft(SFTConfig(**settings), tmp_path / "b", progress=False)
    model_dir = Path(straight["model_dir"])
    assert {p.name for p in model_dir.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    }
    assert not (model_dir / "model.safetensors").exists()
    assert json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == "../base"
    assert straight["trainable_parameters"] < straight["parameters"] / 4
    a = Path(straight["model_dir"]) / "adapter_model.safetensors"
    b = Path(resumed["model_dir"]) / "adapter_model.safetensors"
    from safetensors.torch import load_file

    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # loaded as base + adapter: the base's weights plus B·A·α/r on every adapted projection
    model, _ = load_model(model_dir)
    base, _ = load_model(tmp_path / "a" / "base")
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert moved and all(n.endswith("weight") for n in moved)


def test_export_merges_a_branch_adapter_into_a_plain_model(sft, towninfo_dir, tmp_path, capsys):
    from aft_core.cli import main

    branch = tmp_path / "branch"
    run_branch(
        branch_config(sft, towninfo_dir, adapter="lora", steps=2, checkpoint_every=1, probe_size=8, learning_rate=1e-2),
        branch,
        progress=False,
    )
    weights = branch / "weights" / "step-0000002.safetensors"
    evaluated, tokenizer = load_system(sft, weights)
    family = family_of(evaluated, tokenizer)
    src = _batch(tokenizer, family, towninfo_dir)
    samples = _samples(evaluated, family, src)
    with torch.no_grad():
        expected = family.teacher_forced(evaluated, src, samples, 2, None)
    for merge in ([], ["--merge"]):
        out = tmp_path / f"export{len(merge)}"
        assert main(["export", str(branch), "--out", str(out), "--step", "last", *merge]) == 0
        assert (out / ("model.safetensors" if merge else "adapter_model.safetensors")).exists()
        exported, _ = load_model(out)
        with torch.no_grad():
            got = family.teacher_forced(exported, src, samples, 2, None)
        torch.testing.assert_close(got["token_logp"][got["tgt_mask"]], expected["token_logp"][expected["tgt_mask"]])
    from transformers import AutoConfig  # the merged folder is a plain model: config.json, no adapter

    assert not (tmp_path / "export1" / "adapter_config.json").exists()
    assert AutoConfig.from_pretrained(tmp_path / "export1", local_files_only=True)
    capsys.readouterr()
    assert main(["export", str(branch), "--out", str(tmp_path / "x"), "--step", "7"]) == 2
    error = capsys.readouterr().err.strip()
    assert "step" in error and "\n" not in error and "Traceback" not in error


def test_memory_settings_are_validated_with_the_fix(sft_model, towninfo_dir):
    with pytest.raises(AftInputError, match="adapter"):
        branch_config(sft_model, towninfo_dir, adapter="qlora").validate()
    with pytest.raises(AftInputError, match="reference_device"):
        branch_config(sft_model, towninfo_dir, adapter="lora", reference_device="cpu").validate()
    with pytest.raises(AftInputError, match="lora_targets"):
        load_policy_and_reference(branch_config(sft_model, towninfo_dir, adapter="lora", lora_targets="no_such_module"))


def test_a_bf16_reference_on_the_cpu_scores_close_to_the_fp32_one(sft_model, towninfo_dir):
    cfg = branch_config(sft_model, towninfo_dir, reference_dtype="bfloat16", reference_device="cpu")
    policy, _, reference, tokenizer = load_policy_and_reference(cfg)
    assert next(reference.parameters()).dtype == torch.bfloat16 and next(policy.parameters()).dtype == torch.float32
    family = family_of(policy, tokenizer)
    src = _batch(tokenizer, family, towninfo_dir)
    samples = _samples(policy, family, src)
    parts, metrics = score_candidates(policy, reference, family, src, samples, cfg, [0])
    exact, _ = score_candidates(policy, policy, family, src, samples, cfg, [0])
    assert torch.isfinite(parts["loss"]) and metrics["kl_per_token"] == pytest.approx(0.0, abs=0.05)
    assert parts["loss"].item() == pytest.approx(exact["loss"].item(), rel=0.05)


def test_a_lora_branch_trains_on_its_own_conversations_in_both_families(sft, towninfo_dir, tmp_path):
    """rollout=self_play through each family's prompts and samples, with a LoRA adapter and every reward term
    (per-turn HACA, trajectory, task rollouts by the policy): the conversations go on with the policy's own replies
    (the checkpoint's buffer holds them, with their focus)."""
    cfg = branch_config(
        sft,
        towninfo_dir,
        adapter="lora",
        rollout="self_play",
        reward_trajectory=0.5,
        reward_task=1.0,
        task_horizon=2,
        steps=1,  # one step, off the checkpoint cadence: the final checkpoint holds that step's conversations
        checkpoint_every=2,
        probe_size=8,
        self_play_conversations=4,
    )
    result = run_branch(cfg, tmp_path / "b", progress=False)
    assert result["status"] == "completed" and result["steps"] == 1
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-0000001" / "state.json").read_text())["trainer"]
    steps = pd.read_parquet(tmp_path / "b" / "steps.parquet")
    assert sum(len(s["replies"]) for s in state["self_play"]["slots"]) == cfg.batch_size - int(
        steps["self_play_ended"].iloc[-1]
    )
    assert all(len(s["focus"]) == len(s["replies"]) for s in state["self_play"]["slots"])
