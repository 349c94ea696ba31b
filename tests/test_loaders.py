"""Loaders for the MultiWOZ original schema and the ConvLab unified schema, on fixtures and real data."""

from __future__ import annotations

import json
import zipfile

import pytest
from conftest import shared_path, write_json

from aft_core.data.corpus import load_corpus
from aft_core.data.dataset import corpus_to_dataset
from aft_core.errors import AftInputError


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


def test_multiwoz_as_released_json_list_files_and_tables_beside_data_json(tmp_path):
    """MultiWOZ 2.0 and 2.4 name their lists valListFile.json / testListFile.json (one id per line; a JSON list is
    read too), and every release keeps <domain>_db.json beside data.json."""
    write_json(tmp_path / "data.json", multiwoz_fixture())
    (tmp_path / "valListFile.json").write_text('["MUL0001.json"]')
    (tmp_path / "testListFile.json").write_text("MUL0002.json\n")
    write_json(tmp_path / "restaurant_db.json", [{"name": "pizza hut", "food": "italian"}])
    corpus = load_corpus(tmp_path)
    assert corpus.dialogues == {"validation": 1, "test": 1} and corpus.db_dir == tmp_path
    (tmp_path / "db").mkdir()  # a db/ folder, where there is one, is the corpus's tables
    assert load_corpus(tmp_path).db_dir == tmp_path / "db"
    (tmp_path / "valListFile.json").write_text('["MUL0009.json"]')
    with pytest.raises(AftInputError, match="names dialogue 'MUL0009.json'") as e:
        load_corpus(tmp_path)
    assert e.value.where.endswith("valListFile.json")


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


# ConvLab's unified MultiWOZ spells 2.1's slots its own way (book day, price range, leave at)
UNIFIED_SPELLING = {"pricerange": "price range", "leaveAt": "leave at", "arriveBy": "arrive by"}
UNIFIED_BOOK_SPELLING = {"day": "book day", "people": "book people", "stay": "book stay", "time": "book time"}


def test_unified_multiwoz_reads_its_slot_names_and_the_venue_tables_in_its_zip(tmp_path):
    """ConvLab's unified MultiWOZ data.zip: states under its slot names, categorical values, data/<domain>_db.json."""
    from aft_core.data.venues import VenueDB, entity_correct

    state = {"hotel": {"name": "", "price range": "cheap", "type": "hotel", "book day": "", "book people": "6"}}
    dialogue = {
        "dialogue_id": "multiwoz21-train-0",
        "data_split": "train",
        "domains": ["hotel"],
        "turns": [
            {
                "speaker": "user",
                "utterance": "a cheap place to stay , a hotel for 6",
                "dialogue_acts": {
                    "categorical": [{"slot": "price range", "value": "cheap"}, {"slot": "parking", "value": "yes"}],
                    "non-categorical": [{"slot": "type", "value": "hotel", "start": 23, "end": 28}],
                    "binary": [],
                },
                "state": state,
            },
            {"speaker": "system", "utterance": "the cambridge belfry is cheap .", "dialogue_acts": {}},
        ],
    }
    hotels = [
        {"name": "the cambridge belfry", "pricerange": "cheap", "type": "hotel"},
        {"name": "the gonville hotel", "pricerange": "expensive", "type": "hotel"},
    ]
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("data/dialogues.json", json.dumps([dialogue]))
        zf.writestr("data/hotel_db.json", json.dumps(hotels))
        zf.writestr("data/taxi_db.json", json.dumps({"taxi_colors": ["black"]}))
    corpus = load_corpus(tmp_path / "data.zip")
    (example,) = corpus.examples["train"]
    assert example.belief_state == {"hotel": {"pricerange": "cheap", "type": "hotel", "people": "6"}}
    assert example.history[0].slot_values == ("hotel", "cheap")  # "yes" (parking) is not written in the turn
    assert corpus.db_dir == tmp_path / "data.zip"
    db = VenueDB.load(corpus.db_dir)
    assert set(db.venues) == {"hotel"} and "taxi_db.json" in db.skipped["taxi"]
    # the price range is a constraint, not dropped for want of a field of that name
    assert entity_correct(db, "try the cambridge belfry", example.belief_state)
    assert not entity_correct(db, "try the gonville hotel", example.belief_state)


