"""How a TownInfo user speaks: the one owner of the user's paraphrases.

The corpus generator (aft_core.data.towninfo) and the user simulator (aft_core.dialogue.user) both speak
through these functions, so the simulated user cannot drift from the users the model was trained on. Each
function draws from the `rng` it is given in a fixed order: the generator's corpus is a pure function of its
seed, and a test pins its bytes.
"""

from __future__ import annotations

import random

DONT_CARE = [
    "i do not mind .",
    "any is fine .",
    "it does not matter .",
    "i have no preference .",
    "whatever you suggest .",
]
OPEN_FIRST = [
    "hello , i am looking for {c} .",
    "hi , i need {c} .",
    "i am looking for {c} .",
    "can you help me find {c} ?",
    "i would like to find {c} please .",
    "good afternoon , i want {c} .",
]
OPEN_NEXT = [
    "i also need {c} .",
    "i am also looking for {c} .",
    "can you also help me find {c} ?",
    "next , i need {c} .",
    "thanks . i also want {c} .",
]
THANKS = [
    "that is all , thank you .",
    "no , that will be all . thanks !",
    "thanks , that is everything i needed .",
    "great , thank you . goodbye .",
]
REQUEST_WORDS = {
    "address": ["address", "the address"],
    "phone": ["phone number", "the phone number"],
    "postcode": ["postcode", "the postcode"],
}


def constraint_phrase(rng: random.Random, domain: str, slots: dict[str, str]) -> str:
    """E.g. 'a cheap italian restaurant in the north', built from whichever slots are given."""
    if domain == "restaurant":
        head = " ".join(v for v in (slots.get("pricerange"), slots.get("food")) if v)
        text = f"{'an' if head[:1] in 'aeiou' and head else 'a'} {head + ' ' if head else ''}restaurant"
        if "area" in slots:
            text += rng.choice(
                [f" in the {slots['area']}", f" in the {slots['area']} of town", f" on the {slots['area']} side"]
            )
        return text
    if domain == "hotel":
        text = (
            "a " + (f"{slots['pricerange']} " if "pricerange" in slots else "") + rng.choice(["hotel", "place to stay"])
        )
        if "area" in slots:
            text += rng.choice([f" in the {slots['area']}", f" in the {slots['area']} area"])
        if "stars" in slots:
            text += rng.choice([f" with {slots['stars']} stars", f" rated {slots['stars']} stars"])
        return text
    if domain == "attraction":
        text = (
            f"a {slots['type']}"
            if "type" in slots
            else rng.choice(["something to do", "a place to visit", "an attraction"])
        )
        if "area" in slots:
            text += rng.choice([f" in the {slots['area']}", f" in the {slots['area']} of town"])
        return text
    text = "a train"
    if "destination" in slots:
        text += f" to {slots['destination']}"
    if "day" in slots:
        text += f" on {slots['day']}"
    return text


def opening(rng: random.Random, domain: str, slots: dict[str, str], first: bool) -> str:
    """The first words about a domain: 'hello , i am looking for a cheap restaurant .' ('i also need …' later)."""
    return rng.choice(OPEN_FIRST if first else OPEN_NEXT).format(c=constraint_phrase(rng, domain, slots))


def slot_answer(rng: random.Random, domain: str, slot: str, value: str) -> str:
    """One constraint, as the answer to the system's question about it (or volunteered)."""
    options = {
        "food": [
            f"i would like {value} food .",
            f"{value} please .",
            f"something serving {value} food .",
            f"i am in the mood for {value} .",
        ],
        "area": [
            f"the {value} please .",
            f"i would prefer the {value} .",
            f"somewhere in the {value} .",
            f"it should be in the {value} .",
        ],
        "pricerange": [
            f"something {value} please .",
            f"i want the {value} price range .",
            f"{value} would be best .",
            f"it should be {value} .",
        ],
        "stars": [f"{value} stars please .", f"it should have {value} stars .", f"i would like a {value} star place ."],
        "type": [
            f"i am interested in a {value} .",
            f"a {value} please .",
            f"maybe a {value} ?",
            f"i would love to see a {value} .",
        ],
        "destination": [
            f"i am going to {value} .",
            f"to {value} please .",
            f"i need to get to {value} .",
            f"the destination is {value} .",
        ],
        "day": [f"on {value} .", f"i will travel on {value} .", f"{value} please .", f"it is for {value} ."],
    }
    return rng.choice(options[slot])


