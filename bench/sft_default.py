"""Benchmark: SFT of the `small` preset on the default TownInfo corpus, on this machine.

Targets (issue 2): the whole run (corpus, tokenizer, training, evaluation) finishes in <= 600 s,
and on 200 held-out test turns whose reference names a venue, greedy responses name a venue
satisfying the user's constraints in >= 70% of them. Issue 28: first, SFT steps/s with transformers'
eager attention, with the product's previous path and with its current one, side by side in one run (the
product must be faster than both, and its first step's loss the same to rounding). Prints the figures and
five sample responses; exits 1 on a miss.

    python bench/sft_default.py [--out DIR] [--max-steps N] [--throughput-only]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aft_core.config import SFTConfig
from aft_core.data.corpus import load_corpus
from aft_core.data.examples import Example
from aft_core.data.towninfo import generate_towninfo, load_database
from aft_core.data.venues import VenueDB, entity_correct, names_venue
from aft_core.models import family_of, load_model
from aft_core.monitor import score_greedy
from aft_core.sft import run_sft

TIME_TARGET_S = 600.0
ACCURACY_TARGET = 0.70
PROBE_TURNS = 200


def venue_turns(db: VenueDB, examples: Sequence[Example], limit: int) -> list[Example]:
    """The first `limit` examples whose reference response names a venue of the database."""
    return [ex for ex in examples if names_venue(db, ex.target)][:limit]


def entity_accuracy(
    model: Any,
    tokenizer: Any,
    db: VenueDB,
    examples: Sequence[Example],
    *,
    max_source_tokens: int,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Share of greedy responses that name a venue satisfying the turn's belief-state constraints."""
    family = family_of(model, tokenizer)
    rows = family.encode_prompts([ex.history for ex in examples], tokenizer, max_source_tokens)
    responses = score_greedy(
        model, tokenizer, family, rows, ix_modes=(), layers=[0], max_new_tokens=max_new_tokens, repeat_n=3
    )["texts"]
    correct = [entity_correct(db, r, ex.belief_state) for r, ex in zip(responses, examples, strict=True)]
    return {
        "entity_accuracy": sum(correct) / max(len(correct), 1),
        "turns": len(correct),
        "samples": [
            {
                "example_id": ex.example_id,
                "user": ex.history[-1].text,
                "reference": ex.target,
                "response": r,
                "correct": c,
                "constraints": json.dumps(ex.belief_state, sort_keys=True),
            }
            for ex, r, c in zip(examples, responses, correct, strict=True)
        ],
    }


PATHS = ("eager", "previous", "product")


