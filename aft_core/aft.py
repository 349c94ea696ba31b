"""The AFT trainer for one branch (AFT_SPEC §5): sample K, score by cross-attention, weighted MLE + KL.

Branch folder:
    config.json       the branch config (a different config in the same folder is refused)
    checkpoints/      step-NNNNNNN/ resumable states (model, optimizer, RNG, probe rows); the last few are kept
    weights/          step-NNNNNNN.safetensors: the policy's weights at every checkpoint (for ★ and last evaluation)
    steps.jsonl       one line per step: loss, WMLE and KL parts, reward mean/std, focus/coverage/repeat
                      of the samples, sample length, weight entropy (only checkpointed steps are kept)
    probe.parquet     one row per checkpoint (step 0 = the SFT model): probe metrics, Δ vs SFT, trend
    attractors.json   label, evidence and warnings per checkpoint, and the primary checkpoint (★)
    result.json       written last: the branch is complete (status `completed`; `diverged` when
                      `max_nonfinite_steps` non-finite steps came in a row; `stopped_in_attractor` when the last
                      `early_stop_checkpoints` checkpoints sat in a terminal attractor)
Dropout is off during AFT (the policy is scored and updated in eval mode), as is usual for RL fine-tuning.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import pandas as pd
import torch
from safetensors.torch import save_model
from tqdm.auto import tqdm

from aft_core.attention import encode, parse_layers, teacher_forced_pass
from aft_core.attractors import (AttractorThresholds, classify_trajectory, select_primary, should_stop_early,
                                 terminal_streak)
from aft_core.bertscore import load_bertscore
from aft_core.checkpoint import checkpoint_dir, resume_latest, save_checkpoint
from aft_core.config import AFTConfig, config_id
from aft_core.data.batching import BatchSchedule, SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.data.venues import VenueDB
from aft_core.errors import AftInputError
from aft_core.io import atomic_path, claim_run_dir, write_json_atomic
from aft_core.loss import adaptive_kl_update, aft_loss, kl_term, per_token_kl, sequence_logprob, softmax_weights
from aft_core.modeling import generate_ids, load_model, model_device, torch_threads
from aft_core.monitor import evaluate_probe, trend
from aft_core.reward import coverage, focus, haca_reward, repeat_penalty
from aft_core.timing import untimed
from aft_core.tracking import NullTracker, Tracker


def aft_step_loss(policy: Any, reference: Any, src: SourceBatch, cfg: AFTConfig, layers: Sequence[int],
                  pad_id: int, eos_id: int, timer: Callable[[str], ContextManager] = untimed,
                  eta_kl: float | None = None) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Steps 1-6 of AFT_SPEC §5 for B prompts; returns the loss parts (with grad) and step metrics.

    The encoder runs once per prompt; its states serve the K samples (one batched `generate`) and
    the teacher-forced pass. `timer` names the phases for profiles (bench/aft_step.py). `eta_kl`
    overrides cfg.eta_kl (the adaptive controller's current value).
    """
    device = src.input_ids.device
    with timer("teacher_forced"), mixed_precision(device):
        encoded = encode(policy, src.input_ids, src.attention_mask)  # [B,S,D], with grad
    with timer("sampling"), mixed_precision(device):
        samples = generate_ids(policy, src.input_ids, src.attention_mask, max_new_tokens=cfg.max_new_tokens,
                               do_sample=True, num_return_sequences=cfg.k, temperature=cfg.temperature,
                               encoded=encoded)  # [B*K, 1+T]
    return score_candidates(policy, reference, src, samples, cfg, layers, pad_id, eos_id, encoded, timer, eta_kl)


