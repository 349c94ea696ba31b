"""The agenda user: a seeded, deterministic user simulator that pursues one goal, domain by domain.

In the manner of ConvLab's agenda-based simulator (its published design; no code of it is used), the user:
- informs its constraints, `reveal` deciding how many per turn:
  - `full`: every constraint of a domain in the domain's first turn;
  - `sharded`: one constraint per turn, as in Laban et al. 2025's sharded instructions;
  - `agenda`: 1 to `per_turn` constraints per turn, drawn from the user's seeded generator;
- answers the system's questions (a constraint it holds, a booking slot, or "i do not mind");
- relaxes a constraint after a no-offer when its goal says how (`DomainGoal.relaxed`);
- re-states a constraint that an offered venue violates (counted in `violations`);
- once a venue meeting its constraints is offered, asks for the goal's attributes, then books with the goal's
  booking slots and asks for the reference number until it has one;
- thanks the system when every domain is done, and gives up after `max_exchanges` turns of its own.

A user is a pure function of (goal, reveal mode, seed) and the system's words: the same inputs give the same
conversation, which is what lets a conversation be rerun exactly, and batched and one-at-a-time loops agree.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aft_core.config import REVEAL_MODES
from aft_core.data.corpus import in_text
from aft_core.data.venues import satisfies, venue_name
from aft_core.dialogue import user_words
from aft_core.dialogue.goals import DomainGoal, Goal
from aft_core.dialogue.reader import PREFERENCE, READ_ATTRIBUTES, SystemReading, same_value

if TYPE_CHECKING:
    from aft_core.dialogue.multiwoz_words import RetrievedWords


BOOK_SLOTS = ("people", "day", "time", "stay")
UNKNOWN = "?"  # a database value that says nobody knows it
ANSWERABLE = ("food", "area", "pricerange", "stars", "type", "destination", "day")  # slots with TownInfo answers


@dataclass
class DomainState:
    """Where the user stands in one domain of its goal."""

    goal: DomainGoal
    active: dict[str, str]  # the constraints it holds now (the goal's first ones; the relaxed ones after a no-offer)
    revealed: dict[str, str] = field(default_factory=dict)
    relaxed: bool = False
    offered: dict[str, Any] | None = None  # the venue it accepted
    received: dict[str, str] = field(default_factory=dict)  # requested attribute -> value, of the accepted venue
    book_asked: bool = False
    reference: str | None = None

    @property
    def unrevealed(self) -> list[str]:
        return [slot for slot in self.active if self.revealed.get(slot) != self.active[slot]]

    @property
    def missing(self) -> list[str]:
        """The goal's requests not yet answered, among those the reader can check were given (a MultiWOZ goal may
        also ask a venue's stars or area; Success asks only for phone, address, postcode and train id) and the
        accepted venue has a value for (MultiWOZ's database writes "?" for an entrance fee nobody knows)."""
        unknown = {r for r, v in (self.offered or {}).items() if str(v).strip() == UNKNOWN}
        return [r for r in self.goal.requests if r in READ_ATTRIBUTES and r not in self.received and r not in unknown]

    @property
    def done(self) -> bool:
        return self.offered is not None and not self.missing and (not self.goal.book or self.reference is not None)


@dataclass
class UserTurn:
    """One user utterance and the constraints it revealed (slot -> value), for tests and transcripts."""

    text: str
    revealed: dict[str, str]


class AgendaUser:
    """One simulated user for one goal. `open()` gives its first words; `respond(reading)` its answer to the
    system's turn as the reader read it, or None once the conversation is over (thanked or given up)."""

    def __init__(
        self,
        goal: Goal,
        reveal: str = "agenda",
        seed: int = 0,
        per_turn: int = 2,
        max_exchanges: int = 20,
        words: RetrievedWords | None = None,
    ):
        """`words`: a MultiWOZ corpus's own user utterances (aft_core.dialogue.multiwoz_words), tried first at every
        turn; without them, or where they have none for the act, the user speaks TownInfo's words (user_words)."""
        if reveal not in REVEAL_MODES:
            raise ValueError(f"reveal must be one of {', '.join(REVEAL_MODES)}, not {reveal!r}")
        self.goal, self.reveal, self.per_turn, self.max_exchanges = goal, reveal, per_turn, max_exchanges
        self.words = words
        self.rng = random.Random(f"{seed}:{goal.dialogue_id}:{reveal}")
        self.states = [DomainState(d, dict(d.constraints)) for d in goal.domains]
        self.index = 0
        self.turns: list[UserTurn] = []
        self.violations = 0  # offers that broke a constraint the user had already given
        self.thanked = False
        self.gave_up = False
        self.over = False

    @property
    def state(self) -> DomainState:
        return self.states[self.index]

    @property
    def complete(self) -> bool:
        """The agenda ran to its end: every domain done and the user thanked the system."""
        return self.thanked and all(s.done for s in self.states)

    def _say(self, text: str, revealed: dict[str, str] | None = None) -> str:
        revealed = revealed or {}
        self.state.revealed.update(revealed)
        self.turns.append(UserTurn(text, dict(revealed)))
        return text

    def _batch(self, slots: list[str]) -> dict[str, str]:
        """The constraints this turn reveals, by the reveal mode."""
        if not slots:
            return {}
        count = {"full": len(slots), "sharded": 1, "agenda": self.rng.randint(1, max(1, self.per_turn))}[self.reveal]
        return {slot: self.state.active[slot] for slot in slots[:count]}

    def _inform(self, slots: dict[str, str]) -> str:
        domain = self.state.goal.domain
        if self.words is not None and (said := self.words.inform(self.rng, domain, slots)):
            return self._say(said, slots)
        spoken = {s: v for s, v in slots.items() if s in ANSWERABLE}
        plain = [user_words.said_plainly(self.rng, s, v) for s, v in slots.items() if s not in spoken]
        if not spoken:  # slots TownInfo users have no words for: said as a MultiWOZ user would
            return self._say(" ".join(plain), slots)
        return self._say(" ".join([user_words.slot_answers(self.rng, domain, spoken), *plain]), slots)

    def _open_domain(self) -> str:
        state = self.state
        first = self._batch(state.unrevealed)
        if self.words is not None and first and (said := self.words.inform(self.rng, state.goal.domain, first, True)):
            return self._say(said, first)
        spoken = {s: v for s, v in first.items() if s in ANSWERABLE}
        text = user_words.opening(self.rng, state.goal.domain, spoken, self.index == 0)
        # what the TownInfo phrase has no words for (a MultiWOZ train's departure, a hotel's parking), said plainly
        unsaid = {s: v for s, v in first.items() if s not in spoken or not in_text(str(v), text)}
        text = " ".join([text, *(user_words.said_plainly(self.rng, s, v) for s, v in unsaid.items())])
        return self._say(text, first)

    def open(self) -> str:
        """The user's first turn."""
        return self._open_domain()

    def respond(self, reading: SystemReading) -> str | None:
        if self.over:
            return None
        if self.thanked:  # the system answered the thanks: the conversation is over
            self.over = True
            return None
        if len(self.turns) >= self.max_exchanges:
            self.gave_up = self.over = True
            return None
        state = self.state
        self._take_in(reading)
        offered = [r for d, r in reading.offered if d == state.goal.domain]
        if offered and state.offered is None:
            violated = [s for s, v in state.active.items() if not satisfies(offered[-1], {s: v})]
            if any(s in state.revealed for s in violated):
                self.violations += 1
            if violated:  # say what the offer breaks (what was said again, what was not yet said)
                return self._inform(
                    self._batch(violated) if self.reveal == "sharded" else {s: state.active[s] for s in violated}
                )
            state.offered = offered[-1]
            self._take_in(reading)
        if reading.no_offer and state.offered is None and state.goal.fails and not state.relaxed:
            state.relaxed = True
            state.active = dict(state.goal.relaxed)
            changed = {s: v for s, v in state.active.items() if state.goal.constraints.get(s) != v}
            slot, value = next(iter(changed.items()))
            said = self.words.inform(self.rng, state.goal.domain, {slot: value}) if self.words else None
            return self._say(said or user_words.relax(self.rng, value), {slot: value})
        asked = [s for s in reading.requested if s != PREFERENCE]  # an open question: answered as by default
        if asked and state.offered is None:  # before an offer, a question is about the search
            slot = asked[0]
            if slot in state.active:
                return self._inform({slot: state.active[slot]})
            said = self.words.inform(self.rng, state.goal.domain, {slot: "dontcare"}) if self.words else None
            return self._say(said or user_words.dont_care(self.rng))
        if state.offered is None:
            if state.unrevealed:
                return self._inform(self._batch(state.unrevealed))
            return self._say(user_words.ask_offer(self.rng))
        if state.missing:
            said = self.words.request(self.rng, state.goal.domain, state.missing) if self.words else None
            return self._say(said or user_words.request(self.rng, state.missing))
        if state.goal.book and state.reference is None:
            if not state.book_asked or any(s in BOOK_SLOTS for s in reading.requested):
                return self._book()
            said = self.words.request(self.rng, state.goal.domain, ["reference"]) if self.words else None
            return self._say(said or user_words.ask_reference(self.rng))
        if self.index + 1 < len(self.states):
            self.index += 1
            return self._open_domain()
        self.thanked = True
        said = self.words.thanks(self.rng) if self.words else None
        return self._say(said or user_words.thanks(self.rng))

    def _book(self) -> str:
        state = self.state
        state.book_asked = True
        book = state.goal.book
        if self.words is not None and (said := self.words.inform(self.rng, state.goal.domain, dict(book))):
            return self._say(said)
        if all(
            k in book
            for k in {"restaurant": ("people", "day", "time"), "hotel": ("people", "stay", "day")}.get(
                state.goal.domain, ("people",)
            )
        ):
            return self._say(user_words.book(state.goal.domain, book))
        return self._say("please book it for " + " , ".join(f"{k} {v}" for k, v in book.items()) + " .")

    def _take_in(self, reading: SystemReading) -> None:
        """Attributes of the accepted venue that the system gave, and a booking's reference number."""
        state = self.state
        if state.offered is None:
            return
        named = [venue_name(r) for _, r in reading.offered if r is state.offered]
        for attribute in state.goal.requests:
            value = reading.informed.get(attribute) or (
                named[0] if attribute in ("name", "trainID") and named else None
            )
            if value is not None and same_value(value) == same_value(state.offered.get(attribute, "")):
                state.received[attribute] = value
        if reading.reference and state.book_asked:
            state.reference = reading.reference
