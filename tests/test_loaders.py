"""Loaders for the MultiWOZ original schema and the ConvLab unified schema, on fixtures and real data."""

from __future__ import annotations

import json
import zipfile

from conftest import shared_path, write_json

from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset


def mw_turn(text, metadata=None, spans=()):
    return {
        "text": text,
        "metadata": metadata if metadata is not None else {},
        "dialog_act": {},
        "span_info": [list(s) for s in spans],
    }


BELIEF = {
    "restaurant": {
        "book": {"booked": [], "people": ""},
        "semi": {"food": "italian", "area": "not mentioned", "pricerange": ""},
    }
}


def multiwoz_fixture():
    return {
        "MUL0001.json": {
            "goal": {"restaurant": {"info": {"food": "italian"}}, "topic": {}, "hotel": {}},
            "log": [
                mw_turn("I want italian food .", spans=[("Restaurant-Inform", "Food", "italian", 2, 2)]),
                mw_turn("Try Pizza Hut .", BELIEF),
                mw_turn("Thanks , bye ."),  # odd number of turns: a trailing user turn makes no example
            ],
        },
        "MUL0002.json": {
            "goal": {},
            "log": [
                mw_turn("Café au lait près du musée ? ☕"),  # unicode
                mw_turn("Désolé , nothing found .", {}),  # empty metadata
                mw_turn("ok"),
                mw_turn("Goodbye ."),
            ],
        },
    }


def test_multiwoz_single_file_with_awkward_dialogues(tmp_path):
    corpus = load_corpus(write_json(tmp_path / "test.json", multiwoz_fixture()))
    assert corpus.format == "multiwoz" and corpus.dialogues == {"test": 2}
    examples = corpus.examples["test"]
    assert [ex.example_id for ex in examples] == ["MUL0001.json/1", "MUL0002.json/1", "MUL0002.json/3"]
    first = examples[0]
    assert [t.speaker for t in first.history] == ["user"] and first.target == "Try Pizza Hut ."
    assert first.belief_state == {"restaurant": {"food": "italian"}}
    assert first.history[0].slot_values == ("italian",)
    assert first.domains == ("restaurant",)
    assert examples[1].history[0].text.startswith("Café") and examples[1].belief_state == {}
    assert [t.speaker for t in examples[2].history] == ["user", "system", "user"]


def test_multiwoz_zip_and_list_files(tmp_path):
    data = multiwoz_fixture()
    with zipfile.ZipFile(tmp_path / "data.json.zip", "w") as zf:
        zf.writestr("data.json", json.dumps(data))
    (tmp_path / "testListFile.txt").write_text("MUL0002.json\n")
    corpus = load_corpus(tmp_path)
    assert corpus.dialogues == {"train": 1, "test": 1}
    assert {ex.dialogue_id for ex in corpus.examples["test"]} == {"MUL0002.json"}


def test_multiwoz_one_file_per_split(tmp_path):
    data = multiwoz_fixture()
    write_json(tmp_path / "train.json", {"MUL0001.json": data["MUL0001.json"]})
    write_json(tmp_path / "val.json", {"MUL0002.json": data["MUL0002.json"]})
    corpus = load_corpus(tmp_path)
    assert corpus.dialogues == {"train": 1, "validation": 1}


def unified_fixture():
    def turns(*texts):
        return [
            {
                "speaker": "user" if i % 2 == 0 else "system",
                "utterance": t,
                "utt_idx": i,
                "dialogue_acts": {"non-categorical": [{"value": "north"}] if "north" in t else []},
            }
            for i, t in enumerate(texts)
        ]

    return [
        {
            "dialogue_id": "d-train-0",
            "data_split": "train",
            "domains": ["chat"],
            "turns": turns("hi there", "hello !", "anything in the north ?", "yes , the north has plenty .", "bye"),
        },
        {"dialogue_id": "d-test-0", "data_split": "test", "domains": [], "turns": turns("how are you ?", "fine 😀")},
    ]


def test_unified_json_and_zip(tmp_path):
    data = unified_fixture()
    corpus = load_corpus(write_json(tmp_path / "dialogues.json", data))
    assert corpus.format == "unified" and corpus.dialogues == {"train": 1, "test": 1}
    assert [ex.turn_index for ex in corpus.examples["train"]] == [1, 3]
    assert corpus.examples["train"][1].history[-1].slot_values == ("north",)
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("data/dialogues.json", json.dumps(data))
    assert load_corpus(tmp_path / "data.zip").stats()["examples"] == {"train": 2, "test": 1}


def test_dataset_tables_lend_validation_from_train(tmp_path):
    data = unified_fixture()
    data.append(dict(data[0], dialogue_id="d-train-1"))
    tables = corpus_to_dataset(load_corpus(write_json(tmp_path / "dialogues.json", data)))
    assert set(tables) == {"train", "validation", "test"}
    assert set(tables["validation"]["dialogue_id"]) == {"d-train-1"}
    assert set(tables["validation"]["split"]) == {"validation"} and set(tables["train"]["dialogue_id"]) == {"d-train-0"}


def test_real_multiwoz_validation_split():
    corpus = load_corpus(shared_path("multiwoz21", "val.json.zip"))
    assert corpus.dialogues == {"validation": 999}
    assert len(corpus.examples["validation"]) == 7365
    assert corpus.db_dir is not None and (corpus.db_dir / "restaurant_db.json").exists()
    with_state = sum(bool(ex.belief_state) for ex in corpus.examples["validation"])
    assert with_state > 7000  # system turns carry the belief state


def test_real_multiwoz_test_split_when_present():
    # The paper's Table 1 set: 1,000 dialogues, 7,372 system turns (not shipped in ../shared).
    corpus = load_corpus(shared_path("multiwoz21", "test.json.zip"))
    assert corpus.dialogues == {"test": 1000} and len(corpus.examples["test"]) == 7372


def test_real_dailydialog():
    corpus = load_corpus(shared_path("dailydialog", "data.zip"))
    assert corpus.format == "unified"
    assert corpus.dialogues == {"train": 11118, "validation": 1000, "test": 1000}
    assert all(ex.history[-1].speaker == "user" for ex in corpus.examples["test"][:500])