def score_candidates(policy: Any, reference: Any, src: SourceBatch, samples: torch.Tensor, cfg: AFTConfig,
                     layers: Sequence[int], pad_id: int, eos_id: int, encoded: torch.Tensor | None = None,
                     timer: Callable[[str], ContextManager] = untimed, eta_kl: float | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Steps 2-6 of AFT_SPEC §5 for given samples [B*K, 1+T] (K adjacent per prompt): HACA rewards from the
    policy's teacher-forced cross-attention, softmax weights, weighted MLE and the KL term against π_ref."""
    B, K = src.input_ids.shape[0], cfg.k
    device = src.input_ids.device
    # π_ref first: its temporaries are freed before the policy's graph is built, which lowers the peak
    with timer("reference"), torch.inference_mode(), mixed_precision(device):
        ref = teacher_forced_pass(reference, src.input_ids, src.attention_mask, samples, K, eos_id, None)
        ref_logits = ref["logits"].float() if cfg.kl_estimator == "full" else None
        ref_token_logp = ref["token_logp"]
        del ref
    ref_token_logp = ref_token_logp.clone()  # a normal tensor, usable beside autograd tensors
    ref_logits = ref_logits.clone() if ref_logits is not None else None
    with timer("teacher_forced"), mixed_precision(device):
        tf = teacher_forced_pass(policy, src.input_ids, src.attention_mask, samples, K, eos_id, layers, encoded)
    token_logp = tf["token_logp"]  # [N,T]
    labels, tgt_mask = tf["labels"], tf["tgt_mask"]  # [N,T]
    with timer("reward"):
        hist = src.mask(cfg.ix_mode).repeat_interleave(K, dim=0)  # [N,S]
        special = (pad_id, eos_id)
        rewards = haca_reward(tf["attn"], labels, tgt_mask, hist, cfg.alpha, cfg.beta, cfg.gamma, cfg.repeat_n, special)
    with timer("loss"):
        logp = sequence_logprob(token_logp, tgt_mask, cfg.logprob_reduction).view(B, K)
        kl = kl_term(cfg.kl_estimator, token_logp, ref_token_logp, tgt_mask, tf["logits"], ref_logits,
                     cfg.logprob_reduction).view(B, K)
        weights = softmax_weights(rewards.view(B, K), cfg.eta)
        eta_kl = cfg.eta_kl if eta_kl is None else eta_kl
        parts = aft_loss(weights, logp, kl, eta_kl)
    with timer("reward"):
        lengths = (tgt_mask & (labels != eos_id)).sum(dim=1).float()
        metrics = {
            "loss": parts["loss"].item(), "wmle": parts["wmle"].item(), "kl": parts["kl"].item(),
            "reward_mean": rewards.mean().item(), "reward_std": rewards.view(B, K).std(dim=-1, unbiased=False).mean().item(),
            "focus": focus(tf["attn"], tgt_mask, hist).mean().item(),
            "coverage": coverage(tf["attn"], tgt_mask, hist).mean().item(),
            "repeat": repeat_penalty(labels, tgt_mask, cfg.repeat_n, special).mean().item(),
            "sample_length": lengths.mean().item(),
            "weight_entropy": -(weights * weights.clamp(min=1e-12).log()).sum(dim=-1).mean().item(),
            "kl_per_token": per_token_kl(token_logp, ref_token_logp, tgt_mask), "eta_kl": eta_kl,
        }
    parts["rewards"] = rewards.view(B, K).detach()
    return parts, metrics


def apply_update(policy: Any, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float,
                 timer: Callable[[str], ContextManager] = untimed) -> tuple[bool, float | None]:
    """Backward, clip and step; a non-finite loss or gradient skips the update. Returns (applied, grad norm)."""
    grad_norm = None
    finite = bool(torch.isfinite(loss))
    if finite:
        with timer("backward"):
            loss.backward()
        with timer("optimizer"):
            grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip))
            finite = math.isfinite(grad_norm)
            if finite:
                optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return finite, grad_norm


