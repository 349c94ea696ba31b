"""Reading a system's words: which venue it offered, which attributes it gave, whether it booked, whether it
said nothing matches, and which slots it asked for.

Built from the venue databases (names and train ids, exact first and then fuzzily with rapidfuzz, so a model's
slightly garbled name still counts; addresses by lookup) and from patterns for phone numbers, postcodes,
reference numbers, times, prices and durations. `reader_agreement` scores it against a corpus's gold system
acts (per slot kind: precision, recall, F1), which is how its numbers earn trust.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz, process

from aft_core.data.venues import VenueDB, venue_name

# Trailing words a speaker drops from a venue's name ("Shiraz" for shiraz restaurant, "Pembroke" for pembroke college)
GENERIC_SUFFIXES = ("restaurant", "hotel", "guesthouse", "guest house", "college", "museum", "gallery", "theatre")
# Words that make a venue's short form part of a street address ("downing" of downing college in "downing street")
STREET_WORDS = ("street", "road", "lane", "parade", "avenue", "way", "close", "drive", "hill", "square", "place",
                "court", "row", "walk", "passage", "terrace", "gardens", "park")  # fmt: skip
STREET_AFTER = re.compile(rf"\s*(?:{'|'.join(STREET_WORDS)})\b")  # a short form followed by one is an address's
FUZZY_MIN_RATIO = 92.0  # rapidfuzz ratio (0-100) a word window must reach to be read as a venue's name
# Words no fuzzily matched window may start with ("a restaurant" is not ask restaurant, however close); "the" may
FUNCTION_WORDS = {"a", "an", "to", "in", "at", "of", "and", "for", "on", "is", "it"}
PATTERNS = {
    "phone": re.compile(r"(?<!\d)(\d{5} ?\d{6})(?!\d)"),
    # Cambridge's as wizards write them ("cb2 1 ,tn", "c.b 21tn"), and any other UK one ("pe29 6fl", a hotel in
    # Huntingdon)
    "postcode": re.compile(r"\b(c\.?b\s?\d{1,2}\s?,?\s?\d\s?[a-z]\.?\s?[a-z]|[a-z]{1,2}\d{1,2}[a-z]?\s?\d[a-z]{2})\b"),
    # Any reference the system states counts (a lexicalised reply's booking cannot be checked against a booking
    # system; mwzeval counts the [ref] slot's presence): TownInfo's are 8 characters, a model's may be shorter.
    # "reference number is X", "ref # X", "reservation number is X", "the reference number for your booking is X"
    "ref": re.compile(
        r"\b(?:reference|ref|(?:confirmation|reservation|booking) (?:number|code))(?: number| code| no\.?)?"
        r"(?:(?: is| will be)?\s*[:#]?|(?:\s*,)?(?: [a-z']+){1,5}(?:\s*,)? is:?)\s*#?"
        r"(?!(?:number|code|for|your|the|is)\b)([a-z0-9]{4,12})\b"
    ),
    "price": re.compile(r"(\d+(?:\.\d+)?) ?(?:pounds|gbp)\b"),  # a fare, written as the databases do: "N pounds"
    # a journey's length; not a table held for 15 minutes, nor trains at 16 minutes past the hour
    "duration": re.compile(r"(?<!reserved for )(?<!held for )(?<!hold it for )\b(\d+) ?minutes?\b(?! past)"),
    "leaveAt": re.compile(r"(?:leav\w*|depart\w*)(?: \w+){0,2} at (\d{1,2}:\d{2})"),
    "arriveBy": re.compile(r"arriv\w*(?: \w+){0,2} (?:at|by) (\d{1,2}:\d{2})"),
    "entrance fee": re.compile(r"entrance fee is (free|\d+(?:\.\d+)? pounds)"),
}
# The attributes a reading can hold of an offered venue: informed by pattern or lookup, or named by the offer
READ_ATTRIBUTES = frozenset(
    ("address", "phone", "postcode", "price", "duration", "leaveAt", "arriveBy", "entrance fee", "pricerange",
     "name", "trainID")
)  # fmt: skip
PRICE_RANGES = {"cheap": "cheap", "inexpensive": "cheap", "moderate": "moderate", "moderately": "moderate",
                "expensive": "expensive"}  # fmt: skip
PRICE_RANGE = re.compile(r"\b(" + "|".join(PRICE_RANGES) + r")\b")
# ranges offered to choose from ("would you like expensive or cheap?"), not stated of a venue
RANGE_CHOICE = re.compile(rf"{PRICE_RANGE.pattern}(?: priced)? or (?:a |an )?{PRICE_RANGE.pattern}")
# What a no-offer names it has none of ("no 4 star hotels in the north", "no international food")
VENUE_WORDS = ("hotels?", "guest ?houses?", "restaurants?", "places?", "attractions?", "trains?", "museums?",
               "cinemas?", "colleges?", "theatres?", "parks?", "pools?", "clubs?", "nightclubs?", "churches",
               "entertainment", "steakhouses?", "food", "options?", "matches", "listings?")  # fmt: skip
VENUE_NOUNS = "|".join(VENUE_WORDS)
# "any", "anything", "anyone", "anywhere"; not a missing attribute ("i don't have any information on their fee")
ANY = r"any(?:thing|one|where)?(?! (?:information|info|details))"
NO_OFFER = re.compile(
    r"\b(there (?:is|are) no(?! (?:fee|charge|entrance fee|need|information|info|specific|record of))|"
    r"(?:there's|there is) nothing|(?:i|we) (?:have|had|got) no(?! (?:information|info|details|record of))|"
    r"there (?:are|is|were|was) none\b|\bnone (?:of (?:them|those|these|which)|available|in\b|that|match\w*)|"
    rf"\bno (?:[\w'-]+ ){{0,3}}(?:{VENUE_NOUNS})\b(?! (?:available|free))|"
    r"nothing (?:is )?(?:coming|came|comes) up|"
    r"(?:doesn't|does not|didn't|did not) (?:appear|seem|look like) (?:that )?(?:there (?:are|is|were) (?:any|one)|"
    r"to be any)|"
    r"nothing (?:match\w*|in|that|meets)|"
    r"no (?:results|matches|match|records?)|(?:unable|not able) to find|(?:could|can) ?(?:n't|not) find|cannot find|"
    rf"(?:do|don't|do not) have {ANY}|(?:aren't|isn't|are not|is not) {ANY}|"
    rf"(?:don't|do not|can't|cannot|couldn't) (?:see|find|locate) {ANY}|"
    rf"not (?:able to (?:get|find)|finding|showing|seeing) {ANY}|"
    r"(?:don't|do not|didn't|did not) (?:happen to |seem to |appear to )?(?:have|be|pull(?: up)?|find|show|get) "
    rf"(?:{ANY}|one|(?:a|an) [\w' ]{{1,30}}? (?:that|which|fitting|matching) |"
    rf"(?:a|an) (?:[\w'-]+ ){{0,3}}(?:{VENUE_NOUNS})\b)|(?:haven't|have not|hasn't|has not) (?:found|seen|got) {ANY}|"
    r"there (?:isn't|aren't|wasn't|weren't|is not|are not)(?! (?:a |an )?(?:fee|charge|entrance fee|need))|"
    r"(?:i|we) have nothing|no \w+(?: \w+)? (?:meets?|match(?:es)?) your|are no \w+)\b"
)
# A booking that failed (MultiWOZ's NoBook), not a search that found nothing
NO_BOOK = re.compile(
    r"\b((?:no|any) availability|no (?:available |open )?(?:tables?|rooms?|seats?|availability|reservations?|"
    r"openings?|vacanc\w*|spots?)|"
    r"nothing available (?:in|at|for) that (?:time|day)|"
    r"(?:unable|not able) to (?:book|reserve)|(?:could|can) ?(?:n't|not) (?:book|reserve)|"
    r"booking (?:was )?unsuccessful)\b"
)
ASKS = re.compile(
    r"\b(i(?:'ll| will)? need (?:to know|a|the|your|more information|some more|a few more)|"
    r"(?:can|could|would) you (?:please )?(?:tell|give|provide|specify|let me know)|"
    r"please (?:tell|give|provide|clarify|specify|confirm|let me know)|if you (?:could )?(?:give|provide|let me know|"
    r"tell)|"
    r"you'll (?:have|need) to (?:provide|give|tell)|may i ask|provide the)\b"
    r"|^(?:(?:ok(?:ay)?|sure(?: thing)?|certainly|great|alright|yes|no problem|of course)\W+)*"
    r"(?:where|what (?:day|time|area|type|kind)|which (?:day|area|station)|when|how many) "  # a question unmarked
)
REQMORE = re.compile(r"\b(anything else|anything more|any other information|something else)\b")
OFFERS = re.compile(
    r"\b(would you like (?:me to|to book|to make|to reserve|more|the|their|a reservation|a booking|information)|"
    r"shall i|should i|can i (?:book|reserve|help|get|give|provide)|do you want me to|which (?:one|of)|"
    r"how about|is (?:that|this) (?:all|ok|okay|alright|the one)|anything else|may i (?:book|reserve)|"
    r"(?:would you like|do you (?:need|want))(?: to buy| me to book)? (?:any )?(?:tickets?|a reservation|a table|"
    r"a room)|"
    r"will (?:that|this) (?:do|work)|would (?:that|this) work|does (?:that|this) (?:time )?(?:work|fit))\b"
)
PREFERENCE = "preference"  # a requested "slot" that names none: an open question about the search
# The words that name a slot, for questions the phrasings below miss ("do you have a time in mind?")
SLOT_WORDS = {
    "area": re.compile(r"\b(area|location|part of town|side of town)\b"),
    "pricerange": re.compile(r"\b(price|prices|pricerange|budget|cost)\b"),
    "food": re.compile(r"\b(food|cuisine)\b"),
    "stars": re.compile(r"\b(stars?|star rating)\b"),
    "type": re.compile(r"\b(type|kind)\b"),
    "day": re.compile(r"\b(day|days|date|dates|when)\b"),
    "time": re.compile(r"\b(time|times)\b"),
    "people": re.compile(r"\b(people|guests|tickets|persons|party)\b"),
    "stay": re.compile(r"\b(nights)\b"),
    "departure": re.compile(r"\b(depart\w*|leaving from|coming from|from where)\b"),
    "destination": re.compile(r"\b(destination|going to|headed|heading)\b"),
}
# What a system's question asks for, read from its question sentences (ending in '?', or asking outright: ASKS),
# reqmore sentences aside.
REQUESTS = {
    "food": re.compile(r"\b(food|cuisine|kind of restaurant|type of restaurant)\b"),
    "area": re.compile(
        r"\b(area|areas|part of (?:town|the city|cambridge)|side of town|section of town|where in town|"
        r"location preference)\b"
    ),
    "pricerange": re.compile(r"\b(price ?range|price preference|spend|budget)\b"),
    "stars": re.compile(r"\bstars?\b"),
    "destination": re.compile(
        r"\b(where (?:are you|will you be|you're|you are|is it you are) (?:travel\w*|going|head\w*|looking to travel|"
        r"wishing)|"
        r"destination|where (?:would|do) you (?:like|want|need) (?:to go|to travel|the (?:taxi|train|car) to|it to)|"
        r"looking to go|where to|arrival (?:stations?|city)|location the taxi|(?:taxi|train) be taking you|"
        r"take you|going to\?|traveling to\?)\b"
    ),
    "departure": re.compile(
        r"\b(where (?:are you|will you be|would you be|will you) (?:leaving|departing|leave|depart|coming from)|"
        r"depart\w* (?:from|station|city|site|place|location)|leav\w* from|departure(?! time)|"
        r"where you will be departing|pick(?:ed)? (?:you )?up|(?:what|which) stations?|"
        r"where (?:are you|you're|you are) (?:located|staying)|"
        r"from where|going from|where from)\b"
    ),
    "day": re.compile(
        r"\b((?:what|which) (?:day|dates?|night)|another day|when (?:would you like to stay|did you want to))\b"
    ),
    "people": re.compile(
        r"\b(how many (?:people|tickets|guests|persons|seats|will|diners|riders|travell?ers|of you|in your party)|"
        r"for how many|alone or with|other guests|party size|just you|just one (?:guest|person|ticket)|"
        r"number of (?:people|tickets|guests|train tickets))\b"
    ),
    "time": re.compile(r"\b(what time|day and time|(?:different|another) time|time slot|timeframe)\b"),
    "stay": re.compile(r"\b(how many (?:nights|days)|begin your stay|when would you like to stay)\b"),
    "leaveAt": re.compile(
        r"\b(depart\w* time|time of departure|leave (?:at|after)|(?:like|want) to leave|"
        r"when (?:would|do) you (?:like to|want to) leave)\b"
    ),
    "arriveBy": re.compile(
        r"\b(arriv\w* time|time of arrival|arrive by|(?:like|want|need) to arrive|"
        r"when (?:would|do) you (?:like to|want to|need to) arrive)\b"
    ),
    "entrance fee": re.compile(r"\bentrance fee\b"),
    "parking": re.compile(r"\bparking\b"),
    "internet": re.compile(r"\b(internet|wifi|wi-fi)\b"),
    "name": re.compile(
        r"\b(name of the|(?:what|which) (?:hotel|restaurant|attraction|place|guesthouse) (?:are|is|were|did|do))\b"
    ),
    "type": re.compile(
        r"\b(type|kind|sort) of (?:attraction|place|lodging|accommodation)|\bparticular type\b|"
        r"\b(hotel or (?:a )?guest ?house|guest ?house or (?:a )?hotel|what (?:are|do) you (?:most )?(?:like|"
        r"interested|enjoy)|"
        r"what would you like to (?:do|see|visit)|"
        r"types? of places?)\b"
    ),
    # an open question with no slot named: the user answers with what it has not yet said
    PREFERENCE: re.compile(
        r"\b(narrow (?:it|that|them|this) down|(?:anything|something|anywhere) (?:in particular|specific|particular)|"
        r"what (?:exactly )?are you looking for|in mind|broaden your search)\b"
    ),
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
    price_ranges: tuple[str, ...] = ()  # every price range stated of a venue ("two are moderate, one is cheap")


def longest_first(phrases: Iterable[str], word: str) -> re.Pattern[str] | None:
    """One pattern matching any of `phrases` as a whole (not inside a run of `word` characters), the longest
    first, so "47-53 regent street" wins over "regent street"; None for no phrases."""
    ordered = sorted(phrases, key=len, reverse=True)
    if not ordered:
        return None
    return re.compile(rf"(?<!{word})(" + "|".join(re.escape(p) for p in ordered) + rf")(?!{word})")


def name_aliases(name: str) -> list[str]:
    """Short forms of a lower-case venue name a speaker uses: without a leading "the" when two or more words stay
    ("the cambridge belfry" -> "cambridge belfry"), and without a generic last word ("shiraz restaurant" ->
    "shiraz"); "bed and breakfast" also as "b&b"."""
    aliases = []
    rest = name.removeprefix("the ")
    if rest != name and len(rest.split()) >= 2:
        aliases.append(rest)
    for suffix in GENERIC_SUFFIXES:
        if rest.endswith(" " + suffix) and len(rest) - len(suffix) > 4:
            aliases.append(rest.removesuffix(" " + suffix))
    if "bed and breakfast" in rest:
        aliases.append(rest.replace("bed and breakfast", "b&b"))
    return aliases


def normalise(text: str) -> str:
    """System text as the reader matches it: lower case, single spaces, and MultiWOZ's tokenisation undone
    ("are n't" -> "aren't", "back lane , cambourne" -> "back lane, cambourne", "47 - 53" -> "47-53", "tr 9781" ->
    "tr9781")."""
    low = " ".join(text.lower().split())
    low = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", low)
    low = re.sub(r" ([,.!?;:])", r"\1", low)
    low = re.sub(r"\btr (\d{4})\b", r"tr\1", low)  # a train id written in two
    low = re.sub(r"\bb ?& ?b\b", "b&b", low)
    low = re.sub(r"(\w) - (\w)", r"\1-\2", low)  # "alpha - milton" -> "alpha-milton"
    return low


def same_value(value: str) -> str:
    """A value as compared across a venue record, gold acts and system text: lower case, no spaces, dots or commas
    ('CB2 1TT', 'cb21tt' and 'cb2 1tt.' are one postcode)."""
    return re.sub(r"[\s.,]", "", str(value).lower())


TOLD_APART_BY = ("day", "departure", "destination", "leaveAt", "arriveBy")  # what a turn says of one of its trains


def same_id_told_apart(found: list[tuple[str, dict[str, Any]]], text: str) -> list[tuple[str, dict[str, Any]]]:
    """Of records that share a train id (MultiWOZ's database reuses ids on other days and routes), those whose day,
    stations and times the turn states most of ("TR7909 ... to cambridge on tuesday"); all of them when it
    states none."""
    by_id: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for domain, record in found:
        by_id.setdefault(f"{domain}:{record.get('trainID') or id(record)}", []).append((domain, record))

    def told(record: dict[str, Any]) -> int:
        stated = [str(record[k]).lower() for k in TOLD_APART_BY if record.get(k)]
        return sum(1 for value in stated if re.search(rf"\b{re.escape(value)}\b", text))

    kept: list[tuple[str, dict[str, Any]]] = []
    for group in by_id.values():
        best = max(told(r) for _, r in group)
        kept += [(d, r) for d, r in group if told(r) == best]
    return kept


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
        # Short forms of names, kept only where they name one venue and are not a name themselves
        short: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        full_names = {n for by_size in self._names.values() for n in by_size}
        for by_size in self._names.values():
            for name, venues in by_size.items():
                for alias in name_aliases(name):
                    if alias not in full_names:
                        short.setdefault(alias, []).extend(venues)
        # ... and not words of another venue's name ("bramley" for bramley hotel would read bramley house as it).
        # The venue's own name holds its short form by construction, so it does not count against it.
        self._aliases = {
            a: v
            for a, v in short.items()
            if len({id(r) for _, r in v}) == 1
            and not any(
                re.search(rf"(?<!\w){re.escape(a)}(?!\w)", n)
                for n in full_names - {" ".join((venue_name(r) or "").lower().split()) for _, r in v}
            )
        }
        self._alias_pattern = longest_first(self._aliases, r"[\w&]")
        self._address_pattern = longest_first(self._addresses, r"\w")

    def venues(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        """Venues named in `text`: exact names first; failing those, the word window closest to a name, if it is
        within FUZZY_MIN_RATIO (rapidfuzz's ratio, 0-100) of it."""
        found = self.db.mentioned(text)
        if self._alias_pattern is not None:  # short forms too: "the gonville has 3 stars. the express by holiday inn"
            known = {id(r) for _, r in found}
            matches = self._alias_pattern.finditer(text)
            for alias in dict.fromkeys(m.group(1) for m in matches if not STREET_AFTER.match(text, m.end())):
                found += [(d, r) for d, r in self._aliases[alias] if id(r) not in known]
                known |= {id(r) for _, r in self._aliases[alias]}
        if found:
            return same_id_told_apart(found, text)
        words = re.findall(r"[a-z0-9']+", text.lower())
        best: tuple[float, list[tuple[str, dict[str, Any]]]] | None = None
        for size, names in self._names.items():
            choices = list(names)
            for start in range(0, max(len(words) - size + 1, 0)):
                if words[start] in FUNCTION_WORDS:
                    continue
                window = " ".join(words[start : start + size])
                match = process.extractOne(window, choices, scorer=fuzz.ratio, score_cutoff=FUZZY_MIN_RATIO)
                if match is not None and (best is None or match[1] > best[0]):
                    best = (match[1], names[match[0]])
        return list(best[1]) if best else []

    def read(self, text: str) -> SystemReading:
        low = normalise(text)
        reading = SystemReading(offered=self.venues(low))
        for kind, pattern in PATTERNS.items():
            match = pattern.search(low if kind != "price" else PATTERNS["entrance fee"].sub("", low))
            if match is None:
                continue
            if kind == "ref":
                reading.reference = match.group(1)
            elif kind in ("price", "duration"):  # as the databases write them
                reading.informed[kind] = f"{match.group(1)} {'pounds' if kind == 'price' else 'minutes'}"
            else:
                reading.informed[kind] = match.group(1)
        if self._address_pattern is not None and (match := self._address_pattern.search(low)):
            reading.informed["address"] = match.group(1)
        # also beside an offer ("no east european food, but eraina serves european"); a failed booking is not one
        reading.no_offer = bool(NO_OFFER.search(low)) and not NO_BOOK.search(low)
        sentences = re.split(r"(?<=[?.!])\s+", low)
        questions = [s for s in sentences if s.rstrip().endswith("?") or ASKS.search(s)]
        questions = [s for s in questions if not REQMORE.search(s)]  # "anything else about that hotel or area?"
        # the price ranges the system states of venues: not one it asks about, nor one it found nothing for
        stated = [
            PRICE_RANGES[m]
            for s in sentences
            if not (s in questions and (REQUESTS["pricerange"].search(s) or RANGE_CHOICE.search(s)))
            and not NO_OFFER.search(s)
            for m in PRICE_RANGE.findall(s)
        ]
        reading.price_ranges = tuple(dict.fromkeys(stated))
        if stated:
            reading.informed["pricerange"] = stated[0]
        reading.requested = tuple(
            slot for slot, pattern in REQUESTS.items() if any(pattern.search(q) for q in questions)
        )
        if not reading.requested:  # a question naming a slot's word, unless it offers, closes or lets the user pick
            asked = [q for q in questions if not OFFERS.search(q)]
            reading.requested = tuple(
                slot for slot, pattern in SLOT_WORDS.items() if any(pattern.search(q) for q in asked)
            )
        reading.goodbye = bool(re.search(r"\b(goodbye|good bye|bye|have a (?:great|nice|good) day|enjoy your)\b", low))
        return reading


# --- agreement with gold system acts -----------------------------------------------------------------------

# The kinds corpus Inform and Success read (an offered venue, the requestables, a booking's reference)
OUTCOME_KINDS = ("name", "address", "phone", "postcode", "ref")
SCORED_KINDS = (
    "name", "address", "phone", "postcode", "price", "pricerange", "duration", "ref", "no_offer", "request",
)  # fmt: skip
GOLD_SLOTS = {
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
}


def gold_kinds(dialog_act: dict[str, Any], reader: Reader | None = None) -> set[tuple[str, str]]:
    """(kind, normalised value) pairs a gold system turn's acts annotate, for the kinds the reader is scored on.

    Values are put in the reader's terms, so that a reading is compared with what the annotator meant rather than
    with how the annotator spelled it: a name is the database venue it names (with `reader`: "The Castle Galleries"
    and "TR 9781" are the venues 'castle galleries' and 'tr9781'); an address is every address piece of the turn
    joined (MultiWOZ splits "back lane" and "cambourne"); MultiWOZ's `Price` is a fare when it holds a number
    ("92.96 GBP" -> 92.96 pounds) and a price range when it holds a range word ("moderately priced" -> moderate);
    its `Time` counts as a duration only when it states minutes (a booking's "18:45" is not one)."""
    gold: set[tuple[str, str]] = set()
    addresses: list[str] = []
    for act, slots in (dialog_act or {}).items():
        intent = act.split("-", 1)[-1]
        if intent == "NoOffer":
            gold.add(("no_offer", ""))
        if intent == "Request":
            gold.add(("request", ""))
        for slot, value in slots or []:
            key = GOLD_SLOTS.get(str(slot).lower())
            if key is None or intent in ("Request", "NoOffer", "NoBook") or (intent == "Select" and key != "name"):
                continue  # a Select act's names are venues the system offers to choose from
            value = str(value)
            if value.lower() in ("?", "none", ""):
                continue
            if key == "name":
                gold.add(("name", canonical_name(reader, value)))
            elif key == "address":
                addresses.append(value)
            elif key == "price":
                if number := re.search(r"\d+(?:\.\d+)?", value):
                    gold.add(("price", same_value(f"{number.group(0)} pounds")))
                else:
                    gold.update(("pricerange", PRICE_RANGES[r]) for r in PRICE_RANGE.findall(normalise(value)))
            elif key == "duration":
                if minutes := re.search(r"(\d+) ?min", value.lower()):
                    gold.add(("duration", same_value(f"{minutes.group(1)} minutes")))
            else:
                gold.add((key, same_value(value)))
    if addresses:
        gold.add(("address", same_value(" ".join(addresses))))
    return gold


def canonical_name(reader: Reader | None, value: str) -> str:
    """A gold name value as the database venue it names (same_value of that venue's name); itself without a reader
    or when it names none. A bare train number ("5863") names train TR5863."""
    if reader is None:
        return same_value(value)
    text = normalise(value)
    if re.fullmatch(r"\d{4}", text):
        text = "tr" + text
    found = reader.venues(text) or reader.venues(f"the {text}")  # "Nirala" names the nirala
    return same_value(venue_name(found[0][1]) or value) if found else same_value(value)


def read_kinds(reading: SystemReading) -> set[tuple[str, str]]:
    """The reader's (kind, normalised value) pairs for one turn, in gold_kinds' terms."""
    found: set[tuple[str, str]] = set()
    for _, record in reading.offered:
        found.add(("name", same_value(venue_name(record) or "")))
    for kind in ("address", "phone", "postcode", "price", "duration"):
        if kind in reading.informed:
            found.add((kind, same_value(reading.informed[kind])))
    found.update(("pricerange", same_value(r)) for r in reading.price_ranges)
    if reading.reference:
        found.add(("ref", same_value(reading.reference)))
    if reading.no_offer:
        found.add(("no_offer", ""))
    if reading.requested:
        found.add(("request", ""))
    return found


def reader_agreement(reader: Reader, turns: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per slot kind (and `all`, micro-averaged) of the reader against gold acts, over
    (system text, dialog_act) pairs. A (kind, value) pair is a true positive when both hold it for the turn; an
    address also when one holds the other (an annotator's address may run on into the postcode or the town).
    `all` counts only the kinds the corpus annotates at all (gold support > 0): what its annotators never mark
    (TownInfo names no price range outside NoOffer) cannot be checked on it. A turn without any act is left out:
    every system turn does something (greets, informs, asks), so an empty annotation is a missing one."""
    counts = {kind: [0, 0, 0] for kind in SCORED_KINDS}  # tp, fp, fn
    for text, acts in turns:
        if not acts:
            continue  # unannotated, not annotated as saying nothing: every system turn acts (1% of MultiWOZ 2.1's)
        gold, read = gold_kinds(acts, reader), read_kinds(reader.read(text))
        for kind in SCORED_KINDS:
            g = {v for k, v in gold if k == kind}
            r = {v for k, v in read if k == kind}
            if kind == "address":
                r = {next((x for x in g if v in x or x in v), v) for v in r}
            counts[kind][0] += len(g & r)
            counts[kind][1] += len(r - g)
            counts[kind][2] += len(g - r)
    counts["all"] = annotated_total(counts.values())
    return {kind: agreement_scores(*c) for kind, c in counts.items()}


def annotated_total(counts: Iterable[Sequence[int]]) -> list[int]:
    """(tp, fp, fn) summed over the kinds a corpus annotates at all (gold support tp + fn > 0)."""
    annotated = [c for c in counts if c[0] + c[2] > 0]
    return [sum(c[i] for c in annotated) for i in range(3)]


def agreement_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 and support of (tp, fp, fn) counts."""
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if fp + fn else float("nan"))
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn, "tp": tp, "fp": fp, "fn": fn}


def micro_f1(scores: dict[str, dict[str, float]], kinds: Iterable[str] | None = None) -> float:
    """F1 micro-averaged over `kinds` of a reader_agreement result (its `all` when None); as in `all`, kinds the
    corpus never annotates do not count."""
    if kinds is None:
        return float(scores["all"]["f1"])
    total = annotated_total([[int(scores[k][c]) for c in ("tp", "fp", "fn")] for k in kinds if k in scores])
    return agreement_scores(*total)["f1"]