# A MultiWOZ goal's constraints that TownInfo users never state (the simulator only: the generator never draws them)
PLAIN: dict[str, list[str] | dict[str, list[str]]] = {
    "departure": [
        "i am leaving from {v} .",
        "i will depart from {v} .",
        "from {v} please .",
        "i am departing from {v} .",
    ],
    "leaveAt": ["i want to leave after {v} .", "i would like to leave after {v} .", "leaving after {v} please ."],
    "arriveBy": ["i need to arrive by {v} .", "i want to get there by {v} .", "arriving by {v} please ."],
    "name": ["i am looking for {v} .", "it is called {v} .", "the place is {v} ."],
    "department": ["the {v} department please .", "i need the {v} department ."],
    "parking": {"yes": ["i need free parking .", "it should have free parking ."], "no": ["i do not need parking ."]},
    "internet": {"yes": ["it should have free wifi .", "i need internet ."], "no": ["i do not need internet ."]},
}


def said_plainly(rng: random.Random, slot: str, value: str) -> str:
    """A constraint TownInfo's phrases have no words for (a MultiWOZ train's departure time, a hotel's parking), in
    words a MultiWOZ user would use ("i want to leave after 12:45 ."); "the <slot> should be <value> ." for a slot
    without any."""
    found = PLAIN.get(slot)
    options = found.get(str(value).lower()) if isinstance(found, dict) else found
    if not options:
        return f"the {slot} should be {value} ."
    return rng.choice(options).format(v=value)


def slot_answers(rng: random.Random, domain: str, slots: dict[str, str]) -> str:
    """Several constraints in one turn (the simulator's `agenda` mode): one answer per slot, joined."""
    return " ".join(slot_answer(rng, domain, slot, value) for slot, value in slots.items())


def dont_care(rng: random.Random) -> str:
    return rng.choice(DONT_CARE)


def relax(rng: random.Random, value: str) -> str:
    """After a no-offer: the user gives the value it can live with instead."""
    return rng.choice([f"ok , how about {value} then ?", f"then {value} is fine .", f"what about {value} instead ?"])


def request(rng: random.Random, fields: list[str]) -> str:
    """Asking for attributes of the offered venue: 'can i have the phone number and postcode ?'."""
    asked = " and ".join(rng.choice(REQUEST_WORDS.get(f, [f, f"the {f}"])) for f in fields)
    return rng.choice([f"can i have {asked} ?", f"what is {asked} ?", f"could you tell me {asked} please ?"])


def book(domain: str, slots: dict[str, str]) -> str:
    """Asking to book the offered venue with the goal's booking slots."""
    if domain == "restaurant":
        return f"please book a table for {slots['people']} people on {slots['day']} at {slots['time']} ."
    if domain == "hotel":
        return f"can you book it for {slots['people']} people for {slots['stay']} nights starting {slots['day']} ?"
    return f"yes , please book {slots['people']} tickets ."


def ask_reference(rng: random.Random) -> str:
    """A booking was announced without its reference number (the simulator only; corpus bookings give one)."""
    return rng.choice(["what is the reference number ?", "could i have the reference number please ?"])


def ask_offer(rng: random.Random) -> str:
    """Every constraint is given and nothing was offered yet (the simulator only)."""
    return rng.choice(["can you recommend one ?", "which one would you suggest ?", "do you have anything like that ?"])


def thanks(rng: random.Random) -> str:
    return rng.choice(THANKS)