def test_real_multiwoz_states_under_the_unified_names_give_the_21_states(tmp_path):
    """The real 2.1 belief states of 120 dialogues, written under ConvLab's unified slot names: read back as 2.1's."""
    from aft_core.data.corpus import multiwoz_belief_state, read_json

    source = shared_path("multiwoz21", "val.json.zip")
    dialogues = dict(list(read_json(source).items())[:120])
    unified = []
    for dialogue_id, dialogue in dialogues.items():
        turns = []
        for i, turn in enumerate(dialogue["log"]):
            state: dict[str, dict[str, str]] = {}
            if i % 2 == 0 and i + 1 < len(dialogue["log"]):
                metadata = dialogue["log"][i + 1].get("metadata") or {}
                for domain, parts in metadata.items():
                    semi = multiwoz_belief_state({domain: {"semi": parts.get("semi")}}).get(domain, {})
                    book = multiwoz_belief_state({domain: {"book": parts.get("book")}}).get(domain, {})
                    state[domain] = {UNIFIED_SPELLING.get(k, k): v for k, v in semi.items()} | {
                        UNIFIED_BOOK_SPELLING.get(k, k): v for k, v in book.items()
                    }
            speaker = "user" if i % 2 == 0 else "system"
            turns.append({"speaker": speaker, "utterance": turn["text"], "dialogue_acts": {}, "state": state})
        unified.append({"dialogue_id": dialogue_id, "data_split": "validation", "domains": [], "turns": turns})
    write_json(tmp_path / "val.json", dialogues)
    original = load_corpus(tmp_path / "val.json").examples["validation"]
    converted = load_corpus(write_json(tmp_path / "dialogues.json", unified)).examples["validation"]
    assert [ex.belief_state for ex in converted] == [ex.belief_state for ex in original]
    assert sum(bool(ex.belief_state) for ex in converted) > 0.9 * len(converted)


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


# --- MultiWOZ 2.2 and SGD: the schema-guided layout ---------------------------------------------------


def sg_turn(speaker, text, service="restaurant", spans=(), state=None, actions=(), turn_id=None, copy_from=False):
    """One turn as MultiWOZ 2.2 ships it (spans with their `value`) or SGD (`actions`, spans without value)."""
    slots = [
        {"slot": f"{service}-x", "start": text.index(v), "exclusive_end": text.index(v) + len(v), "value": v}
        for v in spans
    ]
    if copy_from:  # MultiWOZ 2.2's copied values carry no span
        slots.append({"copy_from": "taxi-departure", "slot": f"{service}-name", "value": ["pizza hut"]})
    frame = {"actions": [dict(a) for a in actions], "service": service, "slots": slots}
    if state is not None:
        frame["state"] = {"active_intent": "find", "requested_slots": [], "slot_values": state}
    turn = {"frames": [frame], "speaker": speaker, "utterance": text}
    if turn_id is not None:
        turn["turn_id"] = turn_id
    return turn


def multiwoz22_fixture(root):
    """A MultiWOZ 2.2 folder: train/dev/test of dialogues_001.json, dialog_acts.json, db/."""
    train = [
        {
            "dialogue_id": "MUL0001.json",
            "services": ["restaurant"],
            "turns": [
                sg_turn(
                    "USER",
                    "I want cheap italian food .",
                    spans=["italian"],
                    turn_id="0",
                    copy_from=True,
                    state={"restaurant-food": ["italian"], "restaurant-pricerange": ["cheap", "inexpensive"]},
                ),
                sg_turn("SYSTEM", "Try Pizza Hut in the centre .", spans=["Pizza Hut"], turn_id="1"),
                sg_turn(
                    "USER",
                    "Book it for 2 on monday .",
                    turn_id="2",
                    state={
                        "restaurant-food": ["italian"],
                        "restaurant-bookday": ["monday"],
                        "restaurant-bookpeople": ["2"],
                    },
                ),
                sg_turn("SYSTEM", "Booked , reference AB12 .", turn_id="3"),
            ],
        }
    ]
    dev = [dict(train[0], dialogue_id="MUL0002.json")]
    test = [dict(train[0], dialogue_id="MUL0003.json")]
    for split, dialogues in (("train", train), ("dev", dev), ("test", test)):
        (root / split).mkdir(parents=True)
        write_json(root / split / "dialogues_001.json", dialogues)
    acts = {"Restaurant-Inform": [["area", "centre"]]}
    write_json(
        root / "dialog_acts.json",
        {"MUL0001.json": {"1": {"dialog_act": acts, "span_info": [["Restaurant-Inform", "area", "centre", 23, 29]]}}},
    )
    (root / "db").mkdir()
    write_json(root / "db" / "restaurant_db.json", [{"name": "pizza hut", "food": "italian", "pricerange": "cheap"}])
    return root


