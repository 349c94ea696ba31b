"""Supervised fine-tuning (SFT): the starting point and the frozen reference of every AFT branch.

AdamW with linear warm-up and cosine decay, gradient clipping, dev loss every `eval_every`
steps with early stopping, and a checkpoint at every evaluation that resumes exactly (data order
is a pure function of seed and epoch; RNG, optimizer and scheduler states are restored).

Run folder:
    sft_config.json   the config (a different config in the same folder is refused)
    tokenizer/        the corpus tokenizer (preset models)
    checkpoints/      step-NNNNNNN/ resumable states (the last `keep_checkpoints`)
    best/             the best model so far by dev loss (save_pretrained)
    model/            the final model = best by dev loss (save_pretrained + tokenizer)
    metrics.jsonl     one line per step / evaluation
    sft_result.json   written last: the run is complete
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from aft_core.checkpoint import resume_latest, save_checkpoint
from aft_core.config import SFTConfig, config_id
from aft_core.data.batching import BatchSchedule, pad_batch
from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset, encode_table, tokenizer_texts
from aft_core.io import claim_run_dir, write_json_atomic
from aft_core.modeling import (PRESETS, build_model, count_parameters, default_device, load_model, model_device,
                               save_model, torch_threads, train_tokenizer)
from aft_core.tracking import JsonlTracker, MultiTracker, NullTracker, Tracker

IGNORE_INDEX = -100


def collate(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int,
            device: torch.device | None = None) -> dict[str, torch.Tensor]:
    input_ids, attention_mask = pad_batch(sources, pad_id)
    labels, label_mask = pad_batch(targets, pad_id)
    labels[label_mask == 0] = IGNORE_INDEX
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


@torch.no_grad()
def dev_loss(model: Any, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int,
             batch_size: int = 64) -> float:
    """Token-weighted mean negative log-likelihood of the targets."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([sources[i] for i in idx], [targets[i] for i in idx], pad_id, model_device(model))
        logits = model(**batch).logits  # [B, T, V]
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                                   ignore_index=IGNORE_INDEX, reduction="sum").item()
        tokens += int((batch["labels"] != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(tokens, 1)


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_model_and_tokenizer(cfg: SFTConfig, out: Path, train_table: Any) -> tuple[Any, Any]:
    if cfg.model in PRESETS:
        from transformers import AutoTokenizer

        tok_dir = out / "tokenizer"
        if (tok_dir / "tokenizer.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        else:
            tokenizer = train_tokenizer(tokenizer_texts(train_table), PRESETS[cfg.model].vocab_size)
            tokenizer.save_pretrained(tok_dir)
        return build_model(cfg.model, tokenizer, seed=cfg.seed).to(default_device()), tokenizer
    return load_model(cfg.model, for_training=True)


def run_sft(cfg: SFTConfig, out_dir: str | Path, tracker: Tracker | None = None, progress: bool = True,
            stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume, or return the finished result of) the SFT run in `out_dir`.

    `stop_after` ends the process-level run after that many total steps, as an interruption
    would; calling again resumes from the last checkpoint.
    """
    cfg.validate()
    out = Path(out_dir)
    corpus = load_corpus(cfg.data)  # bad input fails here, before anything is written
    claim_run_dir(out, "sft_config.json", {**dataclasses.asdict(cfg), "config_id": config_id(cfg)})
    result_file = out / "sft_result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    torch.set_num_threads(torch_threads())
    tracker = MultiTracker(JsonlTracker(out / "metrics.jsonl"), tracker or NullTracker())

    tables = corpus_to_dataset(corpus)
    model, tokenizer = prepare_model_and_tokenizer(cfg, out, tables["train"])
    train = encode_table(tables["train"], tokenizer, cfg.max_source_tokens, cfg.max_target_tokens)
    dev = encode_table(tables["validation"].select(range(min(cfg.dev_examples, len(tables["validation"])))),
                       tokenizer, cfg.max_source_tokens, cfg.max_target_tokens)
    train_src, train_tgt = train["input_ids"], train["labels"]
    dev_src, dev_tgt = dev["input_ids"], dev["labels"]
    pad_id = tokenizer.pad_token_id

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.max_steps)
    state = {"step": 0, "best_dev_loss": float("inf"), "bad_evals": 0, "dev_history": [], "train_seconds": 0.0}
    resumed = resume_latest(out / "checkpoints", model, optimizer, scheduler)
    if resumed is not None:
        state = resumed["trainer"]
    else:
        tracker.log_params({**dataclasses.asdict(cfg), "parameters": count_parameters(model)})

    schedule = BatchSchedule([len(s) for s in train_src], cfg.batch_size, cfg.seed)
    step = state["step"]
    started = time.monotonic() - state["train_seconds"]
    bar = tqdm(total=cfg.max_steps, initial=step, desc="sft", disable=not progress, dynamic_ncols=True)
    stopped_early = False
    while step < cfg.max_steps:
        idx = schedule(step)
        batch = collate([train_src[i] for i in idx], [train_tgt[i] for i in idx], pad_id, model_device(model))
        loss = model(**batch).loss
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", dev=f"{state['best_dev_loss']:.3f}")
        tracker.log_metrics({"train/loss": loss.item(), "train/grad_norm": float(grad_norm),
                             "train/lr": scheduler.get_last_lr()[0]}, step)
        if step % cfg.eval_every == 0 or step == cfg.max_steps:
            dl = dev_loss(model, dev_src, dev_tgt, pad_id)
            state["dev_history"].append([step, dl])
            tracker.log_metrics({"dev/loss": dl}, step)
            if dl < state["best_dev_loss"]:
                state["best_dev_loss"], state["bad_evals"] = dl, 0
                save_model(model, tokenizer, out / "best")
            else:
                state["bad_evals"] += 1
            stopped_early = cfg.patience > 0 and state["bad_evals"] >= cfg.patience
            state.update(step=step, train_seconds=time.monotonic() - started, stopped_early=stopped_early)
            save_checkpoint(out / "checkpoints", step, model, optimizer, scheduler, state, keep=cfg.keep_checkpoints)
            if stopped_early:
                break
        if stop_after is not None and step >= stop_after and step < cfg.max_steps:
            bar.close()
            return {"interrupted_at": step}
    bar.close()

    from transformers import AutoModelForSeq2SeqLM

    best = AutoModelForSeq2SeqLM.from_pretrained(out / "best", local_files_only=True, attn_implementation="eager")
    save_model(best, tokenizer, out / "model")
    result = {
        "config_id": config_id(cfg),
        "model_dir": str(out / "model"),
        "steps": step,
        "stopped_early": stopped_early,
        "best_dev_loss": state["best_dev_loss"],
        "dev_history": state["dev_history"],
        "train_seconds": round(time.monotonic() - started, 1),
        "parameters": count_parameters(model),
        "train_examples": len(train_src),
    }
    write_json_atomic(result_file, result)
    return result
