"""The batched conversation loop, and the systems that talk in it.

A system is anything with `respond(histories) -> replies`: the oracle policy (aft_core.dialogue.oracle), a
family-backed model (`ModelSystem`, any family, LoRA or not), or a scripted test double. `converse` advances
every live conversation together: one round is one user turn per live conversation and one call to the system
with all their histories, which a model answers with one batched generation through the family interface.
`converse(..., batched=False)` runs the same conversations one at a time (the yardstick of bench/selfplay.py).

A model's history is its own replies and the simulated user's words, left-cut to its source budget exactly as in
training (`ModelFamily.encode_prompts`). Each turn carries the slot values it states (the user's revealed
values; the reader's venue names, attributes and references for the system), so the salient I_x exists in a
conversation too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from aft_core.data.batching import SourceBatch
from aft_core.data.examples import Turn
from aft_core.dialogue.goals import Goal
from aft_core.dialogue.metrics import dialogue_outcome
from aft_core.dialogue.multiwoz_words import RetrievedWords
from aft_core.dialogue.reader import Reader, SystemReading
from aft_core.dialogue.user import AgendaUser

TRAJECTORY_MODES = ("all", "history", "salient")


@dataclass
class Reply:
    """One system turn: its text and, for a model, its attention figures on this turn (focus/coverage per I_x
    mode, the share of attention on earlier turns rather than the latest user turn, lookback)."""

    text: str
    attention: dict[str, float] = field(default_factory=dict)


class System(Protocol):
    def respond(self, histories: Sequence[Sequence[Turn]]) -> Sequence[Reply | str]: ...


class ModelSystem:
    """A model answering with greedy decoding (or, with `temperature`, sampling; seed torch before a conversation
    loop for a reproducible draw), batched; attention figures read from the teacher-forced pass over its own
    responses (monitor.score_greedy, the evaluation's path)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_source_tokens: int,
        max_new_tokens: int = 48,
        batch_size: int = 64,
        temperature: float | None = None,
    ):
        from aft_core.models import family_of

        self.model, self.tokenizer, self.temperature = model, tokenizer, temperature
        self.family = family_of(model, tokenizer)
        self.max_source_tokens, self.max_new_tokens, self.batch_size = max_source_tokens, max_new_tokens, batch_size
        self.layers = self.family.attention_layers(model)

    @torch.no_grad()
    def respond(self, histories: Sequence[Sequence[Turn]]) -> list[Reply]:
        from aft_core.monitor import score_greedy

        rows = self.family.encode_prompts(histories, self.tokenizer, self.max_source_tokens)
        scored = score_greedy(
            self.model,
            self.tokenizer,
            self.family,
            rows,
            ix_modes=TRAJECTORY_MODES,
            layers=self.layers,
            max_new_tokens=self.max_new_tokens,
            repeat_n=3,
            batch_size=self.batch_size,
            keep_attention=True,
            temperature=self.temperature,
        )
        history = SourceBatch.from_rows(rows, self.family.pad_id()).mask("history")  # [B,S] I_x = history, right-padded
        replies = []
        for i in range(len(rows)):
            attention = scored["attention"][i]  # [T,S] over the real response and prompt positions
            earlier = history[i, : attention.shape[1]]
            mass = attention.sum(dim=1).clamp(min=1e-12)  # [T]
            share = float((attention[:, earlier].sum(dim=1) / mass).mean()) if attention.shape[0] else float("nan")
            figures = {
                f"{kind}/{mode}": float(scored[f"{kind}/{mode}"][i])
                for kind in ("focus", "coverage")
                for mode in TRAJECTORY_MODES
            }
            replies.append(
                Reply(scored["texts"][i], {**figures, "earlier_share": share, "lookback": float(scored["lookback"][i])})
            )
        return replies


def first_offer(user: AgendaUser, reading: SystemReading) -> int:
    """1 when the system's turn offers a venue in the domain the user pursues, before any venue was offered there
    (the offers that Inform's violating-offer rate counts), else 0. Read before the user answers the turn."""
    domain = user.state.goal.domain
    return int(any(d == domain for d, _ in reading.offered) and user.state.offered is None)


def system_turn(text: str, reading: SystemReading) -> Turn:
    values = [name for _, r in reading.offered for name in [r.get("name") or r.get("trainID")] if name]
    values += list(reading.informed.values()) + ([reading.reference] if reading.reference else [])
    return Turn("system", text, tuple(v for v in values if v and v.lower() in text.lower()))


def user_turn(user: AgendaUser, text: str) -> Turn:
    revealed = user.turns[-1].revealed.values() if user.turns else ()
    return Turn("user", text, tuple(v for v in revealed if v.lower() in text.lower()))


def converse(
    system: System,
    goals: Sequence[Goal],
    reader: Reader,
    *,
    reveal: str = "agenda",
    seed: int = 0,
    max_exchanges: int = 20,
    batched: bool = True,
    words: RetrievedWords | None = None,
) -> list[dict[str, Any]]:
    """Each goal's conversation between a fresh AgendaUser(goal, reveal, seed) and `system`; returns one record per
    goal, in order: its turns (speaker, text, the user's revealed constraints, the system's attention figures),
    the user's end state and `outcome` (aft_core.dialogue.metrics.dialogue_outcome). `words`: a MultiWOZ corpus's
    user utterances for the users to speak (AgendaUser)."""
    if not batched:
        return [
            record
            for goal in goals
            for record in converse(
                system, [goal], reader, reveal=reveal, seed=seed, max_exchanges=max_exchanges, words=words
            )
        ]
    users = [AgendaUser(goal, reveal, seed, max_exchanges=max_exchanges, words=words) for goal in goals]
    histories: list[list[Turn]] = []
    transcripts: list[list[dict[str, Any]]] = []
    readings: list[list[SystemReading]] = [[] for _ in goals]
    offers = [0] * len(goals)
    for user in users:
        text = user.open()
        histories.append([user_turn(user, text)])
        transcripts.append([{"speaker": "user", "text": text, "revealed": user.turns[-1].revealed}])
    live = list(range(len(goals)))
    while live:
        replies = system.respond([histories[i] for i in live])
        still = []
        for i, reply in zip(live, replies, strict=True):
            reply = reply if isinstance(reply, Reply) else Reply(str(reply))
            reading = reader.read(reply.text)
            readings[i].append(reading)
            histories[i].append(system_turn(reply.text, reading))
            transcripts[i].append(
                {"speaker": "system", "text": reply.text, **({"attention": reply.attention} if reply.attention else {})}
            )
            user = users[i]
            offers[i] += first_offer(user, reading)
            answer = user.respond(reading)
            if answer is None:
                continue
            histories[i].append(user_turn(user, answer))
            transcripts[i].append({"speaker": "user", "text": answer, "revealed": user.turns[-1].revealed})
            still.append(i)
        live = still
    records = []
    for goal, user, transcript, read, offered in zip(goals, users, transcripts, readings, offers, strict=True):
        system_texts = [t["text"] for t in transcript if t["speaker"] == "system"]
        outcome = dialogue_outcome(
            goal,
            system_texts,
            read,
            complete=user.complete,
            timeout=user.gave_up,
            offers=offered,
            violations=user.violations,
        )
        records.append(
            {"dialogue_id": goal.dialogue_id, "reveal": reveal, "seed": seed, "turns": transcript, "outcome": outcome}
        )
    return records