def mixed_precision(device: torch.device) -> ContextManager:
    """bf16 autocast on a GPU that supports it (softmax and log-softmax stay fp32 under autocast); nothing on CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def run_branch(cfg: AFTConfig, out_dir: str | Path, tracker: Tracker | None = None, progress: bool = True,
               stop_after: int | None = None, thresholds: AttractorThresholds | None = None) -> dict[str, Any]:
    """Run (or resume, or return the finished result of) one AFT branch in `out_dir`.

    `thresholds` label the checkpoints (for ★ and for the early-stopping rule); default: the `sft` set.
    """
    cfg.validate()
    out = Path(out_dir)
    corpus = load_corpus(cfg.data)
    tables = corpus_to_dataset(corpus)
    if cfg.probe_size > len(tables["validation"]):
        raise AftInputError(cfg.data, "probe_size", f"{cfg.probe_size} exceeds the dev split ({len(tables['validation'])} examples)",
                            f"use --probe-size {len(tables['validation'])} or less")
    policy, tokenizer = load_model(cfg.sft_model)
    reference, _ = load_model(cfg.sft_model)
    branch_id = config_id(cfg)
    claim_run_dir(out, "config.json", {**dataclasses.asdict(cfg), "branch_id": branch_id})
    if (out / "result.json").exists():
        return json.loads((out / "result.json").read_text())
    torch.set_num_threads(torch_threads())
    tracker = tracker or NullTracker()
    policy.eval()  # dropout off; gradients still flow
    reference.eval().requires_grad_(False)
    layers = parse_layers(cfg.layers, policy.config.num_decoder_layers)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    train = encode_table(tables["train"], tokenizer, cfg.max_source_tokens, 8)
    probe = encode_table(tables["validation"].select(range(cfg.probe_size)), tokenizer, cfg.max_source_tokens, 8)
    train_rows = train.select_columns(["input_ids", "src_turn", "src_is_tag", "src_is_salient"]).to_list()
    probe_rows = probe.select_columns(["input_ids", "src_turn", "src_is_tag", "src_is_salient", "target",
                                       "belief_state"]).to_list()
    db = VenueDB.load(corpus.db_dir) if corpus.db_dir else None
    thresholds = thresholds or AttractorThresholds()
    scorer = load_bertscore(cfg.bertscore_model)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    def probe_row(step: int, logs: list[dict[str, float]], baseline: dict[str, Any] | None) -> dict[str, Any]:
        row = evaluate_probe(policy, tokenizer, probe_rows, ix_mode=cfg.ix_mode, layers=layers,
                             max_new_tokens=cfg.max_new_tokens, repeat_n=cfg.repeat_n, scorer=scorer, db=db)
        row.update(step=step, **trend(logs))
        base = baseline or row
        for key in ("focus", "coverage", "repeat", "bertscore", "mean_length"):
            row[f"delta_{key}"] = row[key] - base[key]
        if db is not None:
            both = row["entity_accuracy"] is not None and base["entity_accuracy"] is not None
            row["delta_entity_accuracy"] = row["entity_accuracy"] - base["entity_accuracy"] if both else None
        row["samples"] = json.dumps(row["samples"])
        return row

    resumed = resume_latest(out / "checkpoints", policy, optimizer, scheduler)
    steps_file = out / "steps.jsonl"
    if resumed is not None:
        state = resumed["trainer"]
        state.setdefault("eta_kl", cfg.eta_kl)  # checkpoints written before the adaptive controller existed
        lines = steps_file.read_text().splitlines()[: state["logged_steps"]] if steps_file.exists() else []
        with atomic_path(steps_file) as tmp:  # drop steps logged after the checkpoint
            tmp.write_text("".join(line + "\n" for line in lines))
    else:
        tracker.log_params({**dataclasses.asdict(cfg), "branch_id": branch_id})
        torch.manual_seed(cfg.seed)  # sampling RNG; a resume restores it from the checkpoint instead
        state = {"step": 0, "rows": [probe_row(0, [], None)], "logged_steps": 0, "skipped_nonfinite": 0,
                 "nonfinite_run": 0, "seconds": 0.0, "eta_kl": cfg.eta_kl}
        steps_file.unlink(missing_ok=True)
        _write_probe(out, state["rows"])

    schedule = BatchSchedule([len(r["input_ids"]) for r in train_rows], cfg.batch_size, cfg.seed + 1)
    pending: list[dict[str, float]] = []
    step = state["step"]
    started = time.monotonic() - state["seconds"]
    bar = tqdm(total=cfg.steps, initial=step, desc=f"aft {branch_id}", disable=not progress, dynamic_ncols=True)
    while step < cfg.steps and not state.get("early_stop"):
        idx = schedule(step)
        src = SourceBatch.from_rows([train_rows[i] for i in idx], pad_id).to(model_device(policy))
        parts, metrics = aft_step_loss(policy, reference, src, cfg, layers, pad_id, eos_id, eta_kl=state["eta_kl"])
        finite, grad_norm = apply_update(policy, optimizer, parts["loss"], cfg.grad_clip)
        if cfg.kl_target > 0 and finite:
            state["eta_kl"] = adaptive_kl_update(state["eta_kl"], metrics["kl_per_token"], cfg.kl_target,
                                                 src.input_ids.shape[0] * cfg.k, cfg.kl_horizon)
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        if finite:
            state["nonfinite_run"] = 0
        else:  # a non-finite loss or gradient: the update was skipped; count it
            state["skipped_nonfinite"] += 1
            state["nonfinite_run"] = state.get("nonfinite_run", 0) + 1
        step += 1
        metrics.update(step=step, nonfinite=not finite)
        pending.append(metrics)
        tracker.log_metrics({f"train/{k}": float(v) for k, v in metrics.items() if k != "step"}, step)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.2f}", R=f"{metrics['reward_mean']:.3f}")
        diverged = state["nonfinite_run"] >= cfg.max_nonfinite_steps
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or diverged:
            row = probe_row(step, [m for m in pending if not m["nonfinite"]], state["rows"][0])
            state["rows"].append(row)
            labels = classify_trajectory(state["rows"], cfg.max_new_tokens, thresholds)
            if step < cfg.steps and should_stop_early(labels, cfg.early_stop_checkpoints):
                # kept in the checkpoint: a branch resumed after this point does not train past its stop
                state["early_stop"] = {"checkpoints_in_attractor": terminal_streak(labels), "label": labels[-1].label,
                                       "thresholds_basis": thresholds.basis}
            tracker.log_metrics({f"probe/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step)
            with open(steps_file, "a", encoding="utf-8") as f:
                f.writelines(json.dumps(m) + "\n" for m in pending)
            state.update(step=step, logged_steps=state["logged_steps"] + len(pending),
                         seconds=time.monotonic() - started)
            pending = []
            with atomic_path(weights_path(out, step)) as tmp:
                save_model(policy, str(tmp))
            save_checkpoint(out / "checkpoints", step, policy, optimizer, scheduler, state, keep=cfg.keep_checkpoints)
            _write_probe(out, state["rows"])
            if diverged or state.get("early_stop"):
                break
            if stop_after is not None and step >= stop_after and step < cfg.steps:
                bar.close()
                return {"interrupted_at": step}
    bar.close()

    diverged = state["nonfinite_run"] >= cfg.max_nonfinite_steps
    stuck = not diverged and state.get("early_stop") is not None
    verdict = classify_branch(out, cfg.max_new_tokens, thresholds,
                              diverged_at=step if diverged else None, nonfinite_run=state["nonfinite_run"])
    steps = pd.read_json(steps_file, lines=True)
    with atomic_path(out / "steps.parquet") as tmp:
        steps.to_parquet(tmp)
    first = state["rows"][0]
    result = {
        "branch_id": branch_id, "steps": step,
        "status": "diverged" if diverged else "stopped_in_attractor" if stuck else "completed",
        "steps_saved": cfg.steps - step if stuck else 0,
        "early_stop": state["early_stop"] if stuck else None,
        **verdict, "skipped_nonfinite": state["skipped_nonfinite"], "nonfinite_run": state["nonfinite_run"], "seconds": round(time.monotonic() - started, 1),
        "bertscore_encoder": first["bertscore_encoder"], "bertscore_layer": first["bertscore_layer"],
        "thresholds": dataclasses.asdict(thresholds),
    }
    write_json_atomic(out / "result.json", result)
    tracker.log_params({"final_label": result["final_label"], "primary_step": result["primary_step"],
                        "status": result["status"]})
    return result


def weights_path(branch_dir: str | Path, step: int) -> Path:
    """The policy's weights saved at checkpoint `step` (kept for every checkpoint)."""
    return Path(branch_dir) / "weights" / f"{checkpoint_dir(Path(), step).name}.safetensors"


