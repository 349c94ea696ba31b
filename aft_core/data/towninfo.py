"""TownInfo: a built-in synthetic task-oriented corpus in the MultiWOZ original schema.

It exists so the whole pipeline runs offline with no download. Deterministic from a seed. Four
domains (restaurant, hotel, attraction, train) with a venue database written by the generator.
Each dialogue pursues 1-2 domain goals of 1-3 constraints, revealed across several user turns;
the system asks for missing slots in a fixed order, recommends its top-ranked venue satisfying every
constraint (or says "no match" only when the database truly has none, after which the user
relaxes a constraint), books with a reference number, answers requests and closes. Every act
has several paraphrases. Belief states (`metadata`), `dialog_act` and `span_info` follow MultiWOZ.

Output layout (what `load_corpus` reads): `data.json`, `valListFile.txt`, `testListFile.txt`, `db/`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from aft_core.data.venues import VenueDB, satisfies, venue_name
from aft_core.dialogue import user_words
from aft_core.errors import AftInputError
from aft_core.io import write_json_atomic, write_text_atomic

AREAS = ["centre", "north", "south", "east", "west"]
PRICES = ["cheap", "moderate", "expensive"]
FOODS = ["italian", "chinese", "indian", "french", "thai", "spanish", "turkish", "british"]
ATTRACTION_TYPES = ["museum", "park", "college", "theatre", "cinema", "nightclub", "gallery", "boat tour"]
DESTINATIONS = ["london", "ely", "norwich", "stansted"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
STARS = ["2", "3", "4", "5"]
ADJECTIVES = [
    "golden",
    "silver",
    "little",
    "old",
    "royal",
    "hidden",
    "green",
    "blue",
    "red",
    "quiet",
    "happy",
    "lucky",
    "grand",
    "rustic",
    "crooked",
    "merry",
    "sleepy",
    "wild",
    "bright",
    "gentle",
    "proud",
    "humble",
    "ancient",
    "velvet",
    "copper",
    "amber",
    "scarlet",
    "misty",
    "sunny",
    "jolly",
]
NOUNS = [
    "lantern",
    "oak",
    "willow",
    "fox",
    "swan",
    "anchor",
    "garden",
    "kettle",
    "bridge",
    "meadow",
    "harbour",
    "lion",
    "orchard",
    "mill",
    "spoon",
    "compass",
    "feather",
    "barrel",
    "crown",
    "pearl",
    "maple",
    "falcon",
    "river",
    "lodge",
    "chimney",
    "bell",
    "cottage",
    "heron",
    "thistle",
    "acorn",
]
SURNAMES = [
    "kingsley",
    "ashford",
    "bramley",
    "carlton",
    "dunmore",
    "elwood",
    "fairfax",
    "granger",
    "hawthorne",
    "ingram",
    "jarvis",
    "kendall",
    "langley",
    "marlow",
    "norwood",
    "oakley",
    "pemberton",
    "quincy",
    "radcliffe",
    "sterling",
    "thornton",
    "underwood",
    "vaughan",
    "whitmore",
    "yardley",
]
STREET_KINDS = ["road", "street", "lane", "avenue", "close", "way"]
HOTEL_WORDS = ["house", "inn", "lodge", "manor", "guesthouse", "hotel"]
ATTRACTION_WORDS = {
    "museum": "museum",
    "park": "park",
    "college": "college",
    "theatre": "theatre",
    "cinema": "picture house",
    "nightclub": "club",
    "gallery": "gallery",
    "swimming pool": "pool",
    "church": "church",
    "boat tour": "punting",
}

DOMAIN_SLOTS = {  # informable slots, in the order the system asks for them
    "restaurant": ["food", "area", "pricerange"],
    "hotel": ["area", "pricerange", "stars"],
    "attraction": ["type", "area"],
    "train": ["destination", "day"],
}
DOMAIN_NOUN = {"restaurant": "restaurant", "hotel": "hotel", "attraction": "place to visit", "train": "train"}
BOOK_SLOTS = {
    "restaurant": ["people", "day", "time"],
    "hotel": ["people", "day", "stay"],
    "attraction": [],
    "train": ["people"],
}


# --- the venue database ----------------------------------------------------------------------------


def _unique_names(rng: random.Random, n: int, make) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = make()
        if name not in names:
            names.append(name)
    return names


def _contact(rng: random.Random) -> dict[str, str]:
    return {
        "address": f"{rng.randint(1, 99)} {rng.choice(SURNAMES)} {rng.choice(STREET_KINDS)}",
        "postcode": f"cb{rng.randint(1, 5)} {rng.randint(1, 9)}"
        f"{rng.choice('abdefghjlnpqrstuwxyz')}{rng.choice('abdefghjlnpqrstuwxyz')}",
        "phone": "01223" + "".join(str(rng.randint(0, 9)) for _ in range(6)),
    }


def build_database(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Venues for the four domains; every informable value occurs at least once.

    Records are listed in the order the system ranks them: it always offers the first match,
    as a real booking system offers its top result, so the answer to a request is a function
    of the constraints the user gave.
    """
    db: dict[str, list[dict[str, Any]]] = {}
    names = _unique_names(rng, 32, lambda: f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}")
    db["restaurant"] = [
        {
            "id": str(i),
            "name": name,
            "food": FOODS[i % len(FOODS)],
            "area": AREAS[i % len(AREAS)],
            "pricerange": PRICES[(i // len(AREAS)) % len(PRICES)],
            **_contact(rng),
        }
        for i, name in enumerate(names)
    ]
    names = _unique_names(rng, 20, lambda: f"{rng.choice(SURNAMES)} {rng.choice(HOTEL_WORDS)}")
    db["hotel"] = [
        {
            "id": str(i),
            "name": name,
            "area": AREAS[i % len(AREAS)],
            "pricerange": PRICES[(i // 2) % len(PRICES)],
            "stars": STARS[(i // 3) % len(STARS)],
            "type": "guesthouse" if "guesthouse" in name else "hotel",
            "parking": rng.choice(["yes", "no"]),
            **_contact(rng),
        }
        for i, name in enumerate(names)
    ]
    attractions = []
    for i in range(24):
        kind = ATTRACTION_TYPES[i % len(ATTRACTION_TYPES)]
        attractions.append((kind, AREAS[(i // 2) % len(AREAS)]))
    names = _unique_names(rng, 24, lambda: f"{rng.choice(SURNAMES)} {rng.choice(ADJECTIVES)}")
    db["attraction"] = [
        {
            "id": str(i),
            "name": f"{name} {ATTRACTION_WORDS[kind]}",
            "type": kind,
            "area": area,
            "entrance fee": rng.choice(["free", f"{rng.randint(2, 9)} pounds"]),
            **_contact(rng),
        }
        for i, ((kind, area), name) in enumerate(zip(attractions, names, strict=True))
    ]
    trains = []
    for (d, dest), (k, day) in ((d, k) for d in enumerate(DESTINATIONS) for k in enumerate(DAYS)):
        hour, minute = rng.randint(5, 21), rng.choice(range(0, 60, 5))
        duration = rng.choice([17, 30, 50, 79, 88, 105])
        arrive = hour * 60 + minute + duration
        trains.append(
            {
                # Line, weekday and service number, as real headcodes are built.
                "trainID": f"tr{d + 1}{k + 1}{rng.randint(10, 99)}",
                "departure": "cambridge",
                "destination": dest,
                "day": day,
                "leaveAt": f"{hour:02d}:{minute:02d}",
                "arriveBy": f"{arrive // 60 % 24:02d}:{arrive % 60:02d}",
                "duration": f"{duration} minutes",
                "price": f"{rng.randint(4, 38)}.{rng.choice(['10', '60', '80'])} pounds",
            }
        )
    db["train"] = trains
    return db


# --- phrase banks: several paraphrases per act ------------------------------------------------------

ASK = {
    "food": [
        "what type of food would you like ?",
        "what kind of cuisine are you looking for ?",
        "do you have a food preference ?",
    ],
    "area": ["what area would you like ?", "which part of town do you prefer ?", "is there an area you prefer ?"],
    "pricerange": [
        "what price range would you like ?",
        "do you have a price range in mind ?",
        "how much would you like to spend ?",
    ],
    "stars": [
        "how many stars should it have ?",
        "do you have a star rating in mind ?",
        "what star rating would you like ?",
    ],
    "type": [
        "what type of attraction are you interested in ?",
        "what kind of place would you like to visit ?",
        "any particular type of attraction ?",
    ],
    "destination": ["where are you travelling to ?", "what is your destination ?", "where would you like to go ?"],
    "day": ["what day will you travel ?", "which day would you like to leave ?", "what day do you need the train ?"],
}
CLOSINGS = [
    "you are welcome . have a great day !",
    "thank you for using our service . goodbye .",
    "glad i could help . enjoy your stay !",
    "you are welcome . goodbye .",
]
ANYTHING_ELSE = [
    "is there anything else i can help you with ?",
    "can i help you with anything else ?",
    "will that be all ?",
    "",
]


def recommend(rng: random.Random, domain: str, venue: dict[str, Any]) -> str:
    """Most paraphrases describe the venue before naming it, as MultiWOZ's wizards often did."""
    name = venue_name(venue)
    if domain == "restaurant":
        what = f"{venue['pricerange']} {venue['food']} restaurant in the {venue['area']}"
        body = rng.choice(
            [
                f"there is a {what} called {name} .",
                f"i have a {what} : {name} .",
                f"for a {what} , i recommend {name} .",
                f"{name} is a {what} .",
            ]
        )
    elif domain == "hotel":
        what = f"{venue['pricerange']} {venue['stars']} star {venue['type']} in the {venue['area']}"
        body = rng.choice(
            [f"there is a {what} called {name} .", f"i have a {what} : {name} .", f"i recommend {name} , a {what} ."]
        )
    elif domain == "attraction":
        what = f"{venue['type']} in the {venue['area']}"
        body = rng.choice(
            [
                f"there is a {what} called {name} . the entrance fee is {venue['entrance fee']} .",
                f"you might enjoy the {what} : {name} .",
                f"{name} is a lovely {what} .",
            ]
        )
    else:
        what = f"train to {venue['destination']} on {venue['day']}"
        body = rng.choice(
            [
                f"the {what} is {name} , leaving at {venue['leaveAt']} .",
                f"there is a {what} : {name} departs at {venue['leaveAt']} and arrives at {venue['arriveBy']} .",
                f"i have the {what} , {name} . the price is {venue['price']} .",
            ]
        )
    follow = (
        rng.choice([" would you like me to book it ?", " would you like more information ?", ""])
        if domain != "attraction"
        else rng.choice([" would you like the address ?", ""])
    )
    return body + follow


def no_match(rng: random.Random, domain: str, slots: dict[str, str]) -> str:
    phrase = user_words.constraint_phrase(rng, domain, slots).removeprefix("a ").removeprefix("an ")
    return rng.choice(
        [
            f"i am sorry , there is no {phrase} . would you like to try something else ?",
            f"unfortunately i have no {phrase} . could you change one of your requirements ?",
            f"sorry , nothing matches {phrase} . shall i look for something different ?",
        ]
    )


def inform_attributes(rng: random.Random, venue: dict[str, Any], fields: list[str]) -> str:
    """The system gives the asked attributes of the venue it offered."""
    answer = " and ".join(f"the {f if f != 'phone' else 'phone number'} is {venue[f]}" for f in fields)
    return (
        rng.choice([f"sure , {answer} .", f"{answer} .", f"of course . {answer} ."]) + " " + rng.choice(ANYTHING_ELSE)
    )


def booked(rng: random.Random, ref: str) -> str:
    """The system confirms a booking with its reference number."""
    return (
        rng.choice(
            [
                f"booking was successful . your reference number is {ref} .",
                f"i have booked it . the reference number is {ref} .",
                f"done ! your reference number is {ref} .",
            ]
        )
        + " "
        + rng.choice(ANYTHING_ELSE)
    )


# --- dialogue generation ----------------------------------------------------------------------------


class _Dialogue:
    """Accumulates turns and keeps the running belief state in MultiWOZ metadata form."""

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.state: dict[str, dict[str, Any]] = {
            d: {"semi": {s: "" for s in slots}, "book": {"booked": [], **{b: "" for b in BOOK_SLOTS[d]}}}
            for d, slots in DOMAIN_SLOTS.items()
        }

    def user(self, text: str, act: str = "", values: dict[str, str] | None = None) -> None:
        values = values or {}
        self.log.append(
            {
                "text": text,
                "metadata": {},
                "dialog_act": {act: [[k, v] for k, v in values.items()]} if act else {},
                "span_info": _spans(text, act, values),
            }
        )

    def system(self, text: str, act: str = "", values: dict[str, str] | None = None) -> None:
        values = values or {}
        self.log.append(
            {
                "text": text,
                "metadata": json.loads(json.dumps(self.state)),
                "dialog_act": {act: [[k, v] for k, v in values.items()]} if act else {},
                "span_info": _spans(text, act, values),
            }
        )


def _spans(text: str, act: str, values: dict[str, str]) -> list[list[Any]]:
    words = text.split()
    spans = []
    for slot, value in values.items():
        vw = value.split()
        for i in range(len(words) - len(vw) + 1):
            if words[i : i + len(vw)] == vw:
                spans.append([act, slot, value, i, i + len(vw) - 1])
                break
    return spans


def _domain_segment(
    rng: random.Random,
    db: dict[str, list[dict[str, Any]]],
    dlg: _Dialogue,
    domain: str,
    first: bool,
    goal: dict[str, Any],
) -> None:
    slots = DOMAIN_SLOTS[domain]
    target = rng.choice(db[domain])
    wanted = rng.sample(slots, rng.randint(1, min(3, len(slots))))
    constraints = {s: str(target[s]) for s in wanted}
    relax: tuple[str, str] | None = None
    if rng.random() < 0.15:  # an over-constrained request: one value that no venue combines with the rest
        slot = rng.choice(wanted)
        values = sorted({str(r[slot]) for r in db[domain]} - {constraints[slot]})
        impossible = [v for v in values if not any(satisfies(r, {**constraints, slot: v}) for r in db[domain])]
        if impossible:
            relax = (slot, constraints[slot])
            constraints[slot] = rng.choice(impossible)
    goal[domain] = {
        "info": dict(constraints),
        "fail_info": {relax[0]: constraints[relax[0]]} if relax else {},
        "reqt": [],
        "book": {},
    }
    Act = domain.capitalize()

    revealed = dict(rng.sample(sorted(constraints.items()), rng.randint(0, len(constraints))))
    opening = user_words.opening(rng, domain, revealed, first)
    dlg.state[domain]["semi"].update(revealed)
    dlg.user(opening, f"{Act}-Inform", revealed)

    for slot in slots:  # the system asks for every slot still open, in a fixed order
        if dlg.state[domain]["semi"][slot]:
            continue
        dlg.system(rng.choice(ASK[slot]), f"{Act}-Request", {})
        if slot in constraints:
            dlg.state[domain]["semi"][slot] = constraints[slot]
            dlg.user(
                user_words.slot_answer(rng, domain, slot, constraints[slot]), f"{Act}-Inform", {slot: constraints[slot]}
            )
        else:
            dlg.state[domain]["semi"][slot] = "dontcare"
            dlg.user(user_words.dont_care(rng))

    active = {s: v for s, v in dlg.state[domain]["semi"].items() if v and v != "dontcare"}
    matches = [r for r in db[domain] if satisfies(r, active)]
    if not matches:
        dlg.system(no_match(rng, domain, active), f"{Act}-NoOffer", active)
        assert relax is not None  # a no-match only arises from the planned over-constraint
        slot, value = relax  # a no-match only arises from the planned over-constraint
        dlg.state[domain]["semi"][slot] = value
        dlg.user(user_words.relax(rng, value), f"{Act}-Inform", {slot: value})
        active[slot] = value
        matches = [r for r in db[domain] if satisfies(r, active)]
    venue = matches[0]  # the system's top-ranked match
    name = venue_name(venue) or ""  # every TownInfo venue has a name (the database's own check)
    dlg.system(recommend(rng, domain, venue), f"{Act}-Recommend", {"Name": name})
    # The name enters the belief state once offered (the next turn's metadata), never before.
    dlg.state[domain]["semi"]["name" if domain != "train" else "trainID"] = name

    followups = ["request", "book"] if BOOK_SLOTS[domain] else ["request"]
    for what in rng.sample(followups, rng.randint(1, len(followups))):
        if what == "request":
            fields = rng.sample(
                ["address", "phone", "postcode"] if domain != "train" else ["price", "duration"], rng.randint(1, 2)
            )
            goal[domain]["reqt"] = fields
            dlg.user(user_words.request(rng, fields), f"{Act}-Request", {})
            dlg.system(inform_attributes(rng, venue, fields), f"{Act}-Inform", {f: str(venue[f]) for f in fields})
        else:
            book = {"people": str(rng.randint(1, 8))}
            if domain == "restaurant":
                book.update(day=rng.choice(DAYS), time=f"{rng.randint(11, 21)}:{rng.choice(['00', '15', '30', '45'])}")
            elif domain == "hotel":
                book.update(day=rng.choice(DAYS), stay=str(rng.randint(1, 5)))
            goal[domain]["book"] = book
            dlg.state[domain]["book"].update(book)
            dlg.user(user_words.book(domain, book), f"{Act}-Inform", book)
            ref = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
            dlg.state[domain]["book"]["booked"] = [{"name": name, "reference": ref}]
            dlg.system(booked(rng, ref), "Booking-Book", {"Ref": ref})


def generate_dialogue(rng: random.Random, db: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    dlg = _Dialogue()
    goal: dict[str, Any] = {d: {} for d in ("taxi", "police", "hospital", "hotel", "restaurant", "attraction", "train")}
    domains = rng.sample(list(DOMAIN_SLOTS), 1 if rng.random() < 0.45 else 2)
    for k, domain in enumerate(domains):
        _domain_segment(rng, db, dlg, domain, k == 0, goal)
    dlg.user(user_words.thanks(rng))
    dlg.system(rng.choice(CLOSINGS), "general-bye")
    # Strip trailing spaces left by empty "anything else" suffixes.
    for turn in dlg.log:
        turn["text"] = " ".join(turn["text"].split())
    return {"goal": goal, "log": dlg.log}


def generate_towninfo(
    out_dir: str | Path, dialogues: int = 3000, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> Path:
    """Write a TownInfo corpus to `out_dir`; refuses a folder that holds a different corpus."""
    if dialogues < 10:
        raise AftInputError("towninfo", "dialogues", f"{dialogues} is too few", "ask for at least 10 dialogues")
    out = Path(out_dir)
    spec = {
        "generator": "towninfo",
        "version": 2,
        "dialogues": dialogues,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
    }
    spec_file = out / "towninfo.json"
    if spec_file.exists():
        existing = json.loads(spec_file.read_text())
        if existing == spec:
            return out
        raise AftInputError(
            spec_file,
            "<run>",
            f"the folder already holds a different TownInfo corpus ({existing})",
            "choose an empty --out folder or delete the old corpus",
        )
    if out.exists() and any(out.iterdir()):
        raise AftInputError(
            out, "<folder>", "is not empty and holds no TownInfo corpus", "choose an empty --out folder"
        )
    rng = random.Random(seed)
    db = build_database(rng)
    data = {f"TI{n:05d}.json": generate_dialogue(rng, db) for n in range(dialogues)}
    ids = list(data)
    n_val, n_test = max(1, int(dialogues * val_fraction)), max(1, int(dialogues * test_fraction))
    for domain, records in db.items():
        write_json_atomic(out / "db" / f"{domain}_db.json", records)
    write_json_atomic(out / "data.json", data)
    write_text_atomic(out / "valListFile.txt", "\n".join(ids[-n_val - n_test : -n_test]) + "\n")
    write_text_atomic(out / "testListFile.txt", "\n".join(ids[-n_test:]) + "\n")
    write_json_atomic(spec_file, spec)  # written last: its presence marks a complete corpus
    return out


def load_database(out_dir: str | Path) -> VenueDB:
    return VenueDB.load(Path(out_dir) / "db")