def test_multiwoz22_as_shipped_loads_its_splits_spans_acts_and_states(tmp_path):
    root = multiwoz22_fixture(tmp_path / "MultiWOZ_2.2")
    corpus = load_corpus(root)
    assert corpus.format == "schema-guided"
    assert corpus.dialogues == {"train": 1, "validation": 1, "test": 1} and corpus.db_dir == root / "db"
    first, second = corpus.examples["train"]
    assert [ex.example_id for ex in corpus.examples["train"]] == ["MUL0001.json/1", "MUL0001.json/3"]
    assert first.history[0].slot_values == ("italian",)  # its span; the copied value has none
    assert second.history[1].slot_values == ("Pizza Hut", "centre")  # the span, then dialog_acts.json's categorical
    # the state of the user turn before each system turn, 2.2's names read as 2.1's (the venue db's fields)
    assert first.belief_state == {"restaurant": {"food": "italian", "pricerange": "cheap"}}
    assert second.belief_state == {"restaurant": {"food": "italian", "day": "monday", "people": "2"}}
    assert first.domains == ("restaurant",) and second.target == "Booked , reference AB12 ."
    # one split folder, or one dialogue file: the split from the folder's name, the db beside the split folders
    dev = load_corpus(root / "dev")
    assert dev.dialogues == {"validation": 1} and dev.db_dir == root / "db"
    assert load_corpus(root / "test" / "dialogues_001.json").dialogues == {"test": 1}
    # beside MultiWOZ 2.1's data.json (whose goals conversations need) the 2.1 file is read
    write_json(root / "data.json", multiwoz_fixture())
    assert load_corpus(root).format == "multiwoz"
    (root / "data.json").unlink()
    assert load_corpus(root / "test" / "dialogues_001.json").examples["test"][1].history[1].slot_values == (
        "Pizza Hut",
    )  # dialog_acts.json names MUL0001 only


def test_sgd_dialogues_take_their_values_from_spans_and_acts(tmp_path):
    """SGD: services like Restaurants_1, spans without a value, acts with values, states without a prefix."""
    inform = {"act": "INFORM", "slot": "city", "values": ["San Jose"]}
    dialogue = {
        "dialogue_id": "1_00000",
        "services": ["Restaurants_1"],
        "turns": [
            sg_turn(
                "USER", "A table in San Jose please", "Restaurants_1", actions=[inform], state={"city": ["San Jose"]}
            ),
            sg_turn(
                "SYSTEM",
                "What time? Sakoon has one.",
                "Restaurants_1",
                spans=["Sakoon"],
                actions=[{"act": "REQUEST", "slot": "time", "values": []}, {"act": "OFFER", "values": ["Mission"]}],
            ),
        ],
    }
    del dialogue["turns"][1]["frames"][0]["slots"][0]["value"]  # SGD gives the span alone
    (tmp_path / "sgd" / "train").mkdir(parents=True)
    write_json(tmp_path / "sgd" / "train" / "dialogues_001.json", [dialogue])
    (example,) = load_corpus(tmp_path / "sgd").examples["train"]
    assert example.history[0].slot_values == ("San Jose",)
    assert example.belief_state == {"Restaurants_1": {"city": "San Jose"}} and example.domains == ("Restaurants_1",)
    assert example.target == "What time? Sakoon has one."


def test_schema_guided_input_that_cannot_be_read_names_the_file_and_field(tmp_path):
    root = multiwoz22_fixture(tmp_path / "mw22")
    (root / "odd").mkdir()
    write_json(root / "odd" / "dialogues_001.json", [])
    with pytest.raises(AftInputError, match="split of a folder named 'odd'") as e:
        load_corpus(root / "odd")
    assert "dev" in e.value.fix
    write_json(root / "test" / "dialogues_002.json", {"not": "a list"})
    with pytest.raises(AftInputError, match="non-empty list of dialogues") as e:
        load_corpus(root)
    assert e.value.where.endswith("dialogues_002.json")
    (root / "test" / "dialogues_002.json").unlink()
    bad = json.loads((root / "test" / "dialogues_001.json").read_text())
    bad[0]["turns"][1]["speaker"] = "WIZARD"
    write_json(root / "test" / "dialogues_001.json", bad)
    with pytest.raises(AftInputError, match="speaker must be") as e:
        load_corpus(root)
    assert e.value.field == "MUL0003.json.turns[1].speaker"
    good = json.loads((root / "train" / "dialogues_001.json").read_text())
    write_json(root / "test" / "dialogues_001.json", good)  # MUL0001 in train and in test
    with pytest.raises(AftInputError, match="appears twice"):
        load_corpus(root)


