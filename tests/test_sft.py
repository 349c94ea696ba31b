"""SFT on the tiny preset: it learns, it resumes exactly, and it refuses a folder holding another run."""

from __future__ import annotations

import pytest
from conftest import snapshot
from safetensors.torch import load_file

from aft_core.config import SFTConfig
from aft_core.errors import AftInputError
from aft_core.sft import run_sft


def tiny_config(corpus, **overrides) -> SFTConfig:
    settings = dict(
        data=str(corpus),
        model="tiny",
        max_steps=30,
        eval_every=10,
        warmup_steps=5,
        dev_examples=64,
        batch_size=16,
        max_source_tokens=96,
        patience=0,
    )
    return SFTConfig(**{**settings, **overrides})


def test_sft_lowers_dev_loss(tmp_path, towninfo_dir):
    result = run_sft(tiny_config(towninfo_dir, max_steps=60, learning_rate=3e-3), tmp_path / "run", progress=False)
    losses = [loss for _, loss in result["dev_history"]]
    assert losses[-1] < losses[0] - 0.5, losses
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert (tmp_path / "run" / "sft_result.json").exists()
    # A finished run is not trained again.
    assert run_sft(tiny_config(towninfo_dir, max_steps=60, learning_rate=3e-3), tmp_path / "run") == result


def test_interrupted_run_resumes_to_identical_weights(tmp_path, towninfo_dir):
    cfg = tiny_config(towninfo_dir)
    straight = run_sft(cfg, tmp_path / "straight", progress=False)
    assert run_sft(cfg, tmp_path / "resumed", progress=False, stop_after=20) == {"interrupted_at": 20}
    resumed = run_sft(cfg, tmp_path / "resumed", progress=False)
    assert resumed["dev_history"] == straight["dev_history"]
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_refuses_output_folder_of_a_different_run(tmp_path, towninfo_dir):
    run_sft(tiny_config(towninfo_dir, max_steps=10), tmp_path / "run", progress=False)
    before = snapshot(tmp_path / "run")
    with pytest.raises(AftInputError, match="max_steps.*different run.*Fix:"):
        run_sft(tiny_config(towninfo_dir, max_steps=20), tmp_path / "run", progress=False)
    assert snapshot(tmp_path / "run") == before


def test_learning_rate_defaults_to_the_models_kind_and_is_resolved_into_the_hash(tmp_path):
    from aft_core.config import config_id

    assert SFTConfig(model="small").learning_rate == 1e-3  # built from config: trained from scratch
    assert SFTConfig(model="hf:google-t5/t5-large").learning_rate == 1e-4  # pretrained: fine-tuned
    assert SFTConfig(model=str(tmp_path)).learning_rate == 1e-4
    assert SFTConfig(model="hf:org/name", learning_rate=3e-5).learning_rate == 3e-5  # given: kept
    # the resolved rate is what is hashed, so runs made before the default existed keep their ids
    assert config_id(SFTConfig(model="small")) == config_id(SFTConfig(model="small", learning_rate=1e-3))
    with pytest.raises(AftInputError, match="learning_rate"):
        SFTConfig(data="x", learning_rate=-1.0).validate()


def test_the_t5_sft_loss_reads_only_response_positions_and_equals_the_models_own_loss():
    """`sft_logits` runs the LM head at the labelled positions only ([1,M,V]); the loss and every gradient equal
    those of transformers' own forward with labels (logits at every position, padding ignored), to rounding."""
    import torch

    from aft_core.models import build_model, family_of, train_tokenizer

    tokenizer = train_tokenizer(["the museum is free", "there are 3 hotels in the north", "book it please"], 120)
    model = build_model("tiny", tokenizer, seed=0)
    family = family_of(model, tokenizer)
    sources = [[5, 6, 7, 8, 1], [9, 10, 1], [11, 12, 13, 1]]
    targets = [[14, 15, 1], [16, 17, 18, 19, 20, 1], [21, 1]]  # unequal: the batch pads two of them
    batch = family.sft_batch(sources, targets, family.pad_id())
    assert torch.equal(batch["decoder_input_ids"], model._shift_right(batch["labels"]))  # as the model shifts them
    logits, labels = family.sft_logits(model, batch)
    assert logits.shape[:2] == (1, sum(len(t) for t in targets)) and labels.tolist() == [sum(targets, [])]
    loss = family.sft_loss(model, batch)
    loss.backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    theirs = model(**batch).loss
    theirs.backward()
    assert float(loss) == pytest.approx(float(theirs), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_fused_adamw_is_the_default_update_to_rounding_and_an_unfused_checkpoint_resumes_unfused():
    import torch

    from aft_core.sft import fused_adamw

    torch.manual_seed(0)
    start = torch.randn(64, 32)
    grads = [torch.randn(64, 32) for _ in range(5)]
    results = []
    for make in (
        lambda p: fused_adamw(p, lr=1e-2, weight_decay=0.01),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
    ):
        weight = torch.nn.Parameter(start.clone())
        optimizer = make([weight])
        for grad in grads:
            weight.grad = grad.clone()
            optimizer.step()
        results.append((weight.detach(), optimizer))
    (fused_weight, fused), (plain_weight, plain) = results
    assert fused.param_groups[0]["fused"] is True
    torch.testing.assert_close(fused_weight, plain_weight, rtol=1e-5, atol=1e-6)
    resumed = fused_adamw([torch.nn.Parameter(plain_weight.clone())], lr=1e-2, weight_decay=0.01)
    resumed.load_state_dict(plain.state_dict())  # as aft_core.checkpoint restores it: the saved settings win
    assert not resumed.param_groups[0]["fused"]
