"""The Hugging Face hub's parquet copies of MultiWOZ 2.2, SGD and DailyDialog: written here by `datasets` with the
hub copies' own features (records stored column-wise, ClassLabel speakers, MultiWOZ 2.2's swapped span ends), they
load as the same examples as the JSON releases."""

import shutil

import pytest
from conftest import shared_path, write_json
from test_loaders import multiwoz21_as_multiwoz22, multiwoz22_fixture

from aft_core.data.corpus import load_corpus, read_json
from aft_core.errors import AftInputError

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Features, Sequence, Value  # noqa: E402
from datasets.features import List as FeatureList  # noqa: E402

# multi_woz_v22's features as its hub script declares them
MULTIWOZ22 = Features(
    {
        "dialogue_id": Value("string"),
        "services": Sequence(Value("string")),
        "turns": Sequence(
            {
                "turn_id": Value("string"),
                "speaker": ClassLabel(names=["USER", "SYSTEM"]),
                "utterance": Value("string"),
                "frames": Sequence(
                    {
                        "service": Value("string"),
                        "state": {
                            "active_intent": Value("string"),
                            "requested_slots": Sequence(Value("string")),
                            "slots_values": Sequence(
                                {"slots_values_name": Value("string"), "slots_values_list": Sequence(Value("string"))}
                            ),
                        },
                        "slots": Sequence(
                            {
                                "slot": Value("string"),
                                "value": Value("string"),
                                "start": Value("int32"),
                                "exclusive_end": Value("int32"),
                                "copy_from": Value("string"),
                                "copy_from_value": Sequence(Value("string")),
                            }
                        ),
                    }
                ),
                "dialogue_acts": Features(
                    {
                        "dialog_act": Sequence(
                            {
                                "act_type": Value("string"),
                                "act_slots": Sequence(
                                    Features({"slot_name": Value("string"), "slot_value": Value("string")})
                                ),
                            }
                        ),
                        "span_info": Sequence(
                            {
                                "act_type": Value("string"),
                                "act_slot_name": Value("string"),
                                "act_slot_value": Value("string"),
                                "span_start": Value("int32"),
                                "span_end": Value("int32"),
                            }
                        ),
                    }
                ),
            }
        ),
    }
)
# schema_guided_dstc8's (the parts a loader reads)
SGD = Features(
    {
        "dialogue_id": Value("string"),
        "services": Sequence(Value("string")),
        "turns": Sequence(
            {
                "speaker": ClassLabel(names=["USER", "SYSTEM"]),
                "utterance": Value("string"),
                "frames": Sequence(
                    {
                        "service": Value("string"),
                        "slots": Sequence(
                            {"slot": Value("string"), "start": Value("int32"), "exclusive_end": Value("int32")}
                        ),
                        "state": {
                            "active_intent": Value("string"),
                            "requested_slots": Sequence(Value("string")),
                            "slot_values": Sequence(
                                {"slot_name": Value("string"), "slot_value_list": Sequence(Value("string"))}
                            ),
                        },
                        "actions": Sequence(
                            {
                                "act": ClassLabel(names=["AFFIRM", "INFORM", "OFFER", "REQUEST"]),
                                "slot": Value("string"),
                                "values": Sequence(Value("string")),
                                "canonical_values": Sequence(Value("string")),
                            }
                        ),
                    }
                ),
            }
        ),
    }
)
DAILY_DIALOG = Features(
    {
        "dialog": Sequence(Value("string")),
        "act": Sequence(ClassLabel(names=["__dummy__", "inform", "question", "directive", "commissive"])),
        "emotion": Sequence(ClassLabel(names=["no emotion", "anger", "disgust", "fear", "happiness", "sadness"])),
    }
)


def columnar(value, feature):
    """Row-wise records -> the column-wise storage `datasets` gives a Sequence of records, as in the hub's files."""
    if isinstance(feature, dict):
        if isinstance(value, list):
            return {
                k: [columnar(v.get(k), sub.feature if isinstance(sub, FeatureList) else sub) for v in value]
                for k, sub in feature.items()
            }
        return {k: columnar(value.get(k), sub) for k, sub in feature.items()}
    if isinstance(feature, FeatureList) and isinstance(value, list):
        return [columnar(v, feature.feature) for v in value]
    return value


