"""The AFT trainer for one branch (AFT_SPEC §5): sample K, score by cross-attention, weighted MLE + KL.

`aft_step_loss` is one step of the method; `BranchRun` plugs it into the shared resumable loop
(aft_core.trainer) with a probe evaluation at every checkpoint. Training writes the branch folder's
config, checkpoints, weights at every checkpoint, steps log and probe table, and last its result
(status `completed`; `diverged` when `max_nonfinite_steps` non-finite steps came in a row;
`stopped_in_attractor` when the last `early_stop_checkpoints` checkpoints sat in a terminal attractor).
The verdict (labels, ★) is judging's (aft_core.judging); the folder's files are aft_core.layout's.
Dropout is off during AFT (the policy is scored and updated in eval mode), as is usual for RL fine-tuning.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from aft_core.attractors import AttractorThresholds, classify_trajectory, should_stop_early, terminal_streak
from aft_core.bertscore import load_bertscore
from aft_core.config import CANDIDATES_EVERY, AFTConfig, config_id
from aft_core.data.batching import BatchSchedule, SourceBatch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table
from aft_core.data.venues import VenueDB
from aft_core.dialogue.closed_loop import reader_gate
from aft_core.dialogue.goals import Goal, dialogues_file, load_goals, read_dialogues
from aft_core.dialogue.multiwoz_words import corpus_user_words
from aft_core.dialogue.reader import Reader
from aft_core.dialogue.rollout import SelfPlayBuffer
from aft_core.dialogue.selfplay import ModelSystem, converse
from aft_core.errors import AftInputError
from aft_core.faults import hold_point
from aft_core.io import atomic_path, claim_run_dir
from aft_core.layout import BranchLayout
from aft_core.loss import adaptive_kl_update, aft_loss, kl_term, per_token_kl, sequence_logprob, softmax_weights, zscore
from aft_core.models import (
    ModelFamily,
    adapters,
    check_model_source,
    family_of,
    load_model,
    model_device,
    parse_layers,
    trainable_parameters,
)
from aft_core.models.adapters import reference_model, save_policy_weights
from aft_core.models.family import enable_gradient_checkpointing
from aft_core.monitor import evaluate_probe, trend
from aft_core.reward import coverage, focus, haca_reward, repeat_penalty, task_reward, trajectory_reward
from aft_core.timing import untimed
from aft_core.tracking import NullTracker, Tracker
from aft_core.trainer import LoopSettings, TrainerState, finished_result, train

PROMPT_COLUMNS = ["input_ids", "src_turn", "src_is_tag", "src_is_salient", "src_is_template"]


def aft_step_loss(
    policy: Any,
    reference: Any,
    family: ModelFamily,
    src: SourceBatch,
    cfg: AFTConfig,
    layers: Sequence[int],
    timer: Callable[[str], ContextManager] = untimed,
    eta_kl: float | None = None,
    trajectory: tuple[torch.Tensor, torch.Tensor] | None = None,
    task: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Steps 1-6 of AFT_SPEC §5 for B prompts; returns the loss parts (with grad) and step metrics.

    `trajectory` and `task` (self-play's reward terms, AFT_SPEC §9): see `score_candidates`; `task` maps the
    samples [B*K, P+T] to each candidate's task reward [B*K].

    The prompt's state (an encoder's states; a decoder-only model's prefill inside sampling) is computed once
    per prompt and serves its K samples and the teacher-forced pass. `timer` names the phases for profiles
    (bench/aft_step.py). `eta_kl` overrides cfg.eta_kl (the adaptive controller's current value).
    """
    device = src.input_ids.device
    with timer("teacher_forced"), mixed_precision(device):
        state = family.prompt_state(policy, src)  # with grad
    with timer("sampling"), mixed_precision(device):
        samples = family.generate(
            policy,
            src,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=True,
            k=cfg.k,
            temperature=cfg.temperature,
            state=state,
        )  # [B*K, P+T]
    task_rewards = None
    if task is not None:
        with timer("task"), torch.no_grad():
            task_rewards = task(samples)
    return score_candidates(
        policy, reference, family, src, samples, cfg, layers, state, timer, eta_kl, trajectory, task_rewards
    )


