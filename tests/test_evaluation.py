"""Statistics of the test table against known values, and entity accuracy on hand-made turns."""

from __future__ import annotations

import pytest

from aft_core.data.venues import VenueDB, entity_correct
from aft_core.errors import AftInputError
from aft_core.stats import bootstrap_ci, distinct_n, paired_bootstrap_p, paired_comparison


def test_bootstrap_ci_of_a_constant_is_a_point():
    assert bootstrap_ci([0.7] * 50) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))


def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_data():
    small = bootstrap_ci([0.0, 1.0] * 10)
    large = bootstrap_ci([0.0, 1.0] * 500)
    assert small[1] < 0.5 < small[2] and large[1] < 0.5 < large[2]
    assert large[2] - large[1] < small[2] - small[1]
    # The half-width of a 95% CI of a fair coin's mean over 1,000 draws is about 1.96 * 0.5 / sqrt(1000) = 0.031.
    assert (large[2] - large[1]) / 2 == pytest.approx(0.031, abs=0.005)


def test_paired_comparison_of_identical_systems_shows_no_difference():
    scores = [0.1, 0.5, 0.3, 0.9, 0.2]
    cmp = paired_comparison(scores, scores)
    assert cmp == {"share_improved": 0.0, "share_worse": 0.0, "median_delta": 0.0, "mean_delta": 0.0, "p_value": 1.0}


def test_paired_comparison_detects_a_consistent_gain():
    base = [0.1 * i for i in range(40)]
    better = [b + 0.05 + (0.01 if i % 2 else -0.01) for i, b in enumerate(base)]
    cmp = paired_comparison(better, base)
    assert cmp["share_improved"] == 1.0 and cmp["median_delta"] == pytest.approx(0.05)
    assert cmp["p_value"] < 0.01
    assert paired_bootstrap_p([1.0, -1.0] * 20) > 0.5  # symmetric differences: no evidence
    with pytest.raises(ValueError, match="same examples"):
        paired_comparison([1.0], [1.0, 2.0])


def test_distinct_n_by_hand():
    texts = ["a b a b", "a c"]
    # unigrams: a b a b a c -> 3 distinct / 6; bigrams: ab ba ab ac -> 3 distinct / 4
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0


@pytest.fixture
def db():
    return VenueDB(
        {
            "restaurant": [
                {"name": "the golden wok", "food": "chinese", "area": "centre", "pricerange": "cheap"},
                {"name": "the silver spoon", "food": "italian", "area": "north", "pricerange": "expensive"},
            ],
            "hotel": [{"name": "acorn house", "area": "north", "pricerange": "cheap", "stars": "4"}],
        }
    )


def test_entity_accuracy_on_hand_made_turns(db):
    state = {"restaurant": {"food": "chinese", "area": "centre", "pricerange": "dontcare"}}
    assert entity_correct(db, "how about the golden wok ? it is cheap .", state)  # a correct venue
    assert not entity_correct(db, "the silver spoon is lovely .", state)  # a venue that breaks the constraints
    assert db.matching("restaurant", state["restaurant"])  # a match exists, so an apology is wrong
    assert not entity_correct(db, "i am sorry , there is no such restaurant .", state)
    # A venue of a domain the user never asked about is not a correct answer.
    assert not entity_correct(db, "acorn house is in the north .", state)


def test_probe_entity_accuracy_counts_only_turns_whose_reference_names_a_venue(db):
    import json

    from aft_core.monitor import probe_entity_accuracy

    chinese = json.dumps({"restaurant": {"food": "chinese", "area": "centre"}})
    rows = [
        {"target": "the golden wok is in the centre .", "belief_state": chinese},  # venue turn, answered right
        {"target": "the golden wok serves chinese food .", "belief_state": chinese},  # venue turn, answered wrong
        {"target": "what area would you like ?", "belief_state": chinese},  # not a venue turn
        {"target": "acorn house is cheap .", "belief_state": json.dumps({"hotel": {"area": "north"}})},
    ]
    responses = ["try the golden wok .", "the silver spoon .", "the golden wok .", "acorn house , in the north ."]
    # turns 0, 1 and 3 count; 0 and 3 are correct (turn 2's correct answer is not a venue turn)
    assert probe_entity_accuracy(db, responses, rows) == {"entity_accuracy": 2 / 3, "venue_turns": 3}
    assert probe_entity_accuracy(db, responses[2:3], rows[2:3]) == {"entity_accuracy": None, "venue_turns": 0}