def classify_branch(branch_dir: str | Path, max_new_tokens: int, thresholds: AttractorThresholds | None = None,
                    diverged_at: int | None = None, nonfinite_run: int = 0) -> dict[str, Any]:
    """Label every checkpoint of a branch from its probe table, pick ★, write attractors.json.

    Re-runnable with other thresholds without retraining. A branch stopped by a run of
    non-finite steps ends labelled semantic_incoherence, with that run as its evidence.
    Returns the primary step, the final label and the Δ values at ★.
    """
    out = Path(branch_dir)
    rows = pd.read_parquet(out / "probe.parquet").to_dict("records")
    labels = classify_trajectory(rows, max_new_tokens, thresholds)
    if diverged_at is not None:
        last = labels[-1]
        last.evidence["semantic_incoherence"] = {"nonfinite_steps_in_a_row": float(nonfinite_run),
                                                 "stopped_at_step": float(diverged_at)}
        last.label = "semantic_incoherence"
    primary = select_primary(rows, labels, thresholds)
    write_json_atomic(out / "attractors.json", {"checkpoints": [c.as_row() for c in labels], "primary_step": primary})
    by_step = {int(r["step"]): r for r in rows}

    def at(step: int | None, key: str) -> float | None:
        value = by_step[step].get(key) if step is not None else None
        return None if value is None or value != value else float(value)  # NaN: a column absent at this step

    verdict: dict[str, Any] = {"primary_step": primary, "last_step": labels[-1].step, "final_label": labels[-1].label,
                               "healthy_until": _healthy_until(labels)}
    for key in ("delta_focus", "delta_bertscore", "delta_entity_accuracy"):
        verdict[f"primary_{key}"], verdict[f"last_{key}"] = at(primary, key), at(labels[-1].step, key)
    return verdict


