"""Checkpoint monitoring on a fixed probe of held-out examples with greedy decoding (AFT_SPEC §6).

Per checkpoint: mean focus, coverage, repeat and lookback ratio (AFT_SPEC §8) of the greedy responses (read
from a teacher-forced pass over them), BERTScore F1 against the references, mean length in tokens (EOS
excluded), unique outputs, generic-closing rate, and the loss/reward trend since the previous
checkpoint. Where the corpus has a venue database, entity accuracy: the share of probe turns whose
reference names a venue on which the response names a venue satisfying the turn's belief state (as in
the test evaluation). Δ values are against the step-0 row, i.e. the SFT model on the same probe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from aft_core.bertscore import BertScore
from aft_core.data.batching import SourceBatch
from aft_core.data.venues import VenueDB, entity_correct, names_venue
from aft_core.models import ModelFamily, model_device
from aft_core.reward import coverage, focus, repeat_penalty

GENERIC_CLOSINGS = (
    "is there anything else i can help you with",
    "can i help you with anything else",
    "is there anything else i can do for you",
    "anything else i can help with",
)
CLOSING_MAX_OTHER_WORDS = 3  # an output is "a generic closing" when little else is said besides it


def is_generic_closing(text: str) -> bool:
    lowered = " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    for phrase in GENERIC_CLOSINGS:
        if phrase in lowered:
            return len(lowered.replace(phrase, " ").split()) <= CLOSING_MAX_OTHER_WORDS
    return False


@torch.no_grad()
def score_greedy(
    model: Any,
    tokenizer: Any,
    family: ModelFamily,
    rows: Sequence[dict[str, Any]],
    *,
    ix_modes: Sequence[str],
    layers: Sequence[int],
    max_new_tokens: int,
    repeat_n: int,
    batch_size: int = 50,
    keep_attention: bool = False,
    on_batch: Callable[[int], None] | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Greedy responses to `rows` (encoded sources) and their per-example attention scores (with `temperature`,
    sampled responses instead: the conversation loop's sampled conversations; the caller seeds torch).

    Rows are decoded in length-sorted batches (less padding) and returned in input order.
    Returns `texts`, `length` (tokens, EOS excluded), `repeat`, `lookback`, and `focus/<mode>`,
    `coverage/<mode>` for each I_x mode; with keep_attention, `attention` holds each example's
    A[T,S] over its real target and source positions and `target_ids` the T response ids.
    `on_batch(n)` is called after each batch of n examples (progress reporting).
    """
    was_training = model.training
    model.eval()
    eos_id = family.eos_id()
    special = (family.pad_id(), eos_id)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    scores: dict[str, list[Any]] = {"texts": [], "length": [], "repeat": [], "lookback": []}
    for mode in ix_modes:
        scores[f"focus/{mode}"], scores[f"coverage/{mode}"] = [], []
    if keep_attention:
        scores["attention"], scores["target_ids"] = [], []
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start : start + batch_size]]
        src = SourceBatch.from_rows(batch, family.pad_id()).to(model_device(model))
        state = family.prompt_state(model, src, inference=True)
        seqs = family.generate(
            model,
            src,
            max_new_tokens=max_new_tokens,
            do_sample=temperature is not None,
            temperature=1.0 if temperature is None else temperature,
            state=state,
        )
        tf = family.teacher_forced(model, src, seqs, 1, layers, state)
        for mode in ix_modes:
            hist = src.mask(mode)
            scores[f"focus/{mode}"] += focus(tf["attn"], tf["tgt_mask"], hist).tolist()
            scores[f"coverage/{mode}"] += coverage(tf["attn"], tf["tgt_mask"], hist).tolist()
        scores["repeat"] += repeat_penalty(tf["labels"], tf["tgt_mask"], repeat_n, special).tolist()
        scores["length"] += (tf["tgt_mask"] & (tf["labels"] != eos_id)).sum(dim=1).tolist()
        scores["lookback"] += tf["lookback"].tolist()
        scores["texts"] += [t.strip() for t in tokenizer.batch_decode(tf["labels"], skip_special_tokens=True)]
        if keep_attention:
            for b in range(len(batch)):
                t_len, s_len = int(tf["tgt_mask"][b].sum()), int(src.attention_mask[b].sum())
                scores["attention"].append(tf["attn"][b, :t_len, :s_len].cpu().clone())
                scores["target_ids"].append(tf["labels"][b, :t_len].tolist())
        if on_batch is not None:
            on_batch(len(batch))
    model.train(was_training)
    inverse = sorted(range(len(order)), key=lambda k: order[k])  # position of input i in decoding order
    return {key: [values[k] for k in inverse] for key, values in scores.items()}


