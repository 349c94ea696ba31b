"""Reading a system's words: which venue it offered, which attributes it gave, whether it booked, whether it
said nothing matches, and which slots it asked for.

Built from the venue databases (names and train ids, exact first and then fuzzily with rapidfuzz, so a model's
slightly garbled name still counts; addresses by lookup) and from patterns for phone numbers, postcodes,
reference numbers, times, prices and durations. `reader_agreement` scores it against a corpus's gold system
acts (per slot kind: precision, recall, F1), which is how its numbers earn trust.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process

from aft_core.data.venues import VenueDB, venue_name

FUZZY_MIN_RATIO = 92.0  # rapidfuzz ratio (0-100) a word window must reach to be read as a venue's name
PATTERNS = {
    "phone": re.compile(r"(?<!\d)(\d{5} ?\d{6})(?!\d)"),
    "postcode": re.compile(r"\b(c\.?b\s?\d{1,2}\s?,?\s?\d\s?[a-z]\.?\s?[a-z])\b"),
    # Any reference the system states counts (a lexicalised reply's booking cannot be checked against a booking
    # system; mwzeval counts the [ref] slot's presence): TownInfo's are 8 characters, a model's may be shorter.
    "ref": re.compile(r"reference(?: number)?(?: is| will be)?\s*:?\s*#?([a-z0-9]{4,12})\b"),
    "price": re.compile(r"(\d+(?:\.\d+)? pounds)"),
    "duration": re.compile(r"(\d+ minutes)"),
    "leaveAt": re.compile(r"(?:leav\w*|depart\w*)(?: \w+){0,2} at (\d{1,2}:\d{2})"),
    "arriveBy": re.compile(r"arriv\w*(?: \w+){0,2} (?:at|by) (\d{1,2}:\d{2})"),
    "entrance fee": re.compile(r"entrance fee is (free|\d+(?:\.\d+)? pounds)"),
}
NO_OFFER = re.compile(
    r"\b(there (?:is|are) no|i have no|nothing match\w*|no (?:results|matches|match)|"
    r"(?:unable|not able) to find|(?:could|can) ?(?:n't|not) find|(?:do|don't|do not) have any)\b"
)
# What a system's question asks for, read from its question sentences (a sentence ending in '?').
REQUESTS = {
    "food": re.compile(r"\b(food|cuisine)\b"),
    "area": re.compile(r"\b(area|part of (?:town|the city)|side of town)\b"),
    "pricerange": re.compile(r"\b(price ?range|spend|budget)\b"),
    "stars": re.compile(r"\bstars?\b"),
    "type": re.compile(r"\b(type|kind) of (?:attraction|place)|\btype of attraction\b|\bparticular type\b"),
    "destination": re.compile(
        r"\b(where (?:are you|will you be) (?:travel\w*|going|head\w*)|destination|"
        r"where would you like to go)\b"
    ),
    "departure": re.compile(r"\b(where (?:are you|will you be) (?:leaving|departing) from|departure)\b"),
    "day": re.compile(r"\b(what|which) day\b"),
    "people": re.compile(r"\bhow many (?:people|tickets|guests|persons)\b"),
    "time": re.compile(r"\bwhat time\b"),
    "stay": re.compile(r"\bhow many (?:nights|days)\b"),
}


@dataclass
class SystemReading:
    """What one system turn said, as far as a user (and a metric) needs it."""

    offered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (domain, venue record), in order
    informed: dict[str, str] = field(default_factory=dict)  # attribute -> value as written
    reference: str | None = None
    no_offer: bool = False
    requested: tuple[str, ...] = ()
    goodbye: bool = False


def same_value(value: str) -> str:
    """A value as compared across a venue record, gold acts and system text: lower case, no spaces, dots or commas
    ('CB2 1TT', 'cb21tt' and 'cb2 1tt.' are one postcode)."""
    return re.sub(r"[\s.,]", "", str(value).lower())


class Reader:
    """Reads system turns against one corpus's venue databases."""

    def __init__(self, db: VenueDB):
        self.db = db
        self._addresses: dict[str, str] = {}
        self._names: dict[int, dict[str, list[tuple[str, dict[str, Any]]]]] = {}
        for domain, records in db.venues.items():
            for record in records:
                if isinstance(record.get("address"), str) and record["address"].strip():
                    self._addresses[record["address"].strip().lower()] = record["address"]
                name = venue_name(record)
                if name:
                    words = name.lower().split()
                    self._names.setdefault(len(words), {}).setdefault(" ".join(words), []).append((domain, record))
        self._address_pattern = (
            re.compile(
                r"(?<!\w)("
                + "|".join(re.escape(a) for a in sorted(self._addresses, key=len, reverse=True))
                + r")(?!\w)"
            )
            if self._addresses
            else None
        )

    def venues(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        """Venues named in `text`: exact names first; failing those, the word window closest to a name, if it is
        within FUZZY_MIN_RATIO (rapidfuzz's ratio, 0-100) of it."""
        found = self.db.mentioned(text)
        if found:
            return found
        words = re.findall(r"[a-z0-9']+", text.lower())
        best: tuple[float, list[tuple[str, dict[str, Any]]]] | None = None
        for size, names in self._names.items():
            choices = list(names)
            for start in range(0, max(len(words) - size + 1, 0)):
                window = " ".join(words[start : start + size])
                match = process.extractOne(window, choices, scorer=fuzz.ratio, score_cutoff=FUZZY_MIN_RATIO)
                if match is not None and (best is None or match[1] > best[0]):
                    best = (match[1], names[match[0]])
        return list(best[1]) if best else []

    def read(self, text: str) -> SystemReading:
        low = " ".join(text.lower().split())
        reading = SystemReading(offered=self.venues(low))
        for kind, pattern in PATTERNS.items():
            match = pattern.search(low if kind != "price" else PATTERNS["entrance fee"].sub("", low))
            if match is None:
                continue
            if kind == "ref":
                reading.reference = match.group(1)
            else:
                reading.informed[kind] = match.group(1)
        if self._address_pattern is not None and (match := self._address_pattern.search(low)):
            reading.informed["address"] = match.group(1)
        reading.no_offer = not reading.offered and bool(NO_OFFER.search(low))
        questions = [s for s in re.split(r"(?<=[?.!])\s+", low) if s.rstrip().endswith("?")]
        reading.requested = tuple(
            slot for slot, pattern in REQUESTS.items() if any(pattern.search(q) for q in questions)
        )
        reading.goodbye = bool(re.search(r"\b(goodbye|good bye|bye|have a (?:great|nice|good) day|enjoy your)\b", low))
        return reading


# --- agreement with gold system acts -----------------------------------------------------------------------

SCORED_KINDS = ("name", "address", "phone", "postcode", "price", "duration", "ref", "no_offer", "request")


def gold_kinds(dialog_act: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, normalised value) pairs a gold system turn's acts annotate, for the kinds the reader is scored on."""
    gold: set[tuple[str, str]] = set()
    for act, slots in (dialog_act or {}).items():
        intent = act.split("-", 1)[-1]
        if intent == "NoOffer":
            gold.add(("no_offer", ""))
        if intent == "Request":
            gold.add(("request", ""))
        for slot, value in slots or []:
            key = {
                "name": "name",
                "trainid": "name",
                "id": "name",
                "addr": "address",
                "address": "address",
                "phone": "phone",
                "post": "postcode",
                "postcode": "postcode",
                "ref": "ref",
                "price": "price",
                "ticket": "price",
                "time": "duration",
                "duration": "duration",
            }.get(str(slot).lower())
            if key is None or intent in ("Request", "NoOffer", "Select", "NoBook"):
                continue
            if value in ("?", "none", ""):
                continue
            gold.add((key, same_value(str(value))))
    return gold


def read_kinds(reading: SystemReading) -> set[tuple[str, str]]:
    """The reader's (kind, normalised value) pairs for one turn, in gold_kinds' terms."""
    found: set[tuple[str, str]] = set()
    for _, record in reading.offered:
        found.add(("name", same_value(venue_name(record) or "")))
    for kind in ("address", "phone", "postcode", "price", "duration"):
        if kind in reading.informed:
            found.add((kind, same_value(reading.informed[kind])))
    if reading.reference:
        found.add(("ref", same_value(reading.reference)))
    if reading.no_offer:
        found.add(("no_offer", ""))
    if reading.requested:
        found.add(("request", ""))
    return found


def reader_agreement(reader: Reader, turns: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per slot kind (and `all`, micro-averaged) of the reader against gold acts, over
    (system text, dialog_act) pairs. A (kind, value) pair is a true positive when both hold it for the turn."""
    counts = {kind: [0, 0, 0] for kind in SCORED_KINDS}  # tp, fp, fn
    for text, acts in turns:
        gold, read = gold_kinds(acts), read_kinds(reader.read(text))
        for kind in SCORED_KINDS:
            g = {v for k, v in gold if k == kind}
            r = {v for k, v in read if k == kind}
            counts[kind][0] += len(g & r)
            counts[kind][1] += len(r - g)
            counts[kind][2] += len(g - r)
    counts["all"] = [sum(c[i] for c in counts.values()) for i in range(3)]
    result: dict[str, dict[str, float]] = {}
    for kind, (tp, fp, fn) in counts.items():
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if fp + fn else float("nan"))
        result[kind] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": tp + fn,
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return result
