"""Benchmark: SFT of the `small` preset on the default TownInfo corpus, on this machine.

Targets (issue 2): the whole run (corpus, tokenizer, training, evaluation) finishes in <= 600 s,
and on 200 held-out test turns whose reference names a venue, greedy responses name a venue
satisfying the user's constraints in >= 70% of them. Prints both figures and five sample
responses; exits 1 on a miss.

    python bench/sft_default.py [--out DIR] [--max-steps N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from typing import Any, Sequence

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


def entity_accuracy(model: Any, tokenizer: Any, db: VenueDB, examples: Sequence[Example], *,
                    max_source_tokens: int, max_new_tokens: int = 48) -> dict[str, Any]:
    """Share of greedy responses that name a venue satisfying the turn's belief-state constraints."""
    family = family_of(model, tokenizer)
    rows = family.encode_prompts([ex.history for ex in examples], tokenizer, max_source_tokens)
    responses = score_greedy(model, tokenizer, family, rows, ix_modes=(), layers=[0], max_new_tokens=max_new_tokens,
                             repeat_n=3)["texts"]
    correct = [entity_correct(db, r, ex.belief_state) for r, ex in zip(responses, examples)]
    return {
        "entity_accuracy": sum(correct) / max(len(correct), 1),
        "turns": len(correct),
        "samples": [{"example_id": ex.example_id, "user": ex.history[-1].text, "reference": ex.target,
                     "response": r, "correct": c, "constraints": json.dumps(ex.belief_state, sort_keys=True)}
                    for ex, r, c in zip(examples, responses, correct)],
    }

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="run folder (default: a fresh temporary folder)")
    parser.add_argument("--max-steps", type=int, default=SFTConfig.max_steps)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="aft-bench-sft-"))

    started = time.monotonic()
    corpus_dir = generate_towninfo(out / "towninfo")
    cfg = SFTConfig(data=str(corpus_dir), model="small", max_steps=args.max_steps)
    result = run_sft(cfg, out / "sft", progress=sys.stderr.isatty())
    model, tokenizer = load_model(result["model_dir"])
    db = load_database(corpus_dir)
    turns = venue_turns(db, load_corpus(corpus_dir).examples["test"], PROBE_TURNS)
    scored = entity_accuracy(model, tokenizer, db, turns, max_source_tokens=cfg.max_source_tokens)
    elapsed = time.monotonic() - started

    report = {
        "wall_seconds": round(elapsed, 1), "time_target_s": TIME_TARGET_S,
        "entity_accuracy": round(scored["entity_accuracy"], 4), "accuracy_target": ACCURACY_TARGET,
        "turns": scored["turns"], "sft_steps": result["steps"], "best_dev_loss": round(result["best_dev_loss"], 4),
        "train_seconds": result["train_seconds"], "parameters": result["parameters"],
        "samples": scored["samples"][:5], "out": str(out),
    }
    print(json.dumps(report, indent=2))
    ok = elapsed <= TIME_TARGET_S and scored["entity_accuracy"] >= ACCURACY_TARGET
    print(f"time {elapsed:.0f}s / {TIME_TARGET_S:.0f}s (ratio {elapsed / TIME_TARGET_S:.2f}); "
          f"entity accuracy {scored['entity_accuracy']:.3f} / {ACCURACY_TARGET} -> {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
