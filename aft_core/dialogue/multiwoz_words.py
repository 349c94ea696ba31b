"""How a MultiWOZ user speaks: real user utterances retrieved from the corpus's training split by dialogue-act
signature, with the goal's values put where the corpus's span annotations mark the original ones.

An utterance is indexed when its turn holds one act (e.g. `Restaurant-Inform` with Food and Area), or only
`general-thank` / `general-bye`; its signature is that act and the set of slots. Asked to inform
{food: italian, area: north} in the restaurant domain, the speaker draws (seeded) one training utterance of
signature (Restaurant-Inform, {Area, Food}) whose every slot has a span, and replaces each span's words with the
new value ("i want a chinese place in the centre" -> "i want a italian place in the north"); a yes/no slot
(parking, internet) and a "don't care" are said by an utterance that says that very value. A request (Phone,
Addr) needs no value. Where no utterance has the signature, the caller says it with TownInfo's templates
(aft_core.dialogue.user_words) instead, and `fallbacks` counts it beside `retrieved`: how often the real words
ran out is reported, not hidden.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# goal slot -> MultiWOZ act slot
ACT_SLOTS = {
    "food": "Food",
    "area": "Area",
    "pricerange": "Price",
    "name": "Name",
    "type": "Type",
    "stars": "Stars",
    "parking": "Parking",
    "internet": "Internet",
    "departure": "Depart",
    "destination": "Dest",
    "day": "Day",
    "leaveAt": "Leave",
    "arriveBy": "Arrive",
    "people": "People",
    "time": "Time",
    "stay": "Stay",
    "address": "Addr",
    "phone": "Phone",
    "postcode": "Post",
    "reference": "Ref",
    "ref": "Ref",
    "price": "Ticket",
    "duration": "Time",
    "trainID": "Id",
    "entrance fee": "Fee",
}
CLOSINGS = ("general-thank", "general-bye")
# Slots whose span marks words that say the value ("free wifi" for Internet=yes): not replaced; the utterance is
# used only when its own value is the one to say
SAID_NOT_SUBSTITUTED = {"Parking", "Internet"}
Signature = tuple[str, frozenset[str]]


def turn_signature(dialog_act: dict[str, Any]) -> Signature | None:
    """(act, slots) of a user turn that holds one act (general-greet aside), or (closing, ∅) for a thanks or bye
    alone; None for anything else."""
    acts = {a: s for a, s in (dialog_act or {}).items() if a != "general-greet"}
    if acts and set(acts) <= set(CLOSINGS):
        return ("general-thank", frozenset())
    if len(acts) != 1:
        return None
    (act, slots), *_ = acts.items()
    if act.startswith("general-"):
        return None
    return act, frozenset(str(slot) for slot, _ in slots or [])


class RetrievedWords:
    """Utterances of a corpus's training split by signature (see the module docstring)."""

    def __init__(self, turns: Sequence[dict[str, Any]]):
        self.index: dict[Signature, list[tuple[list[str], dict[str, tuple[int, int]], dict[str, str]]]] = {}
        for turn in turns:
            acts = turn.get("dialog_act") or {}
            signature = turn_signature(acts)
            if signature is None:
                continue
            words = str(turn.get("text", "")).split()
            spans = {str(s[1]): (int(s[3]), int(s[4])) for s in turn.get("span_info") or [] if len(s) >= 5}
            values = {str(slot): str(value).lower() for slot, value in acts.get(signature[0]) or []}
            self.index.setdefault(signature, []).append((words, spans, values))
        self.retrieved = 0
        self.fallbacks = 0

    @classmethod
    def from_corpus(cls, data: dict[str, Any], train_ids: Sequence[str]) -> RetrievedWords:
        """From the user turns (even positions of each log) of the training dialogues of a MultiWOZ data.json."""
        return cls([t for d in train_ids for n, t in enumerate(data[d].get("log", [])) if n % 2 == 0])

    @classmethod
    def from_folder(cls, folder: str | Path) -> RetrievedWords:
        """From a MultiWOZ-schema corpus folder: its dialogues minus those its validation and test lists name."""
        from aft_core.dialogue.goals import read_dialogues

        folder = Path(folder)
        data = read_dialogues(folder)
        held = set()
        for name in ("valListFile.txt", "testListFile.txt"):
            if (folder / name).exists():
                held |= {line.strip() for line in (folder / name).read_text().splitlines() if line.strip()}
        return cls.from_corpus(data, [d for d in data if d not in held])

    def coverage(self, turns: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Of `turns` (e.g. the validation split's user turns) with a signature: how many the index holds one of."""
        signatures = [s for s in (turn_signature(t.get("dialog_act") or {}) for t in turns) if s is not None]
        held = sum(1 for s in signatures if s in self.index)
        return {"turns": len(signatures), "covered": held, "share": held / len(signatures) if signatures else 0.0}

    def say(self, rng: random.Random, act: str, values: dict[str, str]) -> str | None:
        """A training utterance of `act` (e.g. 'Hotel-Inform') over `values`' slots (goal slot names) with their
        values substituted, or None (counted) when none has that signature with a span for every valued slot."""
        slots = {ACT_SLOTS.get(slot, slot.capitalize()): value for slot, value in values.items()}
        needs_values = act.endswith("-Inform")
        candidates = [
            (words, spans)
            for words, spans, said in self.index.get((act, frozenset(slots)), [])
            if not needs_values
            or all(
                said.get(s) == str(v).lower()
                if s in SAID_NOT_SUBSTITUTED or v == "dontcare"
                else s in spans and 0 <= spans[s][0] <= spans[s][1] < len(words)
                for s, v in slots.items()
            )
        ]
        if not candidates:
            self.fallbacks += 1
            return None
        self.retrieved += 1
        words, spans = rng.choice(candidates)
        words = list(words)
        if needs_values:  # right to left, so earlier spans keep their word positions
            for slot, (start, end) in sorted(spans.items(), key=lambda item: -item[1][0]):
                substituted = slot in slots and slot not in SAID_NOT_SUBSTITUTED and slots[slot] != "dontcare"
                if substituted and 0 <= start <= end < len(words):
                    words[start : end + 1] = str(slots[slot]).split()
        return " ".join(words).lower()

    def inform(self, rng: random.Random, domain: str, values: dict[str, str]) -> str | None:
        return self.say(rng, f"{domain.capitalize()}-Inform", values)

    def request(self, rng: random.Random, domain: str, fields: Sequence[str]) -> str | None:
        return self.say(rng, f"{domain.capitalize()}-Request", {f: "?" for f in fields})

    def thanks(self, rng: random.Random) -> str | None:
        return self.say(rng, "general-thank", {})


def corpus_user_words(folder: str | Path) -> RetrievedWords | None:
    """The words a simulated user on the corpus in `folder` speaks beside TownInfo's own: none for TownInfo (its
    generator's paraphrases are the user's words), a MultiWOZ-schema corpus's own training utterances otherwise."""
    return None if (Path(folder) / "towninfo.json").exists() else RetrievedWords.from_folder(folder)