def reclassify_branch(branch_dir: str | Path, thresholds: AttractorThresholds | None = None) -> dict[str, Any]:
    """Re-label a finished branch with `thresholds` (no retraining): attractors.json and the verdict in
    result.json are rewritten together, so ★ is never stale. Returns the updated result."""
    out = Path(branch_dir)
    for name in ("config.json", "result.json", "probe.parquet"):
        if not (out / name).exists():
            raise AftInputError(out, name, "not a finished AFT branch folder",
                                "point at a folder written by `aft train-branch` that holds result.json")
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    diverged_at = result["steps"] if result.get("status") == "diverged" else None
    verdict = classify_branch(out, config["max_new_tokens"], thresholds, diverged_at=diverged_at,
                              nonfinite_run=result.get("nonfinite_run", 0))
    result = {**result, **verdict, "thresholds": dataclasses.asdict(thresholds or AttractorThresholds())}
    write_json_atomic(out / "result.json", result)
    return result


def _healthy_until(labels: Sequence[Any]) -> int | None:
    """The last step of the healthy run that starts at step 0 (None when even step 0 is an attractor)."""
    last = None
    for c in labels:
        if c.label != "healthy":
            break
        last = c.step
    return last


def _write_probe(out: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(out / "probe.parquet") as tmp:
        pd.DataFrame(rows).to_parquet(tmp)