def multiwoz21_as_multiwoz22(dialogues: dict, root, split: str):
    """MultiWOZ 2.1 dialogues written in MultiWOZ 2.2's layout: each 2.1 span value found in its turn's text becomes
    a frame span, and a system turn's 2.1 belief state becomes the state of the user turn before it, under 2.2's
    slot names (`<domain>-<slot>`, booking slots `<domain>-book<slot>`)."""
    from aft_core.data.corpus import NON_DOMAIN_GOAL_KEYS, multiwoz_belief_state

    out = []
    for dialogue_id, dialogue in dialogues.items():
        log = dialogue["log"]
        turns = []
        for i, turn in enumerate(log):
            text = turn["text"]
            spans = [str(s[2]) for s in turn.get("span_info") or [] if str(s[2]).strip()]
            slots = []
            for value in dict.fromkeys(spans):
                at = text.lower().find(value.lower())
                if at >= 0:
                    slots.append({"slot": "x", "start": at, "exclusive_end": at + len(value), "value": value})
            frames = [{"actions": [], "service": "x", "slots": slots}]
            if i % 2 == 0 and i + 1 < len(log):
                metadata = log[i + 1].get("metadata") or {}
                semi = multiwoz_belief_state({d: {"semi": p.get("semi")} for d, p in metadata.items()})
                book = multiwoz_belief_state({d: {"book": p.get("book")} for d, p in metadata.items()})
                for domain in set(semi) | set(book):
                    values = {f"{domain}-{s.lower()}": [v] for s, v in semi.get(domain, {}).items()}
                    values |= {f"{domain}-book{s}": [v] for s, v in book.get(domain, {}).items()}
                    frames.append(
                        {
                            "actions": [],
                            "service": domain,
                            "slots": [],
                            "state": {"active_intent": "NONE", "requested_slots": [], "slot_values": values},
                        }
                    )
            turns.append(
                {"frames": frames, "speaker": "USER" if i % 2 == 0 else "SYSTEM", "turn_id": str(i), "utterance": text}
            )
        goal = dialogue.get("goal") or {}
        services = [d for d, v in goal.items() if d not in NON_DOMAIN_GOAL_KEYS and isinstance(v, dict) and v]
        out.append({"dialogue_id": dialogue_id, "services": services, "turns": turns})
    (root / split).mkdir(parents=True)
    write_json(root / split / "dialogues_001.json", out)


def test_real_multiwoz_dialogues_in_the_22_layout_give_the_21_loaders_examples(tmp_path):
    """The same real dialogues through both loaders: the same examples (histories, targets, states, domains), and
    the slot values of every turn that are written in its text; the data checks pass on them."""
    from aft_core.data.corpus import read_json
    from data_checks.suites import run_checks

    source = shared_path("multiwoz21", "val.json.zip")
    dialogues = dict(list(read_json(source).items())[:120])
    write_json(tmp_path / "val.json", dialogues)
    original = load_corpus(tmp_path / "val.json").examples["validation"]
    multiwoz21_as_multiwoz22(dialogues, tmp_path / "mw22", "dev")
    (tmp_path / "mw22" / "db").symlink_to(source.parent / "db")
    corpus = load_corpus(tmp_path / "mw22")
    converted = corpus.examples["validation"]
    assert corpus.db_dir is not None and len(converted) == len(original) > 800
    for a, b in zip(original, converted, strict=True):
        assert (a.example_id, a.target, a.domains, a.belief_state) == (
            b.example_id,
            b.target,
            b.domains,
            b.belief_state,
        )
        assert [(t.speaker, t.text) for t in a.history] == [(t.speaker, t.text) for t in b.history]
        for ta, tb in zip(a.history, b.history, strict=True):
            written = {v.strip().lower() for v in ta.slot_values if v.strip() and v.lower() in ta.text.lower()}
            assert {v.lower() for v in tb.slot_values} == written
    assert sum(bool(ex.belief_state) for ex in converted) > 0.9 * len(converted)
    assert run_checks(corpus)["success"]