def step_throughput(corpus_dir: Path, out: Path, steps: int = 200, rounds: int = 2) -> dict[str, Any]:
    """SFT steps/s of the `small` preset along three paths, side by side in one process:

    - eager: transformers' eager T5 attention, logits at every decoder position, torch's default AdamW;
    - previous: the product before issue 28's second pass (`use_sft_attention`'s lean attention, the same logits and
      AdamW);
    - product: lean attention, logits at the response positions only (`sft_logits`), fused AdamW (`fused_adamw`).

    All start from the same weights and optimizer state and take the same batches (the first `steps` of the
    schedule), alternating in `rounds` so that a slow spell of the machine falls on all. The first step's loss is the
    same arithmetic on every path (equal to rounding); later steps differ by rounding, which compounds."""
    import copy

    import torch

    from aft_core.layout import SFTLayout
    from aft_core.sft import SFTRun, cosine_schedule, fused_adamw
    from aft_core.tracking import NullTracker

    cfg = SFTConfig(data=str(corpus_dir), model="small")
    run = SFTRun(cfg, SFTLayout(out / "throughput"), load_corpus(corpus_dir), NullTracker())
    weights = copy.deepcopy(run.model.state_dict())
    family_logits = run.family.sft_logits

    def every_position(model: Any, batch: dict[str, Any]) -> Any:  # the forward's logits at every position
        return model(**batch).logits, batch["labels"]

    seconds = dict.fromkeys(PATHS, 0.0)
    losses: dict[str, list[float]] = {name: [] for name in PATHS}
    for _ in range(rounds):
        for name in PATHS:
            run.model.load_state_dict(weights)
            settings = {"lr": cfg.learning_rate, "weight_decay": cfg.weight_decay}
            parameters = list(run.model.parameters())
            run.optimizer = (
                fused_adamw(parameters, **settings) if name == "product" else torch.optim.AdamW(parameters, **settings)
            )
            run.scheduler = cosine_schedule(run.optimizer, cfg.warmup_steps, cfg.max_steps)
            if name == "eager":
                run.model.set_attn_implementation("eager")
            else:
                run.family.use_sft_attention(run.model)
            run.family.sft_logits = family_logits if name == "product" else every_position  # type: ignore[method-assign]
            started = time.perf_counter()
            for step in range(steps):
                losses[name].append(float(run.train_step(step)["loss"]))
            seconds[name] += time.perf_counter() - started
    rate = {name: steps * rounds / s for name, s in seconds.items()}

    def first_step_difference(a: str, b: str) -> float:
        return max(abs(x - y) for x, y in zip(losses[a][::steps], losses[b][::steps], strict=True))

    return {
        **{f"steps_per_s_{name}": round(rate[name], 2) for name in PATHS},
        "speedup": round(rate["product"] / rate["eager"], 3),
        "speedup_over_previous": round(rate["product"] / rate["previous"], 3),
        "first_loss_difference": max(first_step_difference("eager", n) for n in ("previous", "product")),
        "max_loss_difference": max(
            abs(a - b) for n in ("previous", "product") for a, b in zip(losses["eager"], losses[n], strict=True)
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="run folder (default: a fresh temporary folder)")
    parser.add_argument("--max-steps", type=int, default=2000, help="SFT steps (the main job's 2,000)")
    parser.add_argument("--throughput-only", action="store_true", help="only the side-by-side step throughput")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-bench-sft-"))

    corpus_dir = generate_towninfo(out / "towninfo")
    throughput = step_throughput(corpus_dir, out)
    faster = (
        throughput["speedup_over_previous"] > 1.0
        and throughput["speedup"] > 1.0
        and throughput["first_loss_difference"] <= 1e-4
    )
    print(json.dumps(throughput))
    print(
        f"SFT steps/s: eager attention {throughput['steps_per_s_eager']:.2f}, previous "
        f"{throughput['steps_per_s_previous']:.2f}, product {throughput['steps_per_s_product']:.2f} "
        f"(ratio {throughput['speedup']:.2f} over eager, {throughput['speedup_over_previous']:.2f} over previous; "
        f"target > 1 both; first losses differ by {throughput['first_loss_difference']:.1e}) -> "
        f"{'PASS' if faster else 'MISS'}"
    )
    if args.throughput_only:
        return 0 if faster else 1

    started = time.monotonic()
    cfg = SFTConfig(data=str(corpus_dir), model="small", max_steps=args.max_steps)
    result = run_sft(cfg, out / "sft", progress=sys.stderr.isatty())
    model, tokenizer = load_model(result["model_dir"])
    db = load_database(corpus_dir)
    turns = venue_turns(db, load_corpus(corpus_dir).examples["test"], PROBE_TURNS)
    scored = entity_accuracy(model, tokenizer, db, turns, max_source_tokens=cfg.max_source_tokens)
    elapsed = time.monotonic() - started

    report = {
        "wall_seconds": round(elapsed, 1),
        "time_target_s": TIME_TARGET_S,
        "entity_accuracy": round(scored["entity_accuracy"], 4),
        "accuracy_target": ACCURACY_TARGET,
        "turns": scored["turns"],
        "sft_steps": result["steps"],
        "best_dev_loss": round(result["best_dev_loss"], 4),
        "train_seconds": result["train_seconds"],
        "parameters": result["parameters"],
        "samples": scored["samples"][:5],
        "out": str(out),
        "throughput": throughput,
    }
    print(json.dumps(report, indent=2))
    ok = elapsed <= TIME_TARGET_S and scored["entity_accuracy"] >= ACCURACY_TARGET and faster
    print(
        f"time {elapsed:.0f}s / {TIME_TARGET_S:.0f}s (ratio {elapsed / TIME_TARGET_S:.2f}); "
        f"entity accuracy {scored['entity_accuracy']:.3f} / {ACCURACY_TARGET} -> {'PASS' if ok else 'MISS'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