def write_parquet(rows, features, file):
    file.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list([columnar(r, features) for r in rows], features=features).to_parquet(str(file))


def hub_row(dialogue, acts, active_only=False):
    """One MultiWOZ 2.2 dialogue as the hub's multi_woz_v22 script yields it: ClassLabel speakers, the state's slot
    values as (name, list) records, span ends and act slot names/values swapped as that script swaps them, and
    in `v2.2_active_only` only the frames with an active intent."""
    mapped = acts.get(dialogue["dialogue_id"], {})

    def frame(f):
        state = f.get("state")
        return {
            "service": f["service"],
            "state": {
                "active_intent": state["active_intent"] if state else "",
                "requested_slots": state["requested_slots"] if state else [],
                "slots_values": [
                    {"slots_values_name": k, "slots_values_list": v}
                    for k, v in (state or {}).get("slot_values", {}).items()
                ],
            },
            "slots": [
                {
                    "slot": s["slot"],
                    "value": "" if "copy_from" in s else s["value"],
                    "start": s.get("exclusive_end", -1),
                    "exclusive_end": s.get("start", -1),
                    "copy_from": s.get("copy_from", ""),
                    "copy_from_value": s["value"] if "copy_from" in s else [],
                }
                for s in f["slots"]
            ],
        }

    def turn_acts(turn_id):
        entry = mapped.get(turn_id, {})
        return {
            "dialog_act": [
                {"act_type": a, "act_slots": [{"slot_name": v, "slot_value": n} for n, v in pairs]}
                for a, pairs in entry.get("dialog_act", {}).items()
            ],
            "span_info": [
                dict(zip(["act_type", "act_slot_name", "act_slot_value", "span_start", "span_end"], s, strict=True))
                for s in entry.get("span_info", [])
            ],
        }

    return {
        "dialogue_id": dialogue["dialogue_id"],
        "services": dialogue["services"],
        "turns": [
            {
                "turn_id": t["turn_id"],
                "speaker": ["USER", "SYSTEM"].index(t["speaker"]),
                "utterance": t["utterance"],
                "frames": [
                    frame(f)
                    for f in t["frames"]
                    if not active_only or f.get("state", {}).get("active_intent", "NONE") != "NONE"
                ],
                "dialogue_acts": turn_acts(t["turn_id"]),
            }
            for t in dialogue["turns"]
        ],
    }


def multiwoz22_on_the_hub(release, out, config="v2.2", layout="data"):
    """The MultiWOZ 2.2 release folder `release` written as the hub's parquet copy under `out`: `data` files
    (`data/train-00000-of-00001.parquet`) or the parquet conversion's `<config>/<split>/0000.parquet`."""
    acts = read_json(release / "dialog_acts.json") if (release / "dialog_acts.json").exists() else {}
    for folder, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        if not (release / folder).is_dir():
            continue
        rows = [
            hub_row(d, acts, active_only=config.endswith("active_only"))
            for f in sorted((release / folder).glob("dialogues_*.json"))
            for d in read_json(f)
        ]
        file = (
            out / "data" / f"{split}-00000-of-00001.parquet"
            if layout == "data"
            else out / config / split / "0000.parquet"
        )
        write_parquet(rows, MULTIWOZ22, file)
    return out


