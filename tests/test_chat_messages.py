"""Conversations in the chat-messages format (TRL's conversational format, ShareGPT, the hub's chat datasets):
JSONL, JSON and parquet files of `messages` records load as alternating user and system turns."""

import json

import pytest
from conftest import shared_path, write_json

from aft_core.data.corpus import load_corpus, read_json
from aft_core.errors import AftInputError


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


CHAT = {
    "id": "c1",
    "messages": [
        {"role": "system", "content": "You are a helpful travel agent."},
        {"role": "user", "content": "I need a hotel."},
        {"role": "user", "content": "In the north."},
        {"role": "assistant", "content": "The Acorn is in the north."},
        {"role": "tool", "content": '{"ref": "AB1"}'},
        {"role": "user", "content": [{"type": "text", "text": "Book it."}, {"type": "image"}]},
        {"role": "assistant", "content": "Booked , reference AB1 ."},
    ],
}


def test_chat_messages_in_jsonl_json_and_sharegpt(tmp_path):
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / "chats" / f"{split}.jsonl", [CHAT | {"id": f"{split}-c1"}])
    corpus = load_corpus(tmp_path / "chats")
    assert corpus.format == "chat" and corpus.dialogues == {"train": 1, "validation": 1, "test": 1}
    first, second = corpus.examples["test"]
    # the system instruction and the tool output are left out; the user's two messages are one turn
    assert [(t.speaker, t.text) for t in second.history] == [
        ("user", "I need a hotel. In the north."),
        ("system", "The Acorn is in the north."),
        ("user", "Book it."),
    ]
    assert (first.target, second.target, second.dialogue_id) == (
        "The Acorn is in the north.",
        "Booked , reference AB1 .",
        "test-c1",
    )
    assert first.belief_state == {} and first.history[0].slot_values == ()
    # a .json list of records, ShareGPT's {from, value}; a lone file without a split word is train
    sharegpt = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello !"}]}
    corpus = load_corpus(write_json(tmp_path / "sharegpt.json", [sharegpt, sharegpt]))
    assert corpus.dialogues == {"train": 2} and [e.dialogue_id for e in corpus.examples["train"]] == [
        "train-0",
        "train-1",
    ]


def test_chat_input_that_cannot_be_read_names_the_file_line_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "train.jsonl", [CHAT])
    bad.write_text(bad.read_text() + "{not json\n")
    with pytest.raises(AftInputError, match="is not a JSON object") as e:
        load_corpus(bad)
    assert e.value.field == "line 2"
    odd = {"messages": [{"role": "user", "content": "hi"}, {"role": "narrator", "content": "..."}]}
    with pytest.raises(AftInputError, match="unknown role 'narrator'") as e:
        load_corpus(write_jsonl(tmp_path / "test.jsonl", [odd]))
    assert e.value.field == "test-0.messages[1].role"
    only_user = {"messages": [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]}
    with pytest.raises(AftInputError, match="no system turn"):
        load_corpus(write_jsonl(tmp_path / "x" / "train.jsonl", [only_user]))
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "chats.jsonl").write_text(json.dumps(CHAT) + "\n")
    with pytest.raises(AftInputError, match="names no split"):
        load_corpus(tmp_path / "y")


