"""Property tests of the data layer: any valid dialogue round-trips through loading and serialisation
with its turns intact and in order, and truncation never cuts the current user turn."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aft_core.data.corpus import load_corpus
from aft_core.data.examples import NO_TURN, Turn, encode_source, serialise_history
from aft_core.models import train_tokenizer

WORDS = [
    "hello",
    "i",
    "need",
    "a",
    "cheap",
    "hotel",
    "in",
    "the",
    "north",
    "thanks",
    "what",
    "area",
    "?",
    ".",
    "café",
    "naïve",
    "price",
    "range",
    "book",
    "it",
    "for",
    "two",
    "people",
    "müller",
    "street",
]
word = st.sampled_from(WORDS)
utterance = st.lists(word, min_size=1, max_size=12).map(" ".join)
dialogue = st.lists(utterance, min_size=2, max_size=9)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        f"{speaker}: {' '.join(WORDS[i:] + WORDS[:i])}" for i in range(len(WORDS)) for speaker in ("user", "system")
    ]
    return train_tokenizer(texts * 5, 300)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=dialogue)
def test_any_dialogue_round_trips_through_loading(turns):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.json"
        path.write_text(
            json.dumps({"d0": {"goal": {}, "log": [{"text": t, "metadata": {}} for t in turns]}}), encoding="utf-8"
        )
        examples = load_corpus(path).examples["train"]
    system_turns = len(turns) // 2
    assert len(examples) == system_turns
    last = examples[-1]
    rebuilt = [t.text for t in last.history] + [last.target]
    assert rebuilt == turns[: 2 * system_turns]  # every turn, in order
    assert [t.speaker for t in last.history] == ["user", "system"] * (system_turns - 1) + ["user"]
    text, spans, _ = serialise_history(last.history)
    assert [text[s.start : s.end] for s in spans if not s.is_tag] == [t.text for t in last.history]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(utterance, min_size=1, max_size=9).filter(lambda ts: len(ts) % 2 == 1),
    budget=st.integers(min_value=2, max_value=60),
)
def test_truncation_never_cuts_the_current_user_turn(tokenizer, turns, budget):
    history = [Turn("user" if i % 2 == 0 else "system", t) for i, t in enumerate(turns)]
    full = encode_source(history, tokenizer, 10_000)
    cut = encode_source(history, tokenizer, budget)
    assert len(cut["input_ids"]) <= budget and cut["src_turn"][-1] == NO_TURN
    current = len(history) - 1
    current_tokens = sum(1 for t in full["src_turn"] if t == current)
    kept = sum(1 for t in cut["src_turn"] if t == current)
    if current_tokens <= budget - 1:
        assert kept == current_tokens  # the current user turn is whole
        kept_turns = [t for t in cut["src_turn"][:-1]]
        assert kept_turns == sorted(kept_turns)  # turns stay in order
        # Only whole earlier turns are dropped: each kept earlier turn has all its tokens.
        for turn in set(kept_turns) - {current}:
            assert kept_turns.count(turn) == full["src_turn"].count(turn)
    else:
        assert kept == budget - 1 and set(cut["src_turn"][:-1]) == {current}  # only its leftmost tokens go
    # The kept tokens are the end of the full source.
    assert cut["input_ids"][:-1] == full["input_ids"][len(full["input_ids"]) - len(cut["input_ids"]) : -1]
