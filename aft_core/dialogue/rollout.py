"""Self-play prompts for AFT (`rollout: self_play`): live conversations between the policy and the user simulator.

The buffer holds `size` conversations on training-split goals. Each step takes the next `batch_size` of them in
turn; their histories (the policy's own earlier replies and the simulated user's words, with the slot values each
turn states) are the step's prompts, encoded exactly as corpus prompts are, and its K candidates are sampled and
scored exactly as in a corpus step. After the update each conversation goes on with its prompt's
**highest-weighted candidate**: the reply this step's update raises most, so the conversation follows where the
policy is being pushed, and it is a function of the step's samples alone (drawing one by weight would add variance
that the reward does not ask for). The user answers it; a conversation that ends is replaced by a new goal.

**The schedule:** the buffer starts afresh (new conversations, their goals drawn from the seed and the step) at
step 0 and every `self_play_refresh_every` steps (50), so no conversation outlives that interval. A checkpoint
holds the buffer as JSON (`state`): each conversation's goal, user seed and the replies it was given, from which the
simulated user, deterministic in them, is replayed on `restore`. A resumed branch goes on exactly as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aft_core.data.examples import Turn
from aft_core.dialogue.goals import Goal
from aft_core.dialogue.metrics import dialogue_outcome
from aft_core.dialogue.multiwoz_words import RetrievedWords
from aft_core.dialogue.reader import Reader, SystemReading
from aft_core.dialogue.selfplay import first_offer, system_turn, user_turn
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
    focus: list[float] = field(default_factory=list)  # each reply's focus as it was scored when chosen
    offers: int = 0

    def outcome(self) -> dict[str, Any]:
        """The ended conversation's outcome, as the closed-loop evaluation scores it."""
        return dialogue_outcome(
            self.goal,
            self.replies,
            self.readings,
            complete=self.user.complete,
            timeout=self.user.gave_up,
            offers=self.offers,
            violations=self.user.violations,
        )


class SelfPlayBuffer:
    """Live conversations whose histories are AFT's prompts (see the module docstring)."""

    def __init__(
        self,
        goals: Sequence[Goal],
        reader: Reader,
        *,
        size: int,
        reveal: str,
        max_exchanges: int,
        seed: int,
        words: RetrievedWords | None = None,
    ) -> None:
        """`words`: the corpus's own user utterances (multiwoz_words.corpus_user_words), as the closed loop's users
        speak them; None: TownInfo's words."""
        if not goals:
            raise ValueError("self-play needs training-split goals")
        self.goals, self.reader, self.words = list(goals), reader, words
        self.size, self.reveal, self.max_exchanges, self.seed = size, reveal, max_exchanges, seed
        self.slots: list[LiveSlot] = []
        self.rng = random.Random(0)
        self.cursor = 0

    def restart(self, step: int) -> None:
        """Fresh conversations, drawn from the seed and `step` alone (the schedule: every self_play_refresh_every
        steps, step 0 included)."""
        self.rng = random.Random(f"{self.seed}:self-play:{step}")
        self.slots = [self._open() for _ in range(self.size)]
        self.cursor = 0

    def _open(self) -> LiveSlot:
        index = self.rng.randrange(len(self.goals))
        return self._slot(index, self.rng.randrange(2**31))

    def _slot(self, index: int, seed: int) -> LiveSlot:
        goal = self.goals[index]
        user = AgendaUser(goal, self.reveal, seed, max_exchanges=self.max_exchanges, words=self.words)
        return LiveSlot(index, seed, goal, user, [user_turn(user, user.open())])

    def state(self) -> dict[str, Any]:
        """The buffer as JSON: enough to replay it exactly (`restore`)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "rng": [version, list(internal), gauss],
            "cursor": self.cursor,
            "slots": [
                {"goal": s.goal_index, "seed": s.seed, "replies": list(s.replies), "focus": list(s.focus)}
                for s in self.slots
            ],
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
            slot.focus = list(saved.get("focus", []))
            self.slots.append(slot)

    def _continue(self, slot: LiveSlot, text: str) -> bool:
        """`slot` goes on with the system reply `text` and the user's answer; True when the user ended it."""
        reading = self.reader.read(text)
        slot.offers += first_offer(slot.user, reading)
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

    def trajectory_context(self, picked: Sequence[int], window: int) -> tuple[list[float], list[int]]:
        """Per picked conversation: the sum of focus over its last `window` − 1 system turns, and how many there
        are (the trajectory term's context: aft_core.reward.trajectory_reward)."""
        before = [self.slots[i].focus[-(window - 1) :] if window > 1 else [] for i in picked]
        return [float(sum(b)) for b in before], [len(b) for b in before]

    def roll_forward(
        self,
        picked: Sequence[int],
        candidates: Sequence[Sequence[str]],
        respond: Callable[[list[list[Turn]]], list[str]],
        horizon: int,
    ) -> tuple[list[list[float]], list[list[int]]]:
        """The task term's rollouts: for each picked conversation and each of its candidates, a copy of the
        conversation goes on with the candidate, then with `respond` (the current policy, greedy, all live copies
        in one batch per round) for up to `horizon` system turns in all. Returns per candidate whether it ended in
        success and after how many system turns from the candidate (`horizon` + 1 when it did not end). The
        buffer itself is not touched."""
        success = [[0.0] * len(c) for c in candidates]
        turns = [[horizon + 1] * len(c) for c in candidates]
        live: list[tuple[int, int, LiveSlot]] = []
        for b, (i, texts) in enumerate(zip(picked, candidates, strict=True)):
            for k in range(len(texts)):
                live.append((b, k, copy.deepcopy(self.slots[i])))
        for n in range(1, horizon + 1):
            texts = [candidates[b][k] for b, k, _ in live] if n == 1 else respond([s.history for _, _, s in live])
            still = []
            for (b, k, slot), text in zip(live, texts, strict=True):
                if not self._continue(slot, text):
                    still.append((b, k, slot))
                    continue
                success[b][k], turns[b][k] = float(slot.outcome()["success"]), n
            live = still
            if not live:
                break
        return success, turns

    def answer(
        self, picked: Sequence[int], replies: Sequence[str], focus: Sequence[float] | None = None
    ) -> dict[str, float]:
        """Each picked conversation goes on with its reply (`focus`: the reply's focus, kept for the trajectory
        term); the simulated user answers it. Returns how many ended on this step and the mean Inform/Success of
        those (NaN when none ended)."""
        outcomes = []
        for n, (i, text) in enumerate(zip(picked, replies, strict=True)):
            slot = self.slots[i]
            if focus is not None:
                slot.focus.append(float(focus[n]))
            if not self._continue(slot, text):
                continue
            outcomes.append(slot.outcome())
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
