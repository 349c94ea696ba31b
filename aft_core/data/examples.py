"""One training example = one system turn, and how its history becomes the model's source.

The source is the dialogue history, oldest turn first, each turn prefixed by its speaker
(`user: ... system: ... user: ...`). When it exceeds the token budget, whole turns are
dropped from the LEFT (oldest first); only if the current user turn alone is longer than
the budget are its leftmost tokens cut. Every source token keeps a map back to its turn,
whether it is a speaker tag, and whether it lies inside an annotated slot value, so the
`history` and `salient` position sets I_x of AFT_SPEC §4 can be built later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPEAKERS = ("user", "system")
NO_TURN = -1  # turn id of tokens that belong to no turn (EOS, padding)


@dataclass(frozen=True)
class Turn:
    speaker: str  # "user" or "system"
    text: str
    slot_values: tuple[str, ...] = ()  # annotated slot values / entity mentions in this turn


@dataclass(frozen=True)
class Example:
    example_id: str  # "<dialogue_id>/<turn_index>", unique within a corpus
    dialogue_id: str
    split: str
    turn_index: int  # index of the target system turn inside its dialogue
    history: tuple[Turn, ...]  # every earlier turn, oldest first; the last is the current user turn
    target: str  # the system utterance to produce
    belief_state: dict[str, dict[str, str]] = field(default_factory=dict)  # domain -> slot -> value
    domains: tuple[str, ...] = ()

    def to_row(self) -> dict[str, Any]:
        """A flat, Arrow-friendly row (nested belief state as JSON text)."""
        return {
            "example_id": self.example_id,
            "dialogue_id": self.dialogue_id,
            "split": self.split,
            "turn_index": self.turn_index,
            "history_speakers": [t.speaker for t in self.history],
            "history_texts": [t.text for t in self.history],
            "history_slot_values": [list(t.slot_values) for t in self.history],
            "target": self.target,
            "belief_state": json.dumps(self.belief_state, sort_keys=True),
            "domains": list(self.domains),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Example:
        history = tuple(
            Turn(speaker, text, tuple(values))
            for speaker, text, values in zip(
                row["history_speakers"], row["history_texts"], row["history_slot_values"], strict=True
            )
        )
        return cls(
            example_id=row["example_id"],
            dialogue_id=row["dialogue_id"],
            split=row["split"],
            turn_index=int(row["turn_index"]),
            history=history,
            target=row["target"],
            belief_state=json.loads(row["belief_state"]),
            domains=tuple(row["domains"]),
        )


def examples_from_turns(
    dialogue_id: str,
    split: str,
    turns: Sequence[Turn],
    belief_states: Sequence[dict[str, dict[str, str]]],
    domains: Sequence[str],
) -> list[Example]:
    """Every system turn with at least one earlier turn becomes an example.

    `belief_states[i]` is the belief state annotated at turn i (empty when none).
    """
    examples = []
    for i, turn in enumerate(turns):
        if turn.speaker != "system" or i == 0:
            continue
        examples.append(
            Example(
                example_id=f"{dialogue_id}/{i}",
                dialogue_id=dialogue_id,
                split=split,
                turn_index=i,
                history=tuple(turns[:i]),
                target=turn.text,
                belief_state=belief_states[i],
                domains=tuple(domains),
            )
        )
    return examples


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    turn: int
    is_tag: bool


def slot_value_spans(text: str, values: Sequence[str], offset: int = 0) -> list[tuple[int, int]]:
    """Character spans (shifted by `offset`) of each annotated slot value where it occurs in `text` as whole words."""
    return [
        (offset + m.start(), offset + m.end())
        for value in values
        if value.strip()
        for m in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", text, flags=re.IGNORECASE)
    ]


def serialise_history(history: Sequence[Turn]) -> tuple[str, list[_Span], list[tuple[int, int]]]:
    """Source text plus character spans: one tag and one text span per turn, and slot-value spans."""
    parts: list[str] = []
    spans: list[_Span] = []
    slot_spans: list[tuple[int, int]] = []
    pos = 0
    for i, turn in enumerate(history):
        if parts:
            parts.append(" ")
            pos += 1
        tag = f"{turn.speaker}:"
        spans.append(_Span(pos, pos + len(tag), i, True))
        parts.append(tag + " ")
        pos += len(tag) + 1
        spans.append(_Span(pos, pos + len(turn.text), i, False))
        slot_spans += slot_value_spans(turn.text, turn.slot_values, pos)
        parts.append(turn.text)
        pos += len(turn.text)
    return "".join(parts), spans, slot_spans


def encode_source(history: Sequence[Turn], tokenizer: Any, max_tokens: int) -> dict[str, list]:
    """Tokenise the history into at most `max_tokens` ids (EOS included), cut from the left.

    Returns input_ids, src_turn (turn index per token, NO_TURN for EOS), src_is_tag, src_is_salient and
    src_is_template (all false here; decoder-only prompts have template tokens), all of the same length.
    """
    return encode_sources([history], tokenizer, max_tokens)[0]


def encode_sources(histories: Sequence[Sequence[Turn]], tokenizer: Any, max_tokens: int) -> list[dict[str, list]]:
    """Batched `encode_source`: one tokenizer call for all histories."""
    if max_tokens < 2:
        raise ValueError("max_tokens must leave room for at least one token and EOS")
    serialised = [serialise_history(h) for h in histories]
    enc = tokenizer([text for text, _, _ in serialised], add_special_tokens=False, return_offsets_mapping=True)
    return [
        _source_map(ids, offsets, spans, slot_spans, tokenizer.eos_token_id, max_tokens)
        for ids, offsets, (_, spans, slot_spans) in zip(
            enc["input_ids"], enc["offset_mapping"], serialised, strict=True
        )
    ]


def touches_spans(bounds: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Per token, whether any of its characters [start, end) lies in one of `spans` (character ranges [a, b),
    possibly overlapping): bounds [n,2] -> [n] bool, from prefix sums of the covered characters."""
    size = max((b for _, b in spans), default=0) + 1
    delta = np.zeros(size, dtype=np.int64)  # +1 where a span starts, -1 where it ends
    for a, b in spans:
        delta[a] += 1
        delta[b] -= 1
    covered_before = np.concatenate(([0], np.cumsum(np.cumsum(delta) > 0)))  # [size+1] covered characters before each
    ends = np.clip(bounds, 0, size)  # [n,2]: past the last span nothing more is covered
    return covered_before[ends[:, 1]] > covered_before[ends[:, 0]]