def test_a_database_file_that_is_not_a_list_of_records_is_skipped_and_named(tmp_path):
    import json

    from conftest import shared_path

    (tmp_path / "restaurant_db.json").write_text(json.dumps([{"name": "the golden wok", "area": "centre"}]))
    (tmp_path / "taxi_db.json").write_text(json.dumps({"taxi_colors": ["black"], "taxi_types": ["toyota"]}))
    db = VenueDB.load(tmp_path)
    assert list(db.venues) == ["restaurant"]
    assert db.skipped == {"taxi": "taxi_db.json is a JSON dict, not a list of venue records"}
    (tmp_path / "restaurant_db.json").unlink()
    with pytest.raises(AftInputError, match="holds no venue table.*skipped: taxi_db.json"):
        VenueDB.load(tmp_path)

    real = shared_path("multiwoz21", "db")  # skips with the reason when ../shared is absent
    multiwoz = VenueDB.load(real)
    assert set(multiwoz.skipped) == {"taxi"}
    assert {"restaurant", "hotel", "attraction", "train"} <= set(multiwoz.venues)
    assert multiwoz.mentioned("how about pizza hut city centre ?")[0][0] == "restaurant"


def test_corpus_bleu_by_hand():
    import math

    from aft_core.evaluation import corpus_bleu

    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"])[0] == pytest.approx(100.0)
    # Every n-gram precision is 1 (4/4, 3/3, 2/2, 1/1); half the reference length: brevity penalty exp(1 - 8/4).
    score, signature = corpus_bleu(["a b c d"], ["a b c d e f g h"])
    assert score == pytest.approx(100 * math.exp(1 - 8 / 4), abs=1e-3)
    # Corpus level: counts are pooled over pairs (not a mean of sentence scores): 8 of 8 words, 16 of 16 reference.
    assert corpus_bleu(["a b c d", "e f g h"], ["a b c d x y z w", "e f g h x y z w"])[0] == pytest.approx(
        score, abs=1e-3
    )
    assert signature.startswith("nrefs:1|") and "tok:13a" in signature


def test_evaluation_progress_reports_every_tenth_with_a_rate_and_an_eta():
    from aft_core.evaluation import EvalProgress

    lines: list[str] = []
    progress = EvalProgress(total=200, report=lines.append)
    for _ in range(20):
        progress.update("SFT", 10)
    assert progress.close() > 0
    assert len(lines) == 10 and lines[-1].startswith("evaluate 200/200 examples (100%")
    assert all("ex/s, ETA" in line and line.endswith("SFT)") for line in lines)


def test_tokenised_corpora_are_scored_as_they_are_without_a_warning(caplog):
    import logging

    from aft_core.evaluation import corpus_bleu, references_are_tokenised

    tokenised = [f"the {i} hotel is in the north ." for i in range(120)]  # TownInfo's shape: >= 100 end in " ."
    raw = [f"The {i} hotel is in the north." for i in range(120)]
    assert references_are_tokenised(tokenised) and not references_are_tokenised(raw)
    with caplog.at_level(logging.WARNING, logger="sacrebleu"):
        score, signature = corpus_bleu(tokenised, tokenised)
    assert score == pytest.approx(100.0) and "tok:none" in signature
    assert not [r for r in caplog.records if r.name.startswith("sacrebleu")], caplog.text
    assert "tok:13a" in corpus_bleu(raw, raw)[1]


def test_a_pairs_bertscore_does_not_depend_on_the_pairs_batched_with_it(monkeypatch):
    """bert-score 0.3.13 zeroes padded similarities before taking each token's best match, so a token whose best
    real match has a negative cosine took the padding's 0: this pair scored 0.019 apart alone and beside a longer
    one. aft_core.bertscore masks padding below any cosine; with bert-score's own matching the pair moves."""
    import bert_score.utils

    from aft_core.bertscore import UPSTREAM, load_bertscore

    scorer = load_bertscore()
    pair = ("any particular type of attraction ?", "thank you for using our service . goodbye .")
    longer = ("i have booked it . the reference number is t3pfrwey . is there anything else i can help you with ?",
              "which part of town do you prefer ?")  # fmt: skip

    def alone_and_batched() -> tuple[float, float]:
        alone = scorer.f1([pair[0]], [pair[1]])[0]
        return alone, scorer.f1([pair[0], longer[0]], [pair[1], longer[1]])[0]

    alone, batched = alone_and_batched()
    assert batched == pytest.approx(alone, abs=1e-5)
    monkeypatch.setattr(bert_score.utils, "greedy_cos_idf", UPSTREAM["greedy_cos_idf"])
    upstream_alone, upstream_batched = alone_and_batched()
    assert upstream_alone == pytest.approx(alone, abs=1e-5) and abs(upstream_batched - upstream_alone) > 1e-3


def test_bertscore_in_calls_of_a_few_pairs_equals_one_call_and_an_empty_response_scores_zero():
    """Evaluation scores every system's pairs in one call (references embedded once), split into calls of at most
    `pairs_per_call` pairs; how the pairs are split does not change a pair's F1."""
    from aft_core.bertscore import load_bertscore

    scorer = load_bertscore()
    references = ["which part of town do you prefer ?", "the museum is free .", "it is in the north ."] * 2
    candidates = ["what area ?", "", "it is in the north .", "the museum is free .", "goodbye", "which part of town ?"]
    one = scorer.f1(candidates, references)
    split = scorer.f1(candidates, references, pairs_per_call=2)
    assert split == pytest.approx(one, abs=1e-5) and one[1] == 0.0 and one[2] == pytest.approx(1.0, abs=1e-4)
