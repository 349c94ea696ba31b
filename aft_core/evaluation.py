"""Evaluation of a model's responses on held-out examples (entity accuracy; the full Table 1 builds on it)."""
from __future__ import annotations

import json
from typing import Any, Sequence

from aft_core.data.examples import Example, encode_sources
from aft_core.data.venues import VenueDB, entity_correct, names_venue
from aft_core.modeling import generate_texts


def venue_turns(db: VenueDB, examples: Sequence[Example], limit: int) -> list[Example]:
    """The first `limit` examples whose reference response names a venue of the database."""
    return [ex for ex in examples if names_venue(db, ex.target)][:limit]


def entity_accuracy(model: Any, tokenizer: Any, db: VenueDB, examples: Sequence[Example], *,
                    max_source_tokens: int, max_new_tokens: int = 48) -> dict[str, Any]:
    """Share of greedy responses that name a venue satisfying the turn's belief-state constraints."""
    sources = [s["input_ids"] for s in encode_sources([ex.history for ex in examples], tokenizer, max_source_tokens)]
    responses = generate_texts(model, tokenizer, sources, max_new_tokens=max_new_tokens)
    correct = [entity_correct(db, r, ex.belief_state) for r, ex in zip(responses, examples)]
    return {
        "entity_accuracy": sum(correct) / max(len(correct), 1),
        "turns": len(correct),
        "samples": [{"example_id": ex.example_id, "user": ex.history[-1].text, "reference": ex.target,
                     "response": r, "correct": c, "constraints": json.dumps(ex.belief_state, sort_keys=True)}
                    for ex, r, c in zip(examples, responses, correct)],
    }