def _source_map(
    ids: list[int],
    offsets: list[tuple[int, int]],
    spans: list[_Span],
    slot_spans: list[tuple[int, int]],
    eos: int,
    max_tokens: int,
) -> dict[str, list]:
    # A token's last character decides its span (Metaspace offsets may include the leading space); vectorised,
    # because conversations re-encode every history each round.
    starts = np.fromiter((s.start for s in spans), dtype=np.int64, count=len(spans))  # [spans]
    bounds = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # [n,2] character start, end
    k = np.maximum(np.searchsorted(starts, np.maximum(bounds[:, 0], bounds[:, 1] - 1), side="right") - 1, 0)  # [n]
    span_turn = np.fromiter((s.turn for s in spans), dtype=np.int64, count=len(spans))
    span_tag = np.fromiter((s.is_tag for s in spans), dtype=bool, count=len(spans))
    turn_of: list[int] = span_turn[k].tolist()
    tag_of: list[bool] = span_tag[k].tolist()
    salient_of: list[bool] = (touches_spans(bounds, slot_spans) & ~span_tag[k]).tolist()

    budget = max_tokens - 1  # room for EOS
    keep_from = 0
    if len(ids) > budget:
        # Drop whole turns from the left while that suffices; else cut the last turn's left tokens.
        keep_from = len(ids) - budget
        first_turn = turn_of[keep_from]
        if keep_from > 0 and turn_of[keep_from - 1] == first_turn:
            later = next((k for k in range(keep_from, len(ids)) if turn_of[k] != first_turn), None)
            if later is not None:
                keep_from = later
    return {
        "input_ids": ids[keep_from:] + [eos],
        "src_turn": turn_of[keep_from:] + [NO_TURN],
        "src_is_tag": tag_of[keep_from:] + [False],
        "src_is_salient": salient_of[keep_from:] + [False],
        "src_is_template": [False] * (len(ids) - keep_from + 1),  # an encoder's source has no template tokens
    }