def test_multiwoz22_hub_copy_loads_as_the_release(tmp_path):
    release = multiwoz22_fixture(tmp_path / "MultiWOZ_2.2")
    hub = multiwoz22_on_the_hub(release, tmp_path / "hub")
    corpus, expected = load_corpus(hub), load_corpus(release)
    assert corpus.format == "schema-guided" and corpus.dialogues == expected.dialogues
    assert corpus.examples == expected.examples  # spans (their swapped ends undone), span_info, states, speakers
    first, second = corpus.examples["train"]
    assert second.history[1].slot_values == ("Pizza Hut", "centre")
    assert first.belief_state == {"restaurant": {"food": "italian", "pricerange": "cheap"}}
    # one split file; the parquet conversion's <config>/<split>/0000.parquet; a db/ put beside the download
    assert load_corpus(hub / "data" / "test-00000-of-00001.parquet").dialogues == {"test": 1}
    converted = multiwoz22_on_the_hub(release, tmp_path / "converted", layout="config")
    assert load_corpus(converted / "v2.2").examples == expected.examples
    shutil.copytree(release / "db", converted / "db")
    assert load_corpus(converted / "v2.2").db_dir == converted / "db"
    # the hub's default configuration keeps only frames with an active intent: a system turn's spans are gone
    multiwoz22_on_the_hub(release, converted, config="v2.2_active_only", layout="config")
    active = load_corpus(converted / "v2.2_active_only").examples["train"]
    assert [ex.target for ex in active] == [ex.target for ex in expected.examples["train"]]
    assert active[0].history[0].slot_values == ("italian",) and active[1].history[1].slot_values == ("centre",)
    with pytest.raises(AftInputError, match="split '[a-z]+' has files in two folders") as e:
        load_corpus(converted)  # both configurations
    assert "one configuration" in e.value.fix


def test_sgd_and_daily_dialog_hub_copies(tmp_path):
    inform = {"act": 1, "slot": "city", "values": ["San Jose"], "canonical_values": ["San Jose"]}
    turns = [
        {
            "speaker": 0,
            "utterance": "A table in San Jose please",
            "frames": [
                {
                    "service": "Restaurants_1",
                    "slots": [],
                    "state": {
                        "active_intent": "FindRestaurants",
                        "requested_slots": [],
                        "slot_values": [{"slot_name": "city", "slot_value_list": ["San Jose"]}],
                    },
                    "actions": [inform],
                }
            ],
        },
        {
            "speaker": 1,
            "utterance": "What time? Sakoon has one.",
            "frames": [
                {
                    "service": "Restaurants_1",
                    "slots": [{"slot": "restaurant_name", "start": 11, "exclusive_end": 17}],
                    "state": {"active_intent": "", "requested_slots": [], "slot_values": []},
                    "actions": [{"act": 3, "slot": "time", "values": [], "canonical_values": []}],
                }
            ],
        },
    ]
    write_parquet(
        [{"dialogue_id": "1_00000", "services": ["Restaurants_1"], "turns": turns}],
        SGD,
        tmp_path / "sgd" / "train" / "0000.parquet",
    )
    (example,) = load_corpus(tmp_path / "sgd").examples["train"]
    assert example.history[0].slot_values == ("San Jose",) and example.history[0].speaker == "user"
    assert example.belief_state == {"Restaurants_1": {"city": "San Jose"}}
    assert example.target == "What time? Sakoon has one."

    rows = {
        split: [{"dialog": ["Hi , Jim . ", "Hello ! ", "Coffee ? ", "Yes ."], "act": [1, 2, 3, 4], "emotion": [0] * 4}]
        for split in ("train", "validation", "test")
    }
    for split, split_rows in rows.items():
        write_parquet(split_rows, DAILY_DIALOG, tmp_path / "dd" / f"{split}-00000-of-00001.parquet")
    corpus = load_corpus(tmp_path / "dd")
    assert corpus.format == "unified" and corpus.dialogues == {"train": 1, "validation": 1, "test": 1}
    first, second = corpus.examples["test"]
    assert [(t.speaker, t.text) for t in second.history] == [
        ("user", "Hi , Jim ."),
        ("system", "Hello !"),
        ("user", "Coffee ?"),
    ]
    assert (first.target, second.target, second.dialogue_id) == ("Hello !", "Yes .", "test-0")


