"""Inform and Success of the test evaluation's responses (context-to-response, mwzeval's setting): each system's
greedy reply at every system turn of a whole test dialogue, given the gold history, is read by the reader and
scored against the dialogue's goal as one conversation (aft_core.dialogue.metrics.dialogue_outcome); the corpus's
own system turns are scored the same way (the `reference` row, the anchor the literature reports: mwzeval gives
MultiWOZ 2.2's reference Inform 93.7 and Success 90.9).

Only dialogues whose every system turn was evaluated count. Lexicalised responses read by a matcher, not the
delexicalised leaderboard setting; refused (with the reason) where the corpus has no goals or the reader does not
agree with its gold acts on the kinds Inform and Success read (OUTCOME_KINDS;
aft_core.dialogue.closed_loop.reader_gate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from aft_core.data.venues import VenueDB
from aft_core.dialogue.goals import dialogues_file, load_goals, read_dialogues, venue_folder
from aft_core.dialogue.metrics import dialogue_outcome
from aft_core.dialogue.reader import OUTCOME_KINDS, Reader
from aft_core.stats import bootstrap_ci

REFERENCE = "reference (the corpus's system turns)"


def dialogue_success(per_example: pd.DataFrame, data: str | Path, split: str) -> dict[str, Any]:
    """{"dialogues", "reader_f1", "systems": {system: {"inform": [mean, low, high], "success": [...]}}} over the
    whole dialogues of `per_example` (one row per system and example: example_id '<dialogue>/<turn>', response,
    reference), `REFERENCE` among the systems; or {"skipped": reason}."""
    from aft_core.dialogue.closed_loop import reader_gate

    folder = Path(data)
    dialogues = read_dialogues(folder) if dialogues_file(folder) is not None else None
    reason, reader_f1 = reader_gate(folder, split, dialogues, OUTCOME_KINDS)
    if reason is not None:
        return {"skipped": reason}
    if dialogues is None:  # the gate reads the dialogue file too, so it has refused such a folder already
        return {"skipped": f"{folder} has no data.json"}
    goals = {g.dialogue_id: g for g in load_goals(folder, split, dialogues)}
    reader = Reader(VenueDB.load(venue_folder(folder)))
    frame = per_example.assign(
        dialogue_id=per_example["example_id"].str.rsplit("/", n=1).str[0],
        turn=per_example["example_id"].str.rsplit("/", n=1).str[1].astype(int),
    )
    first = frame[frame["system"] == frame["system"].iloc[0]]
    counts = first.groupby("dialogue_id")["turn"].count()
    whole = [d for d, n in counts.items() if d in goals and n == len(dialogues[d]["log"]) // 2]
    if not whole:
        return {"skipped": "no test dialogue was evaluated whole (raise evaluation.test_examples)"}
    texts = {
        name: {
            d: g.sort_values("turn")["response"].tolist()
            for d, g in part[part["dialogue_id"].isin(whole)].groupby("dialogue_id")
        }
        for name, part in frame.groupby("system", sort=False)
    }
    texts[REFERENCE] = {
        d: g.sort_values("turn")["reference"].tolist()
        for d, g in first[first["dialogue_id"].isin(whole)].groupby("dialogue_id")
    }
    systems = {}
    for name, by_dialogue in texts.items():
        outcomes = [
            dialogue_outcome(
                goals[d],
                replies,
                [reader.read(r) for r in replies],
                complete=False,
                timeout=False,
                offers=0,
                violations=0,
            )
            for d, replies in sorted(by_dialogue.items())
        ]
        systems[name] = {key: list(bootstrap_ci([o[key] for o in outcomes])) for key in ("inform", "success")}
    return {"dialogues": len(whole), "reader_f1": reader_f1, "systems": systems}
