"""Dialogue-level outcomes, as the field defines them (mwzeval's Inform and Success; ConvLab's Book and Complete).

For each venue domain of the goal, from the system turns as the reader read them:
- **Inform**: the last venue of that domain the system offered meets the goal's final constraints
  (`DomainGoal.relaxed`; a train's `leaveAt` and `arriveBy` as bounds, as MultiWOZ's database query reads them).
  As in mwzeval, a goal that names its venue matches without an offer, and so does a train goal that does not ask
  for the train's id when no train was offered. A dialogue informs when every domain does.
- **Success**: Inform, and every one of mwzeval's requestables the goal asks for (phone, address, postcode, the
  train's id) was given with the offered venue's own value in a turn at or after that offer, and, when the goal
  books, a reference number was given after the offer (mwzeval counts the reference among the requestables).
  Other requests (a fare, a journey's length) do not count, as in mwzeval. A dialogue succeeds when every domain
  does. Lexicalised text is stricter than mwzeval's delexicalised tokens here: a value must be the venue's own.
- **Book**: of the domains whose goal books, the share with a reference number given after an offer that meets
  the constraints (ConvLab's book rate).
- **Complete**: the user's agenda ran to its end: every domain done in its own view and the system thanked
  (ConvLab's task completion).
Also: system turns, the first system turn after which the dialogue had succeeded (`turns_to_success`), whether
the user gave up at the cap (`timeout`), the share of offers that broke a constraint the user had already given,
and repeated system replies (one that equals an earlier reply of the same dialogue: the Dam, in a conversation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aft_core.data.venues import NAME_FIELDS, satisfies, venue_name
from aft_core.dialogue.goals import Goal
from aft_core.dialogue.reader import SystemReading, same_value
from aft_core.stats import bootstrap_ci

# mwzeval's requestables: Success asks for these of the offered venue (and for a reference when the goal books). A
# goal's other requests (a fare, a journey's length, an entrance fee) the user asks for, but the metric does not.
SUCCESS_REQUESTABLES = ("phone", "address", "postcode", "trainID")


def _domain_success_turn(goal_domain: Any, readings: Sequence[SystemReading]) -> tuple[bool, int | None, bool]:
    """(inform, the system turn index after which the domain had succeeded or None, booked) for one domain.

    As mwzeval matches: the last venue of the domain the system offered must meet the goal's constraints, except
    that a goal which names its venue, and a train goal that does not ask for the train's id when no train was
    offered, match without an offer. Requested attributes count when given with the offered venue's own value
    (any value where no venue was offered), from the first offer of that venue on."""
    required = {a for a in goal_domain.requests if a in SUCCESS_REQUESTABLES}
    named = [same_value(goal_domain.relaxed[k]) for k in NAME_FIELDS if k in goal_domain.relaxed]
    last: dict[str, Any] | None = None
    offered_at = -1
    for i, reading in enumerate(readings):
        mine = [r for d, r in reading.offered if d == goal_domain.domain]
        if named:  # the venue the user named, when the system named it too
            mine = [r for r in mine if same_value(venue_name(r) or "") in named]
        if mine:
            last, offered_at = mine[-1], i
    if last is None:
        if not (named or (goal_domain.domain == "train" and "trainID" not in required)):
            return False, None, False
        first = 0
    elif not named and not satisfies(last, goal_domain.relaxed):
        return False, None, False
    else:
        # the offer may have been repeated: attributes count from the first offer of the same venue on
        first = min(i for i, reading in enumerate(readings) if any(r is last for _, r in reading.offered))
    given = {"trainID"} & required if last is not None else set()  # an offered train is named by its id
    booked = not goal_domain.book
    for i, reading in enumerate(readings[first:], start=first):
        for attribute in required:
            value = reading.informed.get(attribute)
            if value is not None and (last is None or same_value(value) == same_value(last.get(attribute, ""))):
                given.add(attribute)
        if goal_domain.book and reading.reference:
            booked = True
        if booked and given >= required:
            return True, max(i, offered_at), bool(goal_domain.book)
    return True, None, booked and bool(goal_domain.book)


def dialogue_outcome(
    goal: Goal,
    system_texts: Sequence[str],
    readings: Sequence[SystemReading],
    *,
    complete: bool,
    timeout: bool,
    offers: int,
    violations: int,
) -> dict[str, Any]:
    """Every per-dialogue figure of the module docstring for one conversation."""
    informs, success_turns, books = [], [], []
    for goal_domain in goal.domains:
        inform, success_at, booked = _domain_success_turn(goal_domain, readings)
        informs.append(inform)
        success_turns.append(success_at)
        if goal_domain.book:
            books.append(booked)
    success = all(t is not None for t in success_turns) and bool(success_turns)
    seen: set[str] = set()
    repeats = 0
    for text in system_texts:
        repeats += text in seen
        seen.add(text)
    return {
        "inform": float(all(informs) and bool(informs)),
        "success": float(success),
        "book": float(np.mean(books)) if books else None,
        "complete": float(complete),
        "turns": len(system_texts),
        "turns_to_success": (max(t for t in success_turns if t is not None) + 1) if success else None,
        "timeout": float(timeout),
        "offers": offers,
        "violating_offers": violations,
        "repeated_replies": repeats,
    }


def summarise(outcomes: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Means with 95% bootstrap intervals over dialogues: rates as [mean, low, high]."""
    summary: dict[str, Any] = {"dialogues": len(outcomes)}
    for key in ("inform", "success", "book", "complete", "timeout"):
        values = [o[key] for o in outcomes if o[key] is not None]
        summary[key] = list(bootstrap_ci(values, seed=seed)) if values else None
    offers = sum(o["offers"] for o in outcomes)
    summary["violating_offer_rate"] = sum(o["violating_offers"] for o in outcomes) / offers if offers else None
    summary["repeated_reply_rate"] = sum(o["repeated_replies"] for o in outcomes) / max(
        sum(o["turns"] for o in outcomes), 1
    )
    to_success = [o["turns_to_success"] for o in outcomes if o["turns_to_success"] is not None]
    summary["turns_to_success"] = float(np.mean(to_success)) if to_success else None
    summary["turns"] = float(np.mean([o["turns"] for o in outcomes])) if outcomes else None
    return summary


def reliability(success_by_goal: Sequence[Sequence[float]]) -> dict[str, float]:
    """Laban et al. 2025's measures over n sampled conversations per goal (success in [0, 1] each):
    mean performance P (mean over goals of the per-goal mean), aptitude A90 (mean over goals of the 90th
    percentile) and unreliability U90-10 (mean over goals of the 90th minus the 10th percentile)."""
    scores = [np.asarray(s, dtype=float) for s in success_by_goal if len(s)]
    if not scores:
        return {"P": float("nan"), "A90": float("nan"), "U90_10": float("nan")}
    return {
        "P": float(np.mean([s.mean() for s in scores])),
        "A90": float(np.mean([np.percentile(s, 90) for s in scores])),
        "U90_10": float(np.mean([np.percentile(s, 90) - np.percentile(s, 10) for s in scores])),
    }
