"""The oracle system: TownInfo's own rule policy, as a system the simulator can talk to.

It does what the corpus generator's wizard does, reading the user's words instead of knowing the goal: it tracks
the domain and the constraints the user gave (values matched against the venue database's own values), asks for
every slot still open in the generator's fixed order, offers its top-ranked match (or says none matches),
answers attribute requests, books with a reference number, and closes. It speaks through the generator's own
system phrases. Its success on TownInfo goals must be about 1.0: when it is not, the simulator or the reader is
wrong, which is what makes it an anchor in every conversation table.

Stateless: every reply is a function of the history alone (its phrase choices are seeded by the history's
text), so it batches trivially and reruns exactly.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aft_core.data import towninfo
from aft_core.data.examples import Turn
from aft_core.data.venues import VenueDB
from aft_core.dialogue.reader import Reader, SystemReading

DOMAIN_WORDS = {  # words that open (or switch to) a domain in a user turn
    "restaurant": re.compile(r"\brestaurant\b"),
    "hotel": re.compile(r"\b(hotel|place to stay|guesthouse)\b"),
    "attraction": re.compile(
        r"\b(attraction|something to do|place to visit|"
        + "|".join(re.escape(t) for t in towninfo.ATTRACTION_TYPES)
        + r")\b"
    ),
    "train": re.compile(r"\btrain\b"),
}
DONT_CARE = re.compile(r"\b(do not mind|any is fine|does not matter|no preference|whatever you suggest)\b")
ATTRIBUTE_WORDS = {
    "address": r"\baddress\b",
    "phone": r"\bphone\b",
    "postcode": r"\bpostcode\b",
    "price": r"\bprice\b",
    "duration": r"\bduration\b",
}
THANKS = re.compile(r"\b(that is all|that will be all|everything i needed|thank you \. goodbye|goodbye)\b")


class OracleSystem:
    """TownInfo's rule policy over a venue database; `respond(histories)` -> one reply per history."""

    read_slots: Mapping[str, Sequence[str]] = towninfo.DOMAIN_SLOTS  # the slots read from a user's words, by value

    def __init__(self, db: VenueDB):
        self.db = db
        self.reader = Reader(db)
        self.readings: dict[str, SystemReading] = {}  # each reply re-reads the history: a turn is read once
        self.values = {
            domain: {
                slot: sorted(
                    {str(r[slot]).lower() for r in db.venues.get(domain, []) if r.get(slot)}, key=len, reverse=True
                )
                for slot in slots
            }
            for domain, slots in self.read_slots.items()
        }

    def respond(self, histories: Sequence[Sequence[Turn]]) -> list[str]:
        return [self.reply(history) for history in histories]

    def _values_in(self, domain: str, text: str, bare_stars: bool, asked: str | None = None) -> dict[str, str]:
        """Slot values of `domain` named in a user turn; a star rating needs its word 'star' unless the turn
        answers a question (or a no-offer) where a bare number is the rating ('then 5 is fine .'). `asked`: the slot
        the system's last turn asked for."""
        found = {}
        for slot, values in self.values[domain].items():
            for value in values:
                bare = bare_stars and slot == "stars"
                pattern = (
                    rf"\b{re.escape(value)} stars?\b" if slot == "stars" and not bare else rf"\b{re.escape(value)}\b"
                )
                if re.search(pattern, text):
                    found[slot] = value
                    break
        return found

    # --- how a user's words are understood: TownInfo's own phrasings (RuleSystem reads MultiWOZ's users) ---------

    def domains_named(self, text: str) -> list[str]:
        return [d for d, pattern in DOMAIN_WORDS.items() if pattern.search(text)]

    def dont_care(self, text: str) -> bool:
        return bool(DONT_CARE.search(text))

    def thanks(self, text: str, named: list[str], given: dict[str, str]) -> bool:
        return bool(THANKS.search(text))

    def wants_booking(self, text: str) -> bool:
        return bool(re.search(r"\b(book|reference)\b", text))

    def fields_asked(self, text: str, offered: dict[str, Any]) -> list[str]:
        return [f for f, pattern in ATTRIBUTE_WORDS.items() if re.search(pattern, text) and f in offered]

    def search(self, domain: str, active: dict[str, str]) -> list[dict[str, Any]]:
        return self.db.matching(domain, active)

    def attributes_reply(self, rng: random.Random, offered: dict[str, Any], fields: list[str]) -> str:
        return towninfo.inform_attributes(rng, offered, fields)

    def question(self, rng: random.Random, domain: str, belief: dict[str, str]) -> str | None:
        """The next slot to ask for, in the generator's fixed order (None: search now)."""
        for slot in towninfo.DOMAIN_SLOTS[domain]:
            if slot not in belief:
                return rng.choice(towninfo.ASK[slot])
        return None

    def slots_of(self, domain: str) -> Sequence[str]:
        return towninfo.DOMAIN_SLOTS[domain]

    def reply(self, history: Sequence[Turn]) -> str:
        rng = random.Random(hashlib.sha256("\n".join(t.text for t in history).encode()).hexdigest())
        domain: str | None = None
        belief: dict[str, dict[str, str]] = {}
        offered: dict[str, Any] | None = None
        asked: str | None = None
        no_offer = False
        for turn in history:
            text = turn.text.lower()
            if turn.speaker == "system":
                if text not in self.readings:
                    self.readings[text] = self.reader.read(text)
                reading = self.readings[text]
                asked = reading.requested[0] if reading.requested else None
                no_offer = reading.no_offer
                mine = [record for d, record in reading.offered if d == domain]
                offered = mine[-1] if mine else offered
                continue
            named = self.domains_named(text)
            if named and named[0] != domain and (domain is None or not belief.get(named[0])):
                domain, offered = named[0], None
            if domain is None:
                continue
            given = self._values_in(domain, text, asked == "stars" or no_offer, asked)
            if given and any(belief.get(domain, {}).get(s) not in (None, v) for s, v in given.items()):
                offered = None  # a changed constraint: a new search
            belief.setdefault(domain, {}).update(given)
            if asked is not None and asked in self.slots_of(domain) and asked not in given and self.dont_care(text):
                belief[domain][asked] = "dontcare"
            if turn is not history[-1]:
                continue
            if self.thanks(text, named, given):
                return rng.choice(towninfo.CLOSINGS)
            if offered is not None:
                fields = self.fields_asked(text, offered)
                if fields:
                    return self.attributes_reply(rng, offered, fields)
                if self.wants_booking(text):
                    ref = hashlib.sha256(("ref:" + "\n".join(t.text for t in history)).encode()).hexdigest()[:8]
                    return towninfo.booked(rng, ref)
            if (ask := self.question(rng, domain, belief[domain])) is not None:
                return ask
            active = {s: v for s, v in belief[domain].items() if v != "dontcare"}
            matches = self.search(domain, active)
            if not matches:
                return towninfo.no_match(rng, domain, active)
            return towninfo.recommend(rng, domain, matches[0])
        return rng.choice(towninfo.ANYTHING_ELSE[:3])
