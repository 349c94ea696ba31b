"""The rule system: a policy over a MultiWOZ-schema venue database that understands MultiWOZ's users.

TownInfo's oracle (aft_core.dialogue.oracle) reads its own generator's user phrasings; the simulated MultiWOZ user
speaks the corpus's real utterances (aft_core.dialogue.multiwoz_words), so this system reads them the way a rule
DST reads values: database values of the domain's slots found in the words (names through the reader's venue
matcher, train times by pattern, "free parking"/"wifi" as yes), "does n't matter" as don't-care, and the domain
from its words or from the values it names. It asks for a domain's slots in a fixed order only while more than one
venue matches, offers the first match, answers attribute requests (the train's id too), books with a reference
number and closes; it speaks TownInfo's system phrases, which the reader reads without error. On MultiWOZ it is
the anchor that TownInfo's oracle is there: its success shows what the simulator and the reader allow.

Stateless, like the oracle: every reply is a function of the history alone.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from aft_core.data.venues import VenueDB
from aft_core.dialogue.oracle import OracleSystem
from aft_core.dialogue.reader import normalise

# The slots asked for, in order, while more than one venue matches (the others are taken when the user gives them)
ASKED = {
    "restaurant": ("food", "area", "pricerange"),
    "hotel": ("area", "pricerange", "type"),
    "attraction": ("type", "area"),
    "train": ("departure", "destination", "day", "leaveAt"),
}
# The slots read from a user's words, by database value
READ = {
    "restaurant": ("food", "area", "pricerange"),
    "hotel": ("area", "pricerange", "type", "stars"),
    "attraction": ("type", "area"),
    "train": ("day",),  # its stations are told apart by the words before them (STATION_CUES)
}
# The words that make a station the departure or the destination ("from ely", "to norwich")
STATION_CUES = {
    "departure": r"(?:from|depart\w*(?: from)?|leav\w*(?: from)?|out of|at)",
    "destination": r"(?:to|into|going to|heading to|headed to|destination(?: is)?|for)",
}
QUESTIONS: dict[str, str | dict[str, str]] = {
    "food": "what type of food would you like ?",
    "area": "what area would you like ?",
    "pricerange": "what price range would you like ?",
    "type": {
        "hotel": "would you like a hotel or a guesthouse ?",
        "attraction": "what type of attraction are you interested in ?",
    },
    "departure": "where will you be departing from ?",
    "destination": "where are you travelling to ?",
    "day": "what day will you travel ?",
    "leaveAt": "when would you like to leave ?",
}
DOMAIN_WORDS = {
    "restaurant": re.compile(
        r"\b(restaurants?|place to (?:eat|dine)|somewhere to (?:eat|dine)|food|dine|dining|eat)\b"
    ),
    "hotel": re.compile(r"\b(hotels?|guest ?houses?|place to stay|somewhere to stay|lodging|accommodations?|stay)\b"),
    "attraction": re.compile(r"\b(attractions?|something to do|places? to (?:go|visit)|entertainment|sights?)\b"),
    "train": re.compile(r"\b(train|trains)\b"),
}
DONT_CARE = re.compile(
    r"\b(doesn't (?:really )?matter|does not matter|don't (?:really )?care|do not care|no (?:particular )?preference|"
    r"(?:any|either) (?:one |type |area |price |kind )?(?:is|would be) (?:fine|ok|okay|good)|not (?:really )?important|"
    r"i don't mind|i do not mind|whatever|not particular|no particular|any (?:area|part|price|type|kind|is fine)|"
    r"open to (?:any|suggestions)|not really|anywhere|any of them|surprise me|up to you|any place|will do|"
    r"(?:make|have|any) (?:a )?(?:recommendation|suggestion)|(?:would|do|can|could) you (?:recommend|suggest))\b"
)
THANKS = re.compile(r"\b(thank|thanks|that is all|that's all|that will be all|goodbye|bye|all i need)\b")
BOOKING = re.compile(
    r"\b(book|booking|reserve|reservation|reference|table for|tickets?|seats?|\d+ (?:people|persons|nights?)|"
    r"for (?:one|two|three|four|five|six|seven|eight) (?:people|persons|nights?)|(?:one|two|three|four|five|six|seven|"
    r"eight) nights?)\b"
)
ATTRIBUTES = {
    "address": r"\b(address|where is it|located)\b",
    "phone": r"\b(phone|telephone|contact number)\b",
    "postcode": r"\b(post ?code|postal code|zip)\b",
    "price": r"\b(price|cost|fare|how much)\b",
    "duration": r"\b(duration|travel time|how long)\b",
    "trainID": r"\b(train id|train number|trainid|id)\b",
    "entrance fee": r"\b(entrance fee|fee|admission)\b",
    "stars": r"\b(stars?|star rating)\b",
    "area": r"\b(area|part of town)\b",
    "pricerange": r"\b(price range|pricerange)\b",
    "type": r"\b(type)\b",
    "leaveAt": r"\b(depart(?:ure)? time|leave|leaves|departs)\b",
    "arriveBy": r"\b(arrival time|arrive|arrives)\b",
}
# The slots that say which domain a turn is about when no word names it ("italian food", "from ely"); an area, a
# price range or a day could be any domain's, so a turn of those alone stays in the domain under way
OWN_SLOTS = {
    "restaurant": {"food"},
    "hotel": {"stars", "parking", "internet", "type"},
    "attraction": {"type"},
    "train": {"departure", "destination", "leaveAt", "arriveBy"},
}
# How an attribute is said, in words the reader reads (default: "the <attribute> is <value>")
SAID = {
    "phone": "the phone number is {}",
    "leaveAt": "it leaves at {}",
    "arriveBy": "it arrives at {}",
    "trainID": "the train id is {}",
    "duration": "the journey takes {}",
    "price": "the fare is {}",
    "stars": "it has {} stars",
    "pricerange": "it is in the {} price range",
    "area": "it is in the {}",
}
MEMO_SIZE = 200_000  # parsed (domain, user turn) pairs kept before the memo starts afresh
NOT_CUISINES = ("some", "good", "the", "any", "of", "serves", "serve", "that", "type", "kind", "what", "which",
                "nice", "great", "fast", "more", "same", "local", "their", "your", "my", "this", "different", "other",
                "cheap", "expensive", "moderate", "moderately", "priced", "cheaper", "pricey")  # fmt: skip
NO_THING = r"(?:no|not|\w+n't|without)(?: \w+){0,3} "
STARS = re.compile(r"\b([0-5])[ -]?stars?\b|\bstar rating of ([0-5])\b|\brated ([0-5])\b")
TIMES = {
    "leaveAt": re.compile(r"(?:leav\w*|depart\w*|after|from)(?: \w+){0,3} (\d{1,2}:\d{2})"),
    "arriveBy": re.compile(r"(?:arriv\w*|by|before|get there|there by)(?: \w+){0,3} (\d{1,2}:\d{2})"),
}


class RuleSystem(OracleSystem):
    """A rule policy over a MultiWOZ-schema database; `respond(histories)` -> one reply per history."""

    read_slots: Mapping[str, Sequence[str]] = READ

    def __init__(self, db: VenueDB):
        super().__init__(db)
        self._parsed: dict[tuple[str, str, bool, str | None], dict[str, str]] = {}
        self.stations = sorted(
            {str(r[k]).lower() for r in db.venues.get("train", []) for k in ("departure", "destination") if r.get(k)},
            key=len,
            reverse=True,
        )
        types = self.values["attraction"].get("type", [])
        self.attraction_types = re.compile(r"\b(" + "|".join(re.escape(t) for t in types) + r")s?\b") if types else None

    def domains_named(self, text: str) -> list[str]:
        named = [d for d, pattern in DOMAIN_WORDS.items() if pattern.search(text)]
        if len(named) > 1:  # the one the turn's values belong to ("an entertainment in the centre as the restaurant")
            named.sort(key=lambda d: -len(set(self._values_in(d, text, False)) & OWN_SLOTS[d]))
        if self.attraction_types is not None and self.attraction_types.search(text) and "attraction" not in named:
            named.append("attraction")
        if not named:  # the domain of the values it names ("italian food", "from cambridge on monday")
            counts = {d: len(set(self._values_in(d, text, False)) & OWN_SLOTS[d]) for d in READ}
            best = max(counts, key=lambda d: counts[d])
            named = [best] if counts[best] else []
        if not named:  # the domain of a venue it names ("information on parkside pools")
            named = [d for d, _ in self.reader.venues(normalise(text)) if d in READ and d != "train"][:1]
        if "hotel" in named and "restaurant" in named and re.search(r"\b(stay|hotel|guest ?house)\b", text):
            named.remove("restaurant")  # "a hotel ... near the restaurant"
        return named

    def _values_in(self, domain: str, text: str, bare_stars: bool, asked: str | None = None) -> dict[str, str]:
        """Memoised: every reply re-reads the whole history, so each user turn would be parsed again each round."""
        key = (domain, text, bare_stars, asked)
        if key not in self._parsed:
            if len(self._parsed) > MEMO_SIZE:
                self._parsed.clear()
            self._parsed[key] = self._parse(domain, text, bare_stars, asked)
        return dict(self._parsed[key])

    def _parse(self, domain: str, text: str, bare_stars: bool, asked: str | None) -> dict[str, str]:
        text = normalise(text)
        found = super()._values_in(domain, text, bare_stars) if domain in self.values else {}
        if domain == "hotel":
            found.pop("type", None)  # "the hotel" names the domain; a type is said as one
            if re.search(r"\bguest ?houses?\b", text):
                found["type"] = "guesthouse"
            elif (
                asked == "type"
                and re.search(r"\bhotels?\b", text)
                or re.search(
                    r"\b(?:type (?:should be|is|of)|rather than a guest ?house,?|not a guest ?house,?) hotel", text
                )
            ):
                found["type"] = "hotel"  # else "a hotel" is often any place to stay
            if "stars" not in found and (stars := STARS.search(text)):  # a rating no venue has is still asked for
                found["stars"] = next(g for g in stars.groups() if g)
            for slot, words in (("parking", r"parking"), ("internet", r"(?:internet|wifi|wi-fi)")):
                if re.search(rf"\b{words}\b", text):
                    found[slot] = "no" if re.search(rf"\b{NO_THING}(?:free )?{words}\b", text) else "yes"
        if domain == "train":
            for slot, cue in STATION_CUES.items():
                for station in self.stations:
                    if re.search(rf"\b{cue} (?:the )?{re.escape(station)}\b", text):
                        found[slot] = station
                        break
            for slot, pattern in TIMES.items():
                if match := pattern.search(text):
                    found[slot] = match.group(1).zfill(5)
        if domain == "restaurant" and "food" not in found:  # a cuisine the database lacks is still a constraint
            if food := re.search(rf"\b(?!(?:{'|'.join(NOT_CUISINES)})\b)([a-z]+) (?:food|cuisine)\b", text):
                found["food"] = food.group(1)
        named = [record for d, record in self.reader.venues(text) if d == domain]
        if named and domain != "train":
            found["name"] = str(named[0].get("name", "")).lower()
            for slot in [s for s, v in found.items() if s != "name" and v in found["name"]]:
                del found[slot]  # "girton college" in a venue's name is not a type
        return found

    def search(self, domain: str, active: dict[str, str]) -> list[dict[str, Any]]:
        """The database's matches, a named venue's only (the database query ignores names)."""
        matches = self.db.matching(domain, active)
        name = active.get("name")
        return [r for r in matches if str(r.get("name", "")).lower() == name] if name else matches

    def dont_care(self, text: str) -> bool:
        return bool(DONT_CARE.search(normalise(text)))

    def thanks(self, text: str, named: list[str], given: dict[str, str]) -> bool:
        return (
            bool(THANKS.search(text)) and "?" not in text and not named and not given and not self.wants_booking(text)
        )

    def wants_booking(self, text: str) -> bool:
        return bool(BOOKING.search(normalise(text)))

    def fields_asked(self, text: str, offered: dict[str, Any]) -> list[str]:
        text = normalise(text)
        fields = [f for f, pattern in ATTRIBUTES.items() if re.search(pattern, text) and offered.get(f)]
        if "price" in fields and "pricerange" in fields:
            fields.remove("price")
        return fields

    def attributes_reply(self, rng: random.Random, offered: dict[str, Any], fields: list[str]) -> str:
        answer = " and ".join(SAID.get(f, f"the {f} is {{}}").format(offered[f]) for f in fields)
        return f"{answer} . " + rng.choice(["is there anything else i can help you with ?", "will that be all ?"])

    def slots_of(self, domain: str) -> tuple[str, ...]:
        return ASKED[domain]

    def question(self, rng: random.Random, domain: str, belief: dict[str, str]) -> str | None:
        """The next slot in ASKED's order, while more than one venue meets what the user said."""
        active = {s: v for s, v in belief.items() if v != "dontcare"}
        if len(self.search(domain, active)) <= 1:
            return None
        for slot in ASKED[domain]:
            if slot == "leaveAt" and "arriveBy" in belief:
                continue
            if slot not in belief:
                question = QUESTIONS[slot]
                return question[domain] if isinstance(question, dict) else question
        return None
