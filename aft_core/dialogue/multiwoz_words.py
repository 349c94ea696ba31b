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

An utterance is drawn only if, once its spans are replaced, it says nothing the user did not mean. Real user
turns lean on their dialogue ("a table for the same day as my hotel", "no, italian in the west"), and their
annotations miss values, so a drawn utterance could name another domain or keep a stale value and steer the
system wrong (with a misread train id, this kept the rule system's success at 0.62 / 0.59 on the hold-out's
validation goals, full / sharded user, before it was fixed; 0.88 / 0.91 after). Words outside the replaced spans
may not hold:
- a word that names another domain (`DOMAIN_WORDS`: "hotel" in a restaurant request);
- a value of one of the act's own domain's search slots (`CHECKED_SLOTS`, the values the training turns' acts and
  the training goals' constraints give it) other than the one meant;
- a clock time.
A user's first words about a domain must name it: with a word of DOMAIN_WORDS, or a value that only that domain
has (NAMING_SLOTS).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
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
# Words that name a domain (MultiWOZ's domain names, their plurals and the usual nouns for them)
DOMAIN_WORDS = {
    "restaurant": ("restaurant", "restaurants", "dine", "dining", "dinner", "lunch", "eat"),
    "hotel": ("hotel", "hotels", "guesthouse", "guesthouses", "lodging", "lodgings", "accommodation", "accommodations"),
    "train": ("train", "trains", "railway"),
    "taxi": ("taxi", "taxis", "cab"),
    "attraction": ("attraction", "attractions", "museum", "museums", "college", "colleges", "cinema", "theatre"),
    "hospital": ("hospital",),
    "police": ("police",),
}
# The act slots whose annotated values are checked in a drawn utterance's other words (taxi places, names and
# numbers are too varied or too common to tell from other words)
CHECKED_SLOTS = ("Area", "Price", "Food", "Type", "Day", "Depart", "Dest")
# Act slots whose value names its domain by itself (a venue, a cuisine, an attraction type, a station)
NAMING_SLOTS = {"Name", "Food", "Type", "Depart", "Dest"}
CLOCK = re.compile(r"^\d{1,2}[:.]\d{2}$")


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


@dataclass
class Utterance:
    """One indexed user turn: its words, the span (first, last word) of each slot, the values its act says, and
    where its words name a domain, a checked slot's value or a clock time."""

    words: list[str]
    spans: dict[str, tuple[int, int]]
    values: dict[str, str]
    mentions: list[Mention] = field(default_factory=list)


@dataclass(frozen=True)
class Mention:
    """Words [start, end] of an utterance that name another domain (`slot` "domain", `value` the domain), its own
    domain ("own domain"), a clock time ("time"), or a checked act slot's value (`slot` the act slot)."""

    start: int
    end: int
    slot: str
    value: str


def annotated_values(
    turns: Sequence[dict[str, Any]], goals: Sequence[dict[str, Any]] = ()
) -> dict[str, dict[str, set[tuple[str, ...]]]]:
    """domain -> checked act slot -> the values (as word tuples) the turns' acts and the goals' constraints (`info`,
    `fail_info`: "unusual" food is in goals, not in the acts of the turns that say it) give it."""
    said = [
        (act.split("-")[0].lower(), slot, value)
        for turn in turns
        for act, slots in (turn.get("dialog_act") or {}).items()
        for slot, value in slots or []
    ]
    said += [
        (domain, ACT_SLOTS.get(slot, slot.capitalize()), value)
        for goal in goals
        for domain, part in goal.items()
        if isinstance(part, dict)
        for key in ("info", "fail_info")
        for slot, value in (part.get(key) or {}).items()
    ]
    found: dict[str, dict[str, set[tuple[str, ...]]]] = {}
    for domain, slot, value in said:
        words = tuple(str(value).lower().split())
        if words in ((domain,), (domain + "s",)):
            continue  # "a hotel" is a hotel user's word for any place to stay, not only a type
        if slot in CHECKED_SLOTS and words and words[0] not in ("?", "none", "dontcare"):
            found.setdefault(domain, {}).setdefault(slot, set()).add(words)
    return found


def find_mentions(words: Sequence[str], domain: str, values: dict[str, set[tuple[str, ...]]]) -> list[Mention]:
    """Where `words` name another domain than `domain`, a value of one of `values`' slots, or a clock time."""
    lowered = [w.lower() for w in words]
    found = [
        Mention(i, i, "domain" if other != domain else "own domain", other)
        for i, word in enumerate(lowered)
        for other, names in DOMAIN_WORDS.items()
        if word in names
    ]
    found += [Mention(i, i, "time", word) for i, word in enumerate(lowered) if CLOCK.match(word)]
    longest = max((len(v) for vs in values.values() for v in vs), default=0)
    for slot, phrases in values.items():
        for n in range(1, longest + 1):
            for i in range(len(lowered) - n + 1):
                if tuple(lowered[i : i + n]) in phrases:
                    found.append(Mention(i, i + n - 1, slot, " ".join(lowered[i : i + n])))
    return found


class RetrievedWords:
    """Utterances of a corpus's training split by signature (see the module docstring)."""

    def __init__(self, turns: Sequence[dict[str, Any]], goals: Sequence[dict[str, Any]] = ()):
        self.index: dict[Signature, list[Utterance]] = {}
        vocabulary = annotated_values(turns, goals)
        for turn in turns:
            acts = turn.get("dialog_act") or {}
            signature = turn_signature(acts)
            if signature is None:
                continue
            words = str(turn.get("text", "")).split()
            spans = {str(s[1]): (int(s[3]), int(s[4])) for s in turn.get("span_info") or [] if len(s) >= 5}
            values = {str(slot): str(value).lower() for slot, value in acts.get(signature[0]) or []}
            domain = signature[0].split("-")[0].lower()
            mentions = find_mentions(words, domain, vocabulary.get(domain, {}))
            self.index.setdefault(signature, []).append(Utterance(words, spans, values, mentions))
        self.retrieved = 0
        self.fallbacks = 0

    @classmethod
    def from_corpus(cls, data: dict[str, Any], train_ids: Sequence[str]) -> RetrievedWords:
        """From the user turns (even positions of each log) of the training dialogues of a MultiWOZ data.json."""
        turns = [t for d in train_ids for n, t in enumerate(data[d].get("log", [])) if n % 2 == 0]
        return cls(turns, [data[d].get("goal") or {} for d in train_ids])

    @classmethod
    def from_folder(cls, folder: str | Path, data: dict[str, Any] | None = None) -> RetrievedWords:
        """From a MultiWOZ-schema corpus folder: its dialogues (`data`, when already read) minus those its
        validation and test lists name."""
        from aft_core.data.corpus import listed_dialogues
        from aft_core.dialogue.goals import read_dialogues

        folder = Path(folder)
        data = data if data is not None else read_dialogues(folder)
        held = {dialogue for ids in listed_dialogues(folder).values() for dialogue in ids}
        return cls.from_corpus(data, [d for d in data if d not in held])

    def coverage(self, turns: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Of `turns` (e.g. the validation split's user turns) with a signature: how many the index holds one of."""
        signatures = [s for s in (turn_signature(t.get("dialog_act") or {}) for t in turns) if s is not None]
        held = sum(1 for s in signatures if s in self.index)
        return {"turns": len(signatures), "covered": held, "share": held / len(signatures) if signatures else 0.0}

    def say(self, rng: random.Random, act: str, values: dict[str, str], opening: bool = False) -> str | None:
        """A training utterance of `act` (e.g. 'Hotel-Inform') over `values`' slots (goal slot names) with their
        values substituted, or None (counted) when none has that signature with a span for every valued slot.
        `opening`: the user's first words about the domain, which name it (a turn that only says "something in the
        centre" leans on a system question the simulated system did not ask)."""
        slots = {ACT_SLOTS.get(slot, slot.capitalize()): value for slot, value in values.items()}
        needs_values = act.endswith("-Inform")
        candidates = [
            u
            for u in self.index.get((act, frozenset(slots)), [])
            if (
                not needs_values
                or all(
                    u.values.get(s) == str(v).lower()
                    if s in SAID_NOT_SUBSTITUTED or v == "dontcare"
                    else s in u.spans and 0 <= u.spans[s][0] <= u.spans[s][1] < len(u.words)
                    for s, v in slots.items()
                )
            )
            and says_only(u, slots if needs_values else {})
            and (not opening or slots.keys() & NAMING_SLOTS or any(m.slot == "own domain" for m in u.mentions))
        ]
        if not candidates:
            self.fallbacks += 1
            return None
        self.retrieved += 1
        chosen = rng.choice(candidates)
        words = list(chosen.words)
        for slot, (start, end) in replaced_spans(chosen, slots if needs_values else {}):  # right to left
            words[start : end + 1] = str(slots[slot]).split()
        return " ".join(words).lower()

    def inform(self, rng: random.Random, domain: str, values: dict[str, str], opening: bool = False) -> str | None:
        return self.say(rng, f"{domain.capitalize()}-Inform", values, opening)

    def request(self, rng: random.Random, domain: str, fields: Sequence[str]) -> str | None:
        return self.say(rng, f"{domain.capitalize()}-Request", {f: "?" for f in fields})

    def thanks(self, rng: random.Random) -> str | None:
        return self.say(rng, "general-thank", {})


def replaced_spans(utterance: Utterance, slots: dict[str, str]) -> list[tuple[str, tuple[int, int]]]:
    """The spans whose words are replaced by `slots`' values, right to left (earlier spans keep their positions)."""
    return sorted(
        (
            (slot, span)
            for slot, span in utterance.spans.items()
            if slot in slots and slot not in SAID_NOT_SUBSTITUTED and slots[slot] != "dontcare"
            and 0 <= span[0] <= span[1] < len(utterance.words)
        ),
        key=lambda item: -item[1][0],
    )  # fmt: skip


def says_only(utterance: Utterance, slots: dict[str, str]) -> bool:
    """Whether `utterance`, its spans replaced by `slots`' values (act slot -> value), names no other domain, no
    clock time and no value of a checked slot but the one meant, outside the replaced words."""
    replaced = {i for _, (start, end) in replaced_spans(utterance, slots) for i in range(start, end + 1)}
    for mention in utterance.mentions:
        if any(i in replaced for i in range(mention.start, mention.end + 1)):
            continue
        if mention.slot == "own domain":
            continue
        if mention.slot in ("domain", "time"):
            return False
        meant = slots.get(mention.slot)
        if meant is None or meant == "dontcare" or str(meant).lower() != mention.value:
            return False
    return True


def corpus_user_words(folder: str | Path, data: dict[str, Any] | None = None) -> RetrievedWords | None:
    """The words a simulated user on the corpus in `folder` speaks beside TownInfo's own: none for TownInfo (its
    generator's paraphrases are the user's words), a MultiWOZ-schema corpus's own training utterances otherwise
    (`data`: its data.json, when already read)."""
    return None if (Path(folder) / "towninfo.json").exists() else RetrievedWords.from_folder(folder, data)
