"""Supervised fine-tuning (SFT) of either model family: next-token loss on the response tokens.

SFT is the starting point and the frozen reference of every AFT branch.

AdamW with linear warm-up and cosine decay, gradient clipping, dev loss every `eval_every`
steps with early stopping, and a checkpoint at every evaluation that resumes exactly (data order
is a pure function of seed and epoch; RNG, optimizer and scheduler states are restored).

`SFTRun` is SFT's step and checkpoint hook for the shared resumable loop (aft_core.trainer); the
run folder's files (config, tokenizer, checkpoints, best/, model/, metrics, result) are aft_core.layout's
SFTLayout.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aft_core.config import SFTConfig, config_id
from aft_core.data.batching import BatchSchedule
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table, tokenizer_texts
from aft_core.io import claim_run_dir, copy_dir
from aft_core.layout import SFTLayout
from aft_core.models import (
    PRESETS,
    ModelFamily,
    adapters,
    build_model,
    count_parameters,
    default_device,
    family_of,
    load_model,
    model_device,
    save_model,
    train_tokenizer,
    trainable_parameters,
)
from aft_core.models.family import enable_gradient_checkpointing
from aft_core.tracking import JsonlTracker, MultiTracker, NullTracker, Tracker
from aft_core.trainer import LoopSettings, TrainerState, finished_result, train


@torch.no_grad()
def dev_loss(
    model: Any,
    family: ModelFamily,
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 64,
) -> float:
    """Token-weighted mean negative log-likelihood of the targets."""
    from aft_core.models.family import IGNORE_INDEX

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = family.sft_batch([sources[i] for i in idx], [targets[i] for i in idx], pad_id, model_device(model))
        logits, labels = family.sft_logits(model, batch)  # [B,T,V], [B,T]
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        ).item()
        tokens += int((labels != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(tokens, 1)


def fused_adamw(parameters: Any, **settings: Any) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel (one pass per parameter) where it has one for the parameters' device and dtype,
    else the default implementation. The same update rule; on a CPU torch's default is a loop of several element-wise
    passes per parameter, about 5% of a `small` SFT step (torch.profiler). Fused and unfused differ by rounding
    only. A checkpoint written by either resumes as it was written: the optimizer's saved settings (`fused`
    included) are restored with its state."""
    parameters = list(parameters)
    kernel_dtypes = (torch.float32, torch.float16, torch.bfloat16)
    fused = bool(parameters) and all(p.device.type in ("cpu", "cuda") and p.dtype in kernel_dtypes for p in parameters)
    return torch.optim.AdamW(parameters, fused=fused or None, **settings)


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_model_and_tokenizer(cfg: SFTConfig, out: SFTLayout, train_table: Any) -> tuple[Any, Any, Any]:
    """(model to run, its adapter or None, tokenizer): a preset built from config, or a saved model loaded; with
    adapter=lora, a fresh adapter over it (a preset's weights are saved to base/, which the adapter names)."""
    if cfg.model in PRESETS:
        from transformers import AutoTokenizer

        tok_dir = out.tokenizer
        if (tok_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        else:
            tokenizer = train_tokenizer(tokenizer_texts(train_table), PRESETS[cfg.model].vocab_size)
            tokenizer.save_pretrained(tok_dir)
        model = build_model(cfg.model, tokenizer, seed=cfg.seed).to(default_device())
    else:
        model, tokenizer = load_model(cfg.model, for_training=True)
    adapter = None
    if cfg.adapter == "lora":
        if cfg.model.startswith("hf:") or not (cfg.model in PRESETS or adapters.is_adapter_folder(Path(cfg.model))):
            base = cfg.model if cfg.model.startswith("hf:") else str(Path(cfg.model).resolve())
        else:  # a preset, or an adapter merged into its base: no name rebuilds these weights
            if not (out.base / "config.json").exists():
                save_model(model, tokenizer, out.base)
            base = f"../{out.base.name}"
        adapter = adapters.add_adapter(model, cfg, base, seed=cfg.seed)
        model = adapter.get_base_model()
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, adapter, tokenizer


@dataclasses.dataclass
class SFTState(TrainerState):
    best_dev_loss: float = float("inf")
    bad_evals: int = 0  # evaluations in a row without a new best (early stopping at `patience`)
    dev_history: list[list[float]] = dataclasses.field(default_factory=list)  # [step, dev loss] per evaluation


class SFTRun:
    """SFT's step and checkpoint hook for the shared loop (aft_core.trainer)."""

    def __init__(self, cfg: SFTConfig, out: SFTLayout, corpus: Any, tracker: Tracker) -> None:
        self.cfg, self.out, self.tracker = cfg, out, tracker
        tables = corpus_to_dataset(corpus)
        self.model, self.adapter, self.tokenizer = prepare_model_and_tokenizer(cfg, out, tables["train"])
        self.family = family_of(self.model, self.tokenizer)
        self.family.use_sft_attention(self.model)
        self.family.check_lengths(self.model, cfg.model, cfg.max_source_tokens, cfg.max_target_tokens)
        train = encode_table(tables["train"], self.tokenizer, self.family, cfg.max_source_tokens, cfg.max_target_tokens)
        dev = encode_table(
            tables["validation"].select(range(min(cfg.dev_examples, len(tables["validation"])))),
            self.tokenizer,
            self.family,
            cfg.max_source_tokens,
            cfg.max_target_tokens,
        )
        self.train_src, self.train_tgt = train["input_ids"], train["labels"]
        self.dev_src, self.dev_tgt = dev["input_ids"], dev["labels"]
        self.pad_id = self.tokenizer.pad_token_id
        self.model.train()
        self.optimizer = fused_adamw(
            trainable_parameters(self.model), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
        )
        self.scheduler = cosine_schedule(self.optimizer, cfg.warmup_steps, cfg.max_steps)
        self.schedule = BatchSchedule([len(s) for s in self.train_src], cfg.batch_size, cfg.seed)
        self.state = SFTState()

    def start(self) -> None:
        self.tracker.log_params(
            {
                **dataclasses.asdict(self.cfg),
                "parameters": count_parameters(self.model),
                "trainable_parameters": count_parameters(self.model, trainable=True),
            }
        )

    def resumed(self) -> None:
        pass  # metrics.jsonl is append-only; steps repeated after a resume are logged again

    def train_step(self, step: int) -> dict[str, str]:
        idx = self.schedule(step)
        batch = self.family.sft_batch(
            [self.train_src[i] for i in idx], [self.train_tgt[i] for i in idx], self.pad_id, model_device(self.model)
        )
        loss = self.family.sft_loss(self.model, batch)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tracker.log_metrics(
            {
                "train/loss": loss.item(),
                "train/grad_norm": float(grad_norm),
                "train/lr": float(self.scheduler.get_last_lr()[0]),
            },
            step + 1,
        )
        return {"loss": f"{loss.item():.3f}", "dev": f"{self.state.best_dev_loss:.3f}"}

    def wants_checkpoint(self) -> bool:
        return False

    def at_checkpoint(self, step: int) -> None:
        """Dev loss; the best model so far is kept in best/; `patience` evaluations without a new best stop the run."""
        state = self.state
        loss = dev_loss(self.model, self.family, self.dev_src, self.dev_tgt, self.pad_id)
        state.dev_history.append([step, loss])
        self.tracker.log_metrics({"dev/loss": loss}, step)
        if loss < state.best_dev_loss:
            state.best_dev_loss, state.bad_evals = loss, 0
            save_model(self.adapter or self.model, self.tokenizer, self.out.best)
        else:
            state.bad_evals += 1
        if self.cfg.patience > 0 and state.bad_evals >= self.cfg.patience:
            state.stop_reason = "dev_loss_plateau"

    def finish(self) -> dict[str, Any]:
        """The final model is the best by dev loss."""
        with copy_dir(self.out.best, self.out.model):  # the best model's files as they are (an adapter stays one)
            pass
        return {
            "config_id": config_id(self.cfg),
            "model_dir": str(self.out.model),
            "steps": self.state.step,
            "stopped_early": self.state.stop_reason is not None,
            "best_dev_loss": self.state.best_dev_loss,
            "dev_history": self.state.dev_history,
            "train_seconds": round(self.state.seconds, 1),
            "parameters": count_parameters(self.model),
            "trainable_parameters": count_parameters(self.model, trainable=True),
            "train_examples": len(self.train_src),
        }


def run_sft(
    cfg: SFTConfig,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) the SFT run in `out_dir`.

    `stop_after` ends the process at the first evaluation at or after that step, as an interruption
    would; calling again resumes there.
    """
    cfg.validate()
    out = SFTLayout(Path(out_dir))
    corpus = load_corpus(cfg.data)  # bad input fails here, before anything is written
    corpus.require_splits("train", "validation")
    claim_run_dir(out.root, out.config.name, {**dataclasses.asdict(cfg), "config_id": config_id(cfg)})
    done = finished_result(out.result)
    if done is not None:
        return done
    tracker = MultiTracker(JsonlTracker(out.metrics), tracker or NullTracker())
    run = SFTRun(cfg, out, corpus, tracker)
    settings = LoopSettings(cfg.max_steps, cfg.eval_every, cfg.keep_checkpoints, desc="sft", seeds=(("sft", cfg.seed),))
    return train(run, out.root, out.result, settings, out.provenance, progress=progress, stop_after=stop_after)