def test_real_dialogues_as_chat_messages_give_the_unified_examples(tmp_path):
    """The first 60 dialogues of each split of the shared DailyDialog written as chat records (JSONL, and parquet as
    the hub stores chat datasets): the same histories and targets as the unified loader's."""
    datasets = pytest.importorskip("datasets")
    unified = read_json(shared_path("dailydialog", "data.zip"), "data/dialogues.json")
    kept: dict[str, list] = {}
    for d in unified:
        if len(kept.setdefault(d["data_split"], [])) < 60:
            kept[d["data_split"]].append(d)
    (tmp_path / "unified").mkdir()
    expected = load_corpus(write_json(tmp_path / "unified" / "dialogues.json", [d for ds in kept.values() for d in ds]))
    roles = {"user": "user", "system": "assistant"}
    for split, ds in kept.items():
        records = [
            {
                "id": d["dialogue_id"],
                "messages": [{"role": roles[t["speaker"]], "content": t["utterance"]} for t in d["turns"]],
            }
            for d in ds
        ]
        write_jsonl(tmp_path / "jsonl" / f"{split}.jsonl", records)
        datasets.Dataset.from_list(records).to_parquet(
            str(tmp_path / "hub" / "data" / f"{split}-00000-of-00001.parquet")
        )
    for folder in ("jsonl", "hub"):
        corpus = load_corpus(tmp_path / folder)
        assert corpus.format == "chat" and corpus.dialogues == expected.dialogues
        for split, examples in corpus.examples.items():
            assert [(e.example_id, [(t.speaker, t.text) for t in e.history], e.target) for e in examples] == [
                (e.example_id, [(t.speaker, t.text) for t in e.history], e.target) for e in expected.examples[split]
            ]


