"""History serialisation and the per-token source map, including left truncation."""

from __future__ import annotations

import pytest

from aft_core.data.examples import NO_TURN, Turn, encode_source, serialise_history
from aft_core.models import train_tokenizer

HISTORY = (
    Turn("user", "i need a cheap restaurant in the north .", ("cheap", "north")),
    Turn("system", "what food would you like ?"),
    Turn("user", "italian please .", ("italian",)),
)


@pytest.fixture(scope="module")
def tokenizer():
    words = "i need a cheap restaurant in the north what food would you like italian please user: system: . ?".split()
    texts = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 20
    return train_tokenizer(texts, 120)


def test_serialisation_order_and_tags():
    text, spans, slots = serialise_history(HISTORY)
    assert text == (
        "user: i need a cheap restaurant in the north . system: what food would you like ? user: italian please ."
    )
    assert [text[a:b] for a, b in slots] == ["cheap", "north", "italian"]
    assert [(s.turn, s.is_tag) for s in spans][:3] == [(0, True), (0, False), (1, True)]


def test_source_map_marks_turns_tags_and_slot_values(tokenizer):
    enc = encode_source(HISTORY, tokenizer, 100)
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[-1] == "</s>" and enc["src_turn"][-1] == NO_TURN
    assert len({len(v) for v in enc.values()}) == 1
    salient = [t.strip("▁") for t, s in zip(tokens, enc["src_is_salient"], strict=True) if s]
    assert "".join(salient) == "cheapnorthitalian"
    tags = [t for t, is_tag in zip(tokens, enc["src_is_tag"], strict=True) if is_tag]
    assert "".join(tags).replace("▁", "") == "user:system:user:"
    assert sorted(set(enc["src_turn"][:-1])) == [0, 1, 2]


def test_left_truncation_drops_oldest_whole_turns(tokenizer):
    full = encode_source(HISTORY, tokenizer, 100)
    last_turn_len = full["src_turn"].count(2)
    cut = encode_source(HISTORY, tokenizer, last_turn_len + 3)  # room for turn 2 and part of turn 1
    assert set(cut["src_turn"][:-1]) == {2}  # a partial turn 1 is dropped whole
    assert cut["input_ids"][:-1] == full["input_ids"][-1 - last_turn_len : -1]


def test_current_turn_longer_than_budget_keeps_its_end(tokenizer):
    enc = encode_source(HISTORY, tokenizer, 4)
    assert len(enc["input_ids"]) == 4 and set(enc["src_turn"][:-1]) == {2}
    full = encode_source(HISTORY, tokenizer, 100)
    assert enc["input_ids"][:-1] == full["input_ids"][-4:-1]