def evaluate_probe(
    model: Any,
    tokenizer: Any,
    family: ModelFamily,
    probe_rows: Sequence[dict[str, Any]],
    *,
    ix_mode: str,
    layers: Sequence[int],
    max_new_tokens: int,
    repeat_n: int,
    scorer: BertScore,
    db: VenueDB | None = None,
    batch_size: int = 50,
) -> dict[str, Any]:
    """One checkpoint's probe row: mean metrics of the greedy responses on the fixed probe.

    With a venue database `db` (probe rows then need `belief_state`, JSON), the row also holds
    `entity_accuracy` over the `venue_turns` probe turns whose reference names a venue (None when none does).
    `completions` holds one record per probe example: reference, greedy response and its scores.
    """
    s = score_greedy(
        model,
        tokenizer,
        family,
        probe_rows,
        ix_modes=(ix_mode,),
        layers=layers,
        max_new_tokens=max_new_tokens,
        repeat_n=repeat_n,
        batch_size=batch_size,
    )
    texts = s["texts"]
    f1 = scorer.f1(texts, [r["target"] for r in probe_rows])
    n = max(len(texts), 1)
    completions = [
        {
            "probe_index": i,
            "reference": r["target"],
            "response": text,
            "focus": s[f"focus/{ix_mode}"][i],
            "coverage": s[f"coverage/{ix_mode}"][i],
            "repeat": s["repeat"][i],
            "bertscore": f1[i],
            "entity_correct": probe_entity_correct(db, text, r),
        }
        for i, (text, r) in enumerate(zip(texts, probe_rows, strict=True))
    ]
    return {
        "probe_size": len(texts),
        "focus": sum(s[f"focus/{ix_mode}"]) / n,
        "coverage": sum(s[f"coverage/{ix_mode}"]) / n,
        "repeat": sum(s["repeat"]) / n,
        "bertscore": sum(f1) / n,
        "mean_length": sum(s["length"]) / n,
        "lookback": sum(s["lookback"]) / n,
        "unique_outputs": len(set(texts)),
        "closing_rate": sum(map(is_generic_closing, texts)) / n,
        "bertscore_encoder": scorer.encoder,
        "bertscore_layer": scorer.layer,
        "samples": texts[:5],
        "completions": completions,
        **(probe_entity_accuracy(db, texts, probe_rows) if db is not None else {}),
    }


def probe_entity_correct(db: VenueDB | None, response: str, row: dict[str, Any]) -> bool | None:
    """Whether the response names a venue satisfying the turn's belief state; None where the reference names no
    venue (or there is no venue database): those turns are not scored."""
    if db is None or not names_venue(db, row["target"]):
        return None
    return bool(entity_correct(db, response, json.loads(row["belief_state"])))


def probe_entity_accuracy(db: VenueDB, responses: Sequence[str], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """entity_accuracy = mean of entity_correct(response, belief state) over the turns whose reference names a venue."""
    correct = [
        c
        for c in (probe_entity_correct(db, text, row) for text, row in zip(responses, rows, strict=True))
        if c is not None
    ]
    return {"entity_accuracy": sum(correct) / len(correct) if correct else None, "venue_turns": len(correct)}


def trend(step_logs: Sequence[dict[str, float]], ema: float = 0.9) -> dict[str, float]:
    """Loss/reward trend over the steps since the previous checkpoint.

    loss_rising_steps: consecutive steps (ending now) over which the EMA-smoothed loss rose;
    reward_slope / loss_slope: least-squares slopes per step.
    """
    if not step_logs:
        return {"loss_mean": 0.0, "reward_mean": 0.0, "loss_slope": 0.0, "reward_slope": 0.0, "loss_rising_steps": 0}
    losses = [s["loss"] for s in step_logs]
    rewards = [s["reward_mean"] for s in step_logs]
    smoothed, value = [], losses[0]
    for x in losses:
        value = ema * value + (1 - ema) * x
        smoothed.append(value)
    rising = 0
    for a, b in zip(reversed(smoothed[:-1]), reversed(smoothed[1:]), strict=True):
        if b > a:
            rising += 1
        else:
            break
    return {
        "loss_mean": sum(losses) / len(losses),
        "reward_mean": sum(rewards) / len(rewards),
        "loss_slope": _slope(losses),
        "reward_slope": _slope(rewards),
        "loss_rising_steps": rising,
    }


def _slope(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(values) / n
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / sum((i - mx) ** 2 for i in range(n))
