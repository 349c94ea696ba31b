"""Self-play prompts for AFT (`rollout: self_play`): live conversations between the policy and the user simulator.

The buffer holds `size` conversations on training-split goals. Each step takes the next `batch_size` of them in
turn; their histories (the policy's own earlier replies and the simulated user's words, with the slot values each
turn states) are the step's prompts, encoded exactly as corpus prompts are, and its K candidates are sampled and
scored exactly as in a corpus step. After the update each conversation goes on with its prompt's
**highest-weighted candidate**: the reply this step's update raises most, so the conversation follows where the
policy is being pushed, and it is a function of the step's samples alone (drawing one by weight would add variance
that the reward does not ask for). The user answers it; a conversation that ends is replaced by a new goal.

**The schedule:** the buffer starts afresh (new conversations, their goals drawn from the seed and the step) at
step 0 and every `checkpoint_every` steps, so no conversation outlives a checkpoint interval. A checkpoint holds
the buffer as JSON (`state`): each conversation's goal, user seed and the replies it was given, from which the
simulated user, deterministic in them, is replayed on `restore`. A resumed branch goes on exactly as an
uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aft_core.data.examples import Turn
from aft_core.dialogue.goals import Goal
from aft_core.dialogue.metrics import dialogue_outcome
from aft_core.dialogue.reader import Reader, SystemReading
from aft_core.dialogue.selfplay import system_turn, user_turn
from aft_core.dialogue.user import AgendaUser


@dataclass
class LiveSlot:
    """One live conversation of the buffer."""

    goal_index: int  # in the buffer's goal list
    seed: int  # the simulated user's
    goal: Goal
    user: AgendaUser
    history: list[Turn]
    readings: list[SystemReading] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    offers: int = 0


class SelfPlayBuffer:
    """Live conversations whose histories are AFT's prompts (see the module docstring)."""

    def __init__(
        self, goals: Sequence[Goal], reader: Reader, *, size: int, reveal: str, max_exchanges: int, seed: int
    ) -> None:
        if not goals:
            raise ValueError("self-play needs training-split goals")
        self.goals, self.reader = list(goals), reader
        self.size, self.reveal, self.max_exchanges, self.seed = size, reveal, max_exchanges, seed
        self.slots: list[LiveSlot] = []
        self.rng = random.Random(0)
        self.cursor = 0

    def restart(self, step: int) -> None:
        """Fresh conversations, drawn from the seed and `step` alone (the schedule: step 0 and every checkpoint)."""
        self.rng = random.Random(f"{self.seed}:self-play:{step}")
        self.slots = [self._open() for _ in range(self.size)]
        self.cursor = 0

    def _open(self) -> LiveSlot:
        index = self.rng.randrange(len(self.goals))
        return self._slot(index, self.rng.randrange(2**31))

    def _slot(self, index: int, seed: int) -> LiveSlot:
        goal = self.goals[index]
        user = AgendaUser(goal, self.reveal, seed, max_exchanges=self.max_exchanges)
        return LiveSlot(index, seed, goal, user, [user_turn(user, user.open())])

    def state(self) -> dict[str, Any]:
        """The buffer as JSON: enough to replay it exactly (`restore`)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "cursor": self.cursor,
            "slots": [{"goal": s.goal_index, "seed": s.seed, "replies": list(s.replies)} for s in self.slots],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """The buffer `state` describes: each conversation replayed from its goal, seed and replies."""
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.cursor = state["cursor"]
        self.slots = []
        for saved in state["slots"]:
            slot = self._slot(saved["goal"], saved["seed"])
            for text in saved["replies"]:
                if self._continue(slot, text):
                    raise ValueError("a saved self-play conversation ended while being replayed")
            self.slots.append(slot)

    def _continue(self, slot: LiveSlot, text: str) -> bool:
        """`slot` goes on with the system reply `text` and the user's answer; True when the user ended it."""
        reading = self.reader.read(text)
        domain = slot.user.state.goal.domain
        slot.offers += int(any(d == domain for d, _ in reading.offered) and slot.user.state.offered is None)
        slot.readings.append(reading)
        slot.replies.append(text)
        slot.history.append(system_turn(text, reading))
        said = slot.user.respond(reading)
        if said is None:
            return True
        slot.history.append(user_turn(slot.user, said))
        return False

    def take(self, n: int) -> list[int]:
        """The next `n` conversations, in turn."""
        picked = [(self.cursor + i) % self.size for i in range(n)]
        self.cursor = (self.cursor + n) % self.size
        return picked

    def histories(self, picked: Sequence[int]) -> list[list[Turn]]:
        return [self.slots[i].history for i in picked]

    def answer(self, picked: Sequence[int], replies: Sequence[str]) -> dict[str, float]:
        """Each picked conversation goes on with its reply; the simulated user answers it. Returns how many ended on
        this step and the mean Inform/Success of those (NaN when none ended)."""
        outcomes = []
        for i, text in zip(picked, replies, strict=True):
            slot = self.slots[i]
            if not self._continue(slot, text):
                continue
            outcomes.append(
                dialogue_outcome(
                    slot.goal,
                    slot.replies,
                    slot.readings,
                    complete=slot.user.complete,
                    timeout=slot.user.gave_up,
                    offers=slot.offers,
                    violations=slot.user.violations,
                )
            )
            self.slots[i] = self._open()
        return summary(outcomes)


def summary(outcomes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """{ended, inform, success} over the conversations that ended (the means are NaN when none did)."""
    n = len(outcomes)
    return {
        "ended": float(n),
        "inform": sum(o["inform"] for o in outcomes) / n if n else float("nan"),
        "success": sum(o["success"] for o in outcomes) / n if n else float("nan"),
    }