def test_hub_copies_that_cannot_be_read_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(AftInputError, match="not a readable parquet file") as e:
        load_corpus(tmp_path / "broken")
    assert e.value.where.endswith("train-00000-of-00001.parquet")
    write_parquet(
        [{"dialog": ["a", "b"]}], Features({"dialog": Sequence(Value("string"))}), tmp_path / "x" / "0000.parquet"
    )
    with pytest.raises(AftInputError, match="names no split"):
        load_corpus(tmp_path / "x")
    write_parquet([{"text": "a"}], Features({"text": Value("string")}), tmp_path / "other" / "train.parquet")
    with pytest.raises(AftInputError, match="none of 'turns'") as e:
        load_corpus(tmp_path / "other")
    assert "multi_woz_v22" in e.value.fix
    bad = [{"dialog": ["only the user speaks"], "act": [1], "emotion": [0]}]
    write_parquet(bad, DAILY_DIALOG, tmp_path / "dd" / "train.parquet")
    with pytest.raises(AftInputError, match="no system turn"):
        load_corpus(tmp_path / "dd" / "train.parquet")


def test_real_multiwoz_dialogues_in_the_hub_copy_give_the_releases_examples(tmp_path):
    """120 real MultiWOZ dialogues in 2.2's JSON layout and in the hub's parquet copy: the same examples."""
    source = shared_path("multiwoz21", "val.json.zip")
    dialogues = dict(list(read_json(source).items())[:120])
    multiwoz21_as_multiwoz22(dialogues, tmp_path / "mw22", "dev")
    hub = multiwoz22_on_the_hub(tmp_path / "mw22", tmp_path / "hub")
    expected = load_corpus(tmp_path / "mw22").examples["validation"]
    assert load_corpus(hub).examples["validation"] == expected and len(expected) > 800


def test_real_daily_dialog_in_the_hub_copy_gives_the_unified_examples(tmp_path):
    """The first 60 dialogues of each split of the shared (unified) DailyDialog, written as the hub's daily_dialog
    rows: the same histories and targets."""
    unified = read_json(shared_path("dailydialog", "data.zip"), "data/dialogues.json")
    kept: dict[str, list] = {}
    for d in unified:
        split = d["data_split"]
        if len(kept.setdefault(split, [])) < 60:
            kept[split].append(d)
    (tmp_path / "unified").mkdir()
    write_json(tmp_path / "unified" / "dialogues.json", [d for ds in kept.values() for d in ds])
    expected = load_corpus(tmp_path / "unified" / "dialogues.json").examples
    for split, ds in kept.items():
        rows = [{"dialog": [t["utterance"] + " " for t in d["turns"]], "act": [], "emotion": []} for d in ds]
        write_parquet(rows, DAILY_DIALOG, tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet")
    corpus = load_corpus(tmp_path / "hub")
    assert set(corpus.examples) == set(expected) == {"train", "validation", "test"}
    for split, examples in corpus.examples.items():
        pairs = zip(examples, expected[split], strict=True)
        assert all(
            [(t.speaker, t.text) for t in a.history] == [(t.speaker, t.text) for t in b.history]
            and a.target == b.target
            for a, b in pairs
        )
    assert corpus.stats()["dialogues"] == {"train": 60, "validation": 60, "test": 60}


def test_a_save_to_disk_folder_loads_as_the_parquet_copy(tmp_path):
    """`load_dataset(...).save_to_disk(DIR)` leaves train/ validation/ test/ folders of Arrow stream files: read as
    the parquet copy is."""
    release = multiwoz22_fixture(tmp_path / "MultiWOZ_2.2")
    acts = read_json(release / "dialog_acts.json")
    splits = {}
    for folder, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        rows = [columnar(hub_row(d, acts), MULTIWOZ22) for d in read_json(release / folder / "dialogues_001.json")]
        splits[split] = datasets.Dataset.from_list(rows, features=MULTIWOZ22)
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    assert sorted(p.parent.name for p in (tmp_path / "saved").rglob("*.arrow")) == ["test", "train", "validation"]
    corpus = load_corpus(tmp_path / "saved")
    assert corpus.format == "schema-guided" and corpus.examples == load_corpus(release).examples
    (arrow,) = (tmp_path / "saved" / "test").glob("*.arrow")
    assert load_corpus(arrow).dialogues == {"test": 1}
    arrow.write_bytes(b"not arrow")
    with pytest.raises(AftInputError, match="not a readable Arrow stream file"):
        load_corpus(tmp_path / "saved")