def test_a_single_chat_file_is_held_out_by_dialogue(tmp_path):
    """One chat file (one split) is divided by dialogue as a single MultiWOZ file is: lists and a record beside a
    link-free folder, every example in its dialogue's split, the same hold-out from any file order; the pipeline's
    parameter check accepts it."""
    from aft_core.data.corpus import hold_out_splits
    from flows.params import PipelineParams, check_parameters

    records = [
        {"id": f"c{i}", "messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
        for i in range(40)
    ]
    source = write_jsonl(tmp_path / "chats.jsonl", records)
    shuffled = write_jsonl(tmp_path / "shuffled" / "chats.jsonl", records[::-1])
    record = hold_out_splits(source, tmp_path / "held")
    assert record["dialogues"] == {"test": 4, "validation": 4, "train": 32} and record["format"] == "chat"
    held = load_corpus(tmp_path / "held")
    assert held.format == "chat" and held.dialogues == {"train": 32, "validation": 4, "test": 4}
    assert held.holdout == record and not list((tmp_path / "held").glob("*.jsonl"))  # nothing copied
    assert all(ex.split == split for split, exs in held.examples.items() for ex in exs)
    hold_out_splits(shuffled, tmp_path / "held-again")
    again = load_corpus(tmp_path / "held-again")
    assert {s: {e.dialogue_id for e in exs} for s, exs in again.examples.items()} == {
        s: {e.dialogue_id for e in exs} for s, exs in held.examples.items()
    }
    check_parameters(PipelineParams(run_dir=str(tmp_path / "run"), data=str(source)))
    (tmp_path / "gone.jsonl").write_text(source.read_text())
    hold_out_splits(tmp_path / "gone.jsonl", tmp_path / "held-gone")
    (tmp_path / "gone.jsonl").unlink()
    with pytest.raises(AftInputError, match="which does not exist"):
        load_corpus(tmp_path / "held-gone")


def test_a_single_split_corpus_is_refused_by_the_stages_with_the_holdout_command_that_divides_it(tmp_path, capsys):
    """`aft sft` on one file (MultiWOZ's validation file, one chat file) has no train split to train on: it ended in
    a KeyError traceback. The stages now refuse it naming `aft data holdout`, whose folder they then take."""
    from aft_core.cli import main

    records = [
        {"id": f"c{i}", "messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
        for i in range(40)
    ]
    source = write_jsonl(tmp_path / "chats.jsonl", records)
    sft = ["sft", "--model", "tiny", "--max-steps", "1", "--eval-every", "1", "--dev-examples", "2", "--quiet"]
    fix = f"aft data holdout {source.resolve()} --out DIR"

    def refused(argv):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        line = next(line for line in err.splitlines() if line.startswith("error:"))
        assert "Traceback" not in err and "has no " in line and "(its splits: " in line and fix in line, line

    refused([*sft, "--data", str(source), "--out", str(tmp_path / "sft")])
    assert not (tmp_path / "sft").exists()  # refused before anything is written
    before = source.read_bytes()
    assert main(["data", "holdout", str(source), "--out", str(tmp_path)]) == 2  # the source's own folder
    assert "holds files of its own (chats.jsonl)" in capsys.readouterr().err and source.read_bytes() == before
    assert main(["data", "holdout", str(source), "--out", str(tmp_path / "held")]) == 0
    assert json.loads(capsys.readouterr().out)["dialogues"] == {"test": 4, "validation": 4, "train": 32}
    (tmp_path / "held" / "holdout.json").unlink()  # as a hold-out interrupted before its record: redone in place
    assert main(["data", "holdout", str(source), "--out", str(tmp_path / "held")]) == 0
    capsys.readouterr()
    assert main([*sft, "--data", str(tmp_path / "held"), "--out", str(tmp_path / "sft")]) == 0
    model = str(tmp_path / "sft" / "model")
    refused(["train-branch", "--sft", model, "--data", str(source), "--out", str(tmp_path / "b"), "--quiet"])
    refused(["evaluate", "--sft", model, "--data", str(source), "--out", str(tmp_path / "e")])


def test_an_empty_i_x_is_refused_before_any_work(tmp_path):
    """Single exchanges without annotations leave I_x salient (slot values) and I_x history (earlier turns) empty on
    every example: focus and coverage would read 0 and every candidate the same reward, so a branch would train on
    uniform weights without a word. The pipeline's check names the parameter it came from; a branch and the
    evaluation refuse it on their own too. I_x all, and multi-turn chats for history, pass."""
    from aft_core.aft import run_branch
    from aft_core.config import AFTConfig, EvalConfig
    from aft_core.evaluation import evaluate_systems
    from flows.params import PipelineParams, check_parameters

    exchange = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    for split in ("train", "validation", "test"):
        write_jsonl(
            tmp_path / "single" / f"{split}.jsonl", [{"id": f"{split}{i}", "messages": exchange} for i in range(3)]
        )
        write_jsonl(tmp_path / "multi" / f"{split}.jsonl", [CHAT | {"id": f"{split}-c1"}])
    single, multi = str(tmp_path / "single"), str(tmp_path / "multi")
    assert load_corpus(single).stats()["ix_nonempty"] == {"salient": 0.0, "history": 0.0}  # `aft data stats`
    assert load_corpus(multi).stats()["ix_nonempty"] == {"salient": 0.0, "history": 0.5}
    run = str(tmp_path / "run")
    check_parameters(PipelineParams(run_dir=run, data=single))
    salient = {"sweep": {"grid": {"variants": [{}, {"ix_mode": "salient", "beta": 0.0}]}}}
    with pytest.raises(AftInputError, match=r"sweep\.grid\.variants\[1\]\.ix_mode.*no turn of .*has one.*use ix_mode"):
        check_parameters(PipelineParams(run_dir=run, data=single, **salient))
    with pytest.raises(AftInputError, match=r"sweep\.branch\.ix_mode.*answers a first user turn"):
        check_parameters(PipelineParams(run_dir=run, data=single, sweep={"branch": {"ix_mode": "history"}}))
    with pytest.raises(AftInputError, match=r"sweep\.grid\.other\.ix_mode.*answers a first user turn"):
        check_parameters(
            PipelineParams(run_dir=run, data=single, sweep={"grid": {"other": {"ix_mode": ["all", "history"]}}})
        )
    check_parameters(PipelineParams(run_dir=run, data=multi, sweep={"branch": {"ix_mode": "history"}}))
    with pytest.raises(AftInputError, match=r"'ix_mode'.*no turn of this corpus's train split"):
        run_branch(AFTConfig(sft_model="tiny", data=multi, ix_mode="salient"), tmp_path / "branch", progress=False)
    assert not (tmp_path / "branch").exists()
    with pytest.raises(AftInputError, match=r"'ix_mode'.*this corpus's test split answers a first user turn"):
        evaluate_systems({}, EvalConfig(data=single, ix_mode="history"), tmp_path / "eval")
    assert not (tmp_path / "eval").exists()
