"""TownInfo: deterministic, and every system act is consistent with its own venue database."""

from __future__ import annotations

import json

import pytest
from conftest import snapshot

from aft_core.data.corpus import load_corpus
from aft_core.data.towninfo import DOMAIN_SLOTS, generate_towninfo
from aft_core.data.venues import VenueDB, satisfies
from aft_core.errors import AftInputError


def test_deterministic_from_seed(tmp_path, towninfo_dir):
    again = generate_towninfo(tmp_path / "again", dialogues=200, seed=3)
    assert snapshot(again) == snapshot(towninfo_dir)
    other = generate_towninfo(tmp_path / "other", dialogues=200, seed=4)
    assert (other / "data.json").read_bytes() != (towninfo_dir / "data.json").read_bytes()


def test_recommendations_satisfy_constraints_and_no_match_is_true(towninfo_dir):
    db = VenueDB.load(towninfo_dir / "db")
    data = json.loads((towninfo_dir / "data.json").read_text())
    recommended = no_match = 0
    for dialogue in data.values():
        for turn in dialogue["log"][1::2]:
            for act, values in turn["dialog_act"].items():
                domain = act.split("-")[0].lower()
                if domain not in DOMAIN_SLOTS:
                    continue
                constraints = {
                    s: v
                    for s, v in turn["metadata"][domain]["semi"].items()
                    if s in DOMAIN_SLOTS[domain] and v not in ("", "dontcare")
                }
                if act.endswith("-Recommend"):
                    (name,) = [v for k, v in values if k == "Name"]
                    venues = [r for d, r in db.mentioned(name) if d == domain]
                    assert venues and satisfies(venues[0], constraints), (turn["text"], constraints)
                    assert name in turn["text"]
                    recommended += 1
                if act.endswith("-NoOffer"):
                    assert db.matching(domain, constraints) == [], (turn["text"], constraints)
                    no_match += 1
    assert recommended >= 200 and no_match > 0


def test_corpus_shape(towninfo_dir):
    corpus = load_corpus(towninfo_dir)
    stats = corpus.stats()
    assert stats["dialogues"] == {"train": 160, "validation": 20, "test": 20}
    assert corpus.db_dir == towninfo_dir / "db"
    data = json.loads((towninfo_dir / "data.json").read_text())
    words = {w for d in data.values() for t in d["log"] for w in t["text"].split()}
    assert len(words) > 500  # a real vocabulary, not one template
    domains = [sum(1 for k, v in d["goal"].items() if v) for d in data.values()]
    assert 1 in domains and 2 in domains  # single-domain dialogues and domain switches
    # Constraints revealed across several user turns: most examples have a multi-turn history.
    assert sum(len(ex.history) >= 5 for ex in corpus.examples["train"]) > len(corpus.examples["train"]) / 2


def test_refuses_folder_with_other_corpus(tmp_path):
    generate_towninfo(tmp_path / "c", dialogues=20, seed=1)
    before = snapshot(tmp_path / "c")
    with pytest.raises(AftInputError, match="different TownInfo corpus.*Fix:"):
        generate_towninfo(tmp_path / "c", dialogues=20, seed=2)
    assert snapshot(tmp_path / "c") == before