def score_candidates(
    policy: Any,
    reference: Any,
    family: ModelFamily,
    src: SourceBatch,
    samples: torch.Tensor,
    cfg: AFTConfig,
    layers: Sequence[int],
    state: Any = None,
    timer: Callable[[str], ContextManager] = untimed,
    eta_kl: float | None = None,
    trajectory: tuple[torch.Tensor, torch.Tensor] | None = None,
    task_rewards: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Steps 2-6 of AFT_SPEC §5 for given samples [B*K, P+T] (K adjacent per prompt): HACA rewards from the
    policy's teacher-forced attention over the prompt, softmax weights, weighted MLE and the KL term against π_ref.

    `trajectory` (self-play): per prompt, the sum of focus over its conversation's earlier system turns in the
    window and their count [B], [B]; `task_rewards` [B*K] each candidate's R_task. The reward is then
    reward_turn_haca·R + reward_trajectory·R_traj + reward_task·R_task (AFT_SPEC §9), and `parts["turn_focus"]`
    [B,K] is each candidate's focus, kept for the turns after it."""
    B, K = src.input_ids.shape[0], cfg.k
    device = src.input_ids.device
    pad_id, eos_id = family.pad_id(), family.eos_id()
    # π_ref first: its temporaries are freed before the policy's graph is built, which lowers the peak
    with timer("reference"), torch.inference_mode(), reference_model(reference) as ref_model:
        ref_device = model_device(ref_model)  # π_ref may live on the CPU beside a GPU policy
        with mixed_precision(ref_device):
            ref = family.teacher_forced(ref_model, src.to(ref_device), samples.to(ref_device), K, None)
        ref_logits = ref["logits"].float() if cfg.kl_estimator == "full" else None
        ref_token_logp = ref["token_logp"].float()
        del ref
    ref_token_logp = ref_token_logp.to(device).clone()  # a normal tensor, usable beside autograd tensors
    ref_logits = ref_logits.to(device).clone() if ref_logits is not None else None
    with timer("teacher_forced"), mixed_precision(device):
        tf = family.teacher_forced(policy, src, samples, K, layers, state)
    token_logp = tf["token_logp"]  # [N,T]
    labels, tgt_mask = tf["labels"], tf["tgt_mask"]  # [N,T]
    with timer("reward"):
        hist = src.mask(cfg.ix_mode).repeat_interleave(K, dim=0)  # [N,S]
        special = (pad_id, eos_id)
        reward_attn = tf["attn"] if cfg.reward_attention == "renormalised" else tf["attn_raw"]
        rewards = haca_reward(
            reward_attn, labels, tgt_mask, hist, cfg.alpha, cfg.beta, cfg.gamma, cfg.repeat_n, special
        )
        turn_focus = None
        if trajectory is not None or task_rewards is not None:  # terms beyond today's R (alone: R exactly as it was)
            rewards = cfg.reward_turn_haca * rewards
        if trajectory is not None:
            turn_focus = focus(reward_attn, tgt_mask, hist)  # [N]
            before, turns = (t.to(device).repeat_interleave(K) for t in trajectory)  # [N]
            rewards = rewards + cfg.reward_trajectory * trajectory_reward(turn_focus, before, turns)
        if task_rewards is not None:
            rewards = rewards + cfg.reward_task * task_rewards.to(device)
    with timer("loss"):
        logp = sequence_logprob(token_logp, tgt_mask, cfg.logprob_reduction).view(B, K)
        kl = kl_term(
            cfg.kl_estimator, token_logp, ref_token_logp, tgt_mask, tf["logits"], ref_logits, cfg.logprob_reduction
        ).view(B, K)
        weights = softmax_weights(rewards.view(B, K), cfg.eta)
        eta_kl = cfg.eta_kl if eta_kl is None else eta_kl
        parts = aft_loss(weights, logp, kl, eta_kl)
    with timer("reward"):
        lengths = (tgt_mask & (labels != eos_id)).sum(dim=1).float()
        metrics = {
            "loss": parts["loss"].item(),
            "wmle": parts["wmle"].item(),
            "kl": parts["kl"].item(),
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.view(B, K).std(dim=-1, unbiased=False).mean().item(),
            "focus": focus(tf["attn"], tgt_mask, hist).mean().item(),
            "coverage": coverage(tf["attn"], tgt_mask, hist).mean().item(),
            "repeat": repeat_penalty(labels, tgt_mask, cfg.repeat_n, special).mean().item(),
            "sample_length": lengths.mean().item(),
            "weight_entropy": -(weights * weights.clamp(min=1e-12).log()).sum(dim=-1).mean().item(),
            "kl_per_token": per_token_kl(token_logp, ref_token_logp, tgt_mask),
            "eta_kl": eta_kl,
            "lookback": tf["lookback"].mean().item(),
        }
    parts["rewards"] = rewards.view(B, K).detach()
    parts["weights"], parts["samples"] = weights, samples  # what a candidates table shows
    if turn_focus is not None:
        parts["turn_focus"] = turn_focus.view(B, K).detach()
    return parts, metrics


def apply_update(
    policy: Any,
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    grad_clip: float,
    timer: Callable[[str], ContextManager] = untimed,
) -> tuple[bool, float | None]:
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


@dataclasses.dataclass
class BranchState(TrainerState):
    eta_kl: float = 0.0  # the KL weight now (moved by the adaptive controller when kl_target > 0)
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # probe rows, one per checkpoint
    logged_steps: int = 0  # lines of steps.jsonl that belong to the checkpointed run
    skipped_nonfinite: int = 0  # updates skipped for a non-finite loss or gradient
    nonfinite_run: int = 0  # ... of them in a row now
    early_stop: dict[str, Any] | None = None  # the attractor evidence that stopped the branch early
    self_play: dict[str, Any] | None = None  # rollout self_play: the live conversations (SelfPlayBuffer.state)


def load_policy_and_reference(cfg: AFTConfig) -> tuple[Any, Any, Any, Any]:
    """(policy, its adapter or None, π_ref, tokenizer) for a branch from `cfg.sft_model`.

    adapter=none: the policy trains every weight and π_ref is a second, frozen copy (optionally bf16, or on the
    CPU); adapter=lora: a fresh adapter over the SFT model, and π_ref is that model with the adapter disabled."""
    model, tokenizer = load_model(cfg.sft_model)
    model.eval()  # dropout off; gradients still flow
    adapter = None
    if cfg.adapter == "lora":
        model.requires_grad_(False)
        adapter = adapters.add_adapter(model, cfg, cfg.sft_model, seed=cfg.seed)
        model = adapter.get_base_model().eval()
        reference: Any = adapters.AdapterDisabled(adapter)
    else:
        device = torch.device(cfg.reference_device) if cfg.reference_device else None
        reference, _ = load_model(cfg.sft_model, device=device)
        reference.eval().requires_grad_(False)
        if cfg.reference_dtype == "bfloat16":
            reference.to(torch.bfloat16)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, adapter, reference, tokenizer


class BranchRun:
    """One branch's step and checkpoint hook for the shared loop (aft_core.trainer)."""

    def __init__(
        self,
        cfg: AFTConfig,
        branch: BranchLayout,
        tables: Any,
        db: VenueDB | None,
        tracker: Tracker,
        thresholds: AttractorThresholds,
        candidates_every: int = 0,
    ) -> None:
        self.cfg, self.branch, self.db, self.tracker, self.thresholds = cfg, branch, db, tracker, thresholds
        self.candidates_every = candidates_every
        self.model, self.adapter, self.reference, self.tokenizer = load_policy_and_reference(cfg)
        self.family = family_of(self.model, self.tokenizer)
        self.family.check_lengths(self.model, cfg.sft_model, cfg.max_source_tokens, cfg.max_new_tokens)
        self.layers = parse_layers(cfg.layers, self.family.attention_layers(self.model))
        self.pad_id = self.family.pad_id()
        probe = encode_table(
            tables["validation"].select(range(cfg.probe_size)), self.tokenizer, self.family, cfg.max_source_tokens, 8
        )
        # Corpus prompts are the corpus rollout's; a self-play branch's prompts come from its live conversations, so it
        # does not encode the training split (17,419 TownInfo prompts: about 10 s of a branch's start on a slow CPU).
        self.train_rows: list[dict[str, Any]] = (
            encode_table(tables["train"], self.tokenizer, self.family, cfg.max_source_tokens, 8)
            .select_columns(PROMPT_COLUMNS)
            .to_list()
            if cfg.rollout == "corpus"
            else []
        )
        self.probe_rows = probe.select_columns(PROMPT_COLUMNS + ["target", "belief_state"]).to_list()
        self.probe_prompts = self.tokenizer.batch_decode(
            [r["input_ids"] for r in self.probe_rows], skip_special_tokens=True
        )  # the completions tables' prompts
        self.scorer = load_bertscore(cfg.bertscore_model)
        self.optimizer = torch.optim.AdamW(trainable_parameters(self.model), lr=cfg.learning_rate)
        self.scheduler = None  # constant learning rate
        self.schedule = (  # which corpus prompts each step takes; a self-play step takes live conversations instead
            BatchSchedule([len(r["input_ids"]) for r in self.train_rows], cfg.batch_size, cfg.seed + 1)
            if cfg.rollout == "corpus"
            else None
        )
        self.state = BranchState(eta_kl=cfg.eta_kl)
        self.pending: list[dict[str, float]] = []  # step metrics since the last checkpoint
        self.self_play: SelfPlayBuffer | None = None
        self.probe_goals: list[Goal] = []
        if cfg.rollout == "self_play" or cfg.probe_conversations:
            # The corpus's dialogues (40 MB of JSON for TownInfo) are read once, and the reader's gate is run once, for
            # both the live conversations and the probe conversations.
            dialogues = read_dialogues(cfg.data) if dialogues_file(Path(cfg.data)) is not None else None
            field = "rollout" if cfg.rollout == "self_play" else "probe_conversations"
            db = conversation_gate(cfg, db, field, dialogues)
            if cfg.rollout == "self_play":
                self.self_play = self_play_buffer(cfg, db, dialogues)
            self.probe_goals = load_goals(cfg.data, "validation", dialogues)[: cfg.probe_conversations]

    def probe_row(self, step: int, baseline: dict[str, Any] | None) -> dict[str, Any]:
        """Probe metrics of the policy now, with the trend of the steps since the last checkpoint and Δ vs step 0."""
        row = evaluate_probe(
            self.model,
            self.tokenizer,
            self.family,
            self.probe_rows,
            ix_mode=self.cfg.ix_mode,
            layers=self.layers,
            max_new_tokens=self.cfg.max_new_tokens,
            repeat_n=self.cfg.repeat_n,
            scorer=self.scorer,
            db=self.db,
        )
        completions = row.pop("completions")
        table = self.branch.write_table(
            self.branch.completions(step),
            [{"step": step, "prompt": p, **c} for p, c in zip(self.probe_prompts, completions, strict=True)],
        )
        self.tracker.log_table(f"completions-step-{step:07d}", table)
        row.update(step=step, **trend([m for m in self.pending if not m["nonfinite"]]))
        if self.probe_goals:
            row.update(self.probe_conversation_row())
        base = baseline or row
        for key in ("focus", "coverage", "repeat", "bertscore", "mean_length", "lookback"):
            row[f"delta_{key}"] = row[key] - base[key]
        if self.db is not None:
            both = row["entity_accuracy"] is not None and base["entity_accuracy"] is not None
            row["delta_entity_accuracy"] = row["entity_accuracy"] - base["entity_accuracy"] if both else None
        row["samples"] = json.dumps(row["samples"])
        return row

    @torch.no_grad()
    def probe_conversation_row(self) -> dict[str, Any]:
        """The probe conversations now: the policy (greedy) and the sharded user on the fixed validation goals.
        Success, the share of repeated system replies and of conversations that hit the turn cap (the
        conversation-level Dam and Whirlpool), and mean focus under I_x by system turn (JSON)."""
        assert self.db is not None  # conversation_gate refused a corpus without one
        system = ModelSystem(
            self.model,
            self.tokenizer,
            max_source_tokens=self.cfg.max_source_tokens,
            max_new_tokens=self.cfg.max_new_tokens,
        )
        records = converse(
            system,
            self.probe_goals,
            Reader(self.db),
            reveal="sharded",
            seed=0,
            max_exchanges=self.cfg.self_play_max_exchanges,
        )
        outcomes = [r["outcome"] for r in records]
        by_turn: dict[int, list[float]] = {}
        key = f"focus/{self.cfg.ix_mode}"
        for record in records:
            system_turns = [t for t in record["turns"] if t["speaker"] == "system" and "attention" in t]
            for i, turn in enumerate(system_turns):
                by_turn.setdefault(i, []).append(turn["attention"][key])
        n = len(outcomes)
        turns = max(sum(o["turns"] for o in outcomes), 1)
        return {
            "conversation_success": sum(o["success"] for o in outcomes) / n,
            # as the closed-loop table counts it: replies equal to an earlier one of the same conversation, per reply
            "conversation_repeated_replies": sum(o["repeated_replies"] for o in outcomes) / turns,
            "conversation_timeout": sum(o["timeout"] for o in outcomes) / n,
            "conversation_focus_by_turn": json.dumps([sum(v) / len(v) for _, v in sorted(by_turn.items())]),
        }

    def start(self) -> None:
        self.tracker.log_params({**dataclasses.asdict(self.cfg), "branch_id": config_id(self.cfg)})
        torch.manual_seed(self.cfg.seed)  # sampling RNG; a resume restores it from the checkpoint instead
        self.state.rows = [self.probe_row(0, None)]
        self.branch.steps_log.unlink(missing_ok=True)
        self.branch.write_probe_rows(self.state.rows)

    def resumed(self) -> None:
        if self.self_play is not None:
            if self.state.self_play is None:
                raise AftInputError(
                    self.branch.root, "checkpoint", "holds no self-play conversations", "delete checkpoints/ and rerun"
                )
            self.self_play.restore(self.state.self_play)
        log = self.branch.steps_log
        lines = log.read_text().splitlines()[: self.state.logged_steps] if log.exists() else []
        with atomic_path(log) as tmp:  # drop steps logged after the checkpoint
            tmp.write_text("".join(line + "\n" for line in lines))

    def train_step(self, step: int) -> dict[str, str]:
        cfg, state = self.cfg, self.state
        if self.self_play is None:
            assert self.schedule is not None  # a corpus branch
            rows = [self.train_rows[i] for i in self.schedule(step)]
        else:  # the next conversations' histories, encoded as corpus prompts are
            if step % cfg.self_play_refresh_every == 0:  # the schedule: fresh conversations (step 0 included)
                self.self_play.restart(step)
            picked = self.self_play.take(cfg.batch_size)
            histories = self.self_play.histories(picked)
            rows = self.family.encode_prompts(histories, self.tokenizer, cfg.max_source_tokens)
        src = SourceBatch.from_rows(rows, self.pad_id).to(model_device(self.model))
        trajectory = None
        if self.self_play is not None and cfg.reward_trajectory > 0:
            before, turns = self.self_play.trajectory_context(picked, cfg.trajectory_window)
            trajectory = (torch.tensor(before), torch.tensor(turns))
        task = None
        buffer = self.self_play
        if buffer is not None and cfg.reward_task > 0:

            def task(samples: torch.Tensor) -> torch.Tensor:
                texts = [t.strip() for t in self.tokenizer.batch_decode(samples, skip_special_tokens=True)]
                by_prompt = [texts[b * cfg.k : (b + 1) * cfg.k] for b in range(len(picked))]
                success, turns = buffer.roll_forward(picked, by_prompt, self.greedy_replies, cfg.task_horizon)
                return task_reward(torch.tensor(success).flatten(), torch.tensor(turns).flatten(), cfg.task_discount)

        parts, metrics = aft_step_loss(
            self.model,
            self.reference,
            self.family,
            src,
            cfg,
            self.layers,
            eta_kl=state.eta_kl,
            trajectory=trajectory,
            task=task,
        )
        if self.self_play is not None:  # each conversation goes on with its prompt's highest-weighted candidate
            best = parts["weights"].argmax(dim=-1)  # [B]
            chosen = parts["samples"].view(len(picked), cfg.k, -1)[torch.arange(len(picked)), best.cpu()]
            replies = [t.strip() for t in self.tokenizer.batch_decode(chosen, skip_special_tokens=True)]
            rows_now = torch.arange(len(picked))
            chosen_focus = parts["turn_focus"].cpu()[rows_now, best.cpu()].tolist() if trajectory else None
            ended = self.self_play.answer(picked, replies, chosen_focus)
            metrics.update({f"self_play_{k}": v for k, v in ended.items()})
        if self.candidates_every and (step + 1) % self.candidates_every == 0:
            self.log_candidates(step + 1, src, parts)
        finite, grad_norm = apply_update(self.model, self.optimizer, parts["loss"], cfg.grad_clip)
        if cfg.kl_target > 0 and finite:
            state.eta_kl = adaptive_kl_update(
                state.eta_kl, metrics["kl_per_token"], cfg.kl_target, src.input_ids.shape[0] * cfg.k, cfg.kl_horizon
            )
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        if finite:
            state.nonfinite_run = 0
        else:  # a non-finite loss or gradient: the update was skipped; count it
            state.skipped_nonfinite += 1
            state.nonfinite_run += 1
        metrics.update(step=step + 1, nonfinite=not finite)
        self.pending.append(metrics)
        self.tracker.log_metrics({f"train/{k}": float(v) for k, v in metrics.items() if k != "step"}, step + 1)
        return {"loss": f"{metrics['loss']:.2f}", "R": f"{metrics['reward_mean']:.3f}"}

    @torch.no_grad()
    def greedy_replies(self, histories: list[list[Any]]) -> list[str]:
        """The current policy's greedy replies to conversation histories (the task term's rollouts)."""
        rows = self.family.encode_prompts(histories, self.tokenizer, self.cfg.max_source_tokens)
        src = SourceBatch.from_rows(rows, self.pad_id).to(model_device(self.model))
        seqs = self.family.generate(self.model, src, max_new_tokens=self.cfg.max_new_tokens, do_sample=False)
        return [t.strip() for t in self.tokenizer.batch_decode(seqs, skip_special_tokens=True)]

    def log_candidates(self, step: int, src: SourceBatch, parts: dict[str, torch.Tensor]) -> None:
        """The first prompt's K candidates of this step with R, R̃ and weight: the table and the tracker."""
        k = self.cfg.k
        texts = self.tokenizer.batch_decode(parts["samples"][:k], skip_special_tokens=True)
        prompt = self.tokenizer.decode(src.input_ids[0], skip_special_tokens=True)
        rewards, weights = parts["rewards"][0], parts["weights"][0]
        normalised = zscore(rewards[None])[0]
        rows = [
            {
                "step": step,
                "prompt": prompt,
                "candidate": i + 1,
                "response": texts[i].strip(),
                "reward": float(rewards[i]),
                "normalised_reward": float(normalised[i]),
                "weight": float(weights[i]),
            }
            for i in range(k)
        ]
        self.tracker.log_table(
            f"candidates-step-{step:07d}", self.branch.write_table(self.branch.candidates(step), rows)
        )

    def diverged(self) -> bool:
        return self.state.nonfinite_run >= self.cfg.max_nonfinite_steps

    def wants_checkpoint(self) -> bool:
        return self.diverged()

    def at_checkpoint(self, step: int) -> None:
        """Probe row, the early-stopping rule, the step log, the policy's weights and the probe table; with
        self-play, the live conversations (kept in the checkpoint)."""
        state = self.state
        if self.self_play is not None:
            state.self_play = self.self_play.state()
        row = self.probe_row(step, state.rows[0])
        state.rows.append(row)
        if self.diverged():
            state.stop_reason = "diverged"
        elif step < self.cfg.steps:
            labels = classify_trajectory(state.rows, self.cfg.max_new_tokens, self.thresholds)
            if should_stop_early(labels, self.cfg.early_stop_checkpoints):
                state.stop_reason = "attractor"
                state.early_stop = {
                    "checkpoints_in_attractor": terminal_streak(labels),
                    "label": labels[-1].label,
                    "thresholds_basis": self.thresholds.basis,
                }
        self.tracker.log_metrics({f"probe/{k}": v for k, v in row.items() if isinstance(v, (int, float))}, step)
        with open(self.branch.steps_log, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(m) + "\n" for m in self.pending)
        state.logged_steps += len(self.pending)
        self.pending = []
        with atomic_path(self.branch.weights(step)) as tmp:
            save_policy_weights(self.model, self.adapter, self.cfg, tmp)
        self.branch.write_probe_rows(state.rows)

    def finish(self) -> dict[str, Any]:
        """The training outcome (no verdict: that is aft_core.judging's)."""
        state, first = self.state, self.state.rows[0]
        with atomic_path(self.branch.steps) as tmp:
            pd.read_json(self.branch.steps_log, lines=True).to_parquet(tmp)
        status = {"diverged": "diverged", "attractor": "stopped_in_attractor", None: "completed"}[state.stop_reason]
        return {
            "branch_id": config_id(self.cfg),
            "steps": state.step,
            "status": status,
            "steps_saved": self.cfg.steps - state.step if status == "stopped_in_attractor" else 0,
            "early_stop": state.early_stop,
            "skipped_nonfinite": state.skipped_nonfinite,
            "nonfinite_run": state.nonfinite_run,
            "seconds": round(state.seconds, 1),
            "bertscore_encoder": first["bertscore_encoder"],
            "bertscore_layer": first["bertscore_layer"],
        }


def run_branch(
    cfg: AFTConfig,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    thresholds: AttractorThresholds | None = None,
    candidates_every: int = CANDIDATES_EVERY,
) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) one AFT branch in `out_dir`.

    Every checkpoint writes the probe's greedy completions (`completions/step-N.parquet`) and, every
    `candidates_every` steps (0 = never), a step writes its first prompt's K candidates with their rewards and
    weights (`candidates/step-N.parquet`); both also go to the tracker. How often is a tracking setting, not
    part of the branch's config: it changes no figure.

    `thresholds` label the checkpoints for the early-stopping rule (default: the `sft` set); the
    branch's verdict (★, final label) is `aft_core.judging.judge_branch`'s, run after training.
    `stop_after` ends the process at the first checkpoint at or after that step; calling again resumes.
    """
    cfg.validate()
    hold_point("branch_start")  # test-only (aft_core.faults); nothing without AFT_HOLD
    branch = BranchLayout(Path(out_dir))
    corpus = load_corpus(cfg.data)
    corpus.require_splits("train", "validation")
    if (empty := corpus.empty_ix(cfg.ix_mode, "train")) is not None:
        raise AftInputError(cfg.data, "ix_mode", *empty)
    tables = corpus_to_dataset(corpus)
    if cfg.probe_size > len(tables["validation"]):
        raise AftInputError(
            cfg.data,
            "probe_size",
            f"{cfg.probe_size} exceeds the dev split ({len(tables['validation'])} examples)",
            f"use --probe-size {len(tables['validation'])} or less",
        )
    check_model_source(cfg.sft_model)  # before the folder is claimed
    claim_run_dir(branch.root, branch.config.name, {**dataclasses.asdict(cfg), "branch_id": config_id(cfg)})
    done = finished_result(branch.result)
    if done is not None:
        return done
    db = VenueDB.load(corpus.db_dir) if corpus.db_dir else None
    run = BranchRun(
        cfg, branch, tables, db, tracker or NullTracker(), thresholds or AttractorThresholds(), candidates_every
    )
    settings = LoopSettings(
        cfg.steps, cfg.checkpoint_every, cfg.keep_checkpoints, desc=f"aft {config_id(cfg)}", seeds=(("aft", cfg.seed),)
    )
    return train(run, branch.root, branch.result, settings, branch.provenance, progress=progress, stop_after=stop_after)


def conversation_gate(
    cfg: AFTConfig, db: VenueDB | None, field: str, dialogues: dict[str, Any] | None = None
) -> VenueDB:
    """Refuse (one line, exit 2) a branch setting that needs the user simulator on a corpus that has no goals, or
    whose system turns the reader cannot follow (the closed-loop stage's gate; `dialogues`: the corpus's data.json
    when already read)."""
    reason, _ = reader_gate(cfg.data, "test", dialogues)
    if reason is not None or db is None:
        reason = reason or "the corpus has no venue database"
        raise AftInputError(
            cfg.data, field, f"{field} needs a simulated user here, but {reason}", f"leave {field} at its default"
        )
    return db


def self_play_buffer(cfg: AFTConfig, db: VenueDB, dialogues: dict[str, Any] | None = None) -> SelfPlayBuffer:
    """The live conversations of a `rollout: self_play` branch, on the corpus's training-split goals (`db`: as
    `conversation_gate` passed it; `dialogues`: the corpus's data.json when already read)."""
    return SelfPlayBuffer(
        load_goals(cfg.data, "train", dialogues),
        Reader(db),
        size=cfg.self_play_conversations,
        reveal=cfg.self_play_reveal,
        max_exchanges=cfg.self_play_max_exchanges,
        seed=cfg.seed,
        words=corpus_user_words(cfg.data),
    )
