"""Bad input: one clear message naming the file, the field and the fix; nothing on disk changed."""
from __future__ import annotations

import json
import zipfile

import pytest

from aft_core.cli import main
from aft_core.config import SFTConfig, from_dict
from aft_core.data.corpus import load_corpus
from aft_core.errors import AftInputError
from conftest import snapshot, write_json


def expect_error(call, *fragments):
    with pytest.raises(AftInputError) as info:
        call()
    message = str(info.value)
    assert "Fix:" in message and "field '" in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_not_json(tmp_path):
    bad = tmp_path / "data.json"
    bad.write_text("{ this is not json")
    expect_error(lambda: load_corpus(bad), str(bad), "not valid JSON")


def test_zip_without_expected_file(tmp_path):
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    expect_error(lambda: load_corpus(tmp_path / "data.zip"), "data/dialogues.json")


def test_wrong_schema(tmp_path):
    expect_error(lambda: load_corpus(write_json(tmp_path / "x.json", {"d1": {"turns": []}})), "d1.log")
    expect_error(lambda: load_corpus(write_json(tmp_path / "y.json", "hello")), "top-level JSON is a str")


def test_dialogue_without_system_turn(tmp_path):
    path = write_json(tmp_path / "x.json", {"d1": {"goal": {}, "log": [{"text": "hello", "metadata": {}}]}})
    expect_error(lambda: load_corpus(path), "d1.log", "no system turn")


def test_empty_utterance(tmp_path):
    path = write_json(tmp_path / "x.json", {"d1": {"log": [{"text": "hi"}, {"text": "  "}]}})
    expect_error(lambda: load_corpus(path), "d1.log[1].text", "empty utterance")


def test_turns_that_do_not_alternate(tmp_path):
    turns = [{"speaker": "user", "utterance": "a"}, {"speaker": "user", "utterance": "b"},
             {"speaker": "system", "utterance": "c"}]
    path = write_json(tmp_path / "dialogues.json", [{"dialogue_id": "u1", "data_split": "train", "turns": turns}])
    expect_error(lambda: load_corpus(path), "u1.turns[1].speaker", "must alternate")


def test_split_list_naming_a_missing_dialogue(tmp_path):
    write_json(tmp_path / "data.json", {"d1": {"log": [{"text": "hi"}, {"text": "hello"}]}})
    (tmp_path / "testListFile.txt").write_text("d1\nd404\n")
    expect_error(lambda: load_corpus(tmp_path), "testListFile.txt", "d404")


def test_dialogue_in_two_splits(tmp_path):
    dialogue = {"log": [{"text": "hi"}, {"text": "hello"}]}
    write_json(tmp_path / "train.json", {"d1": dialogue})
    write_json(tmp_path / "test.json", {"d1": dialogue})
    expect_error(lambda: load_corpus(tmp_path), "d1", "also appears in split")


def test_unknown_config_key_and_out_of_range_setting():
    expect_error(lambda: from_dict(SFTConfig, {"data": "x", "learning_rte": 1e-3}), "learning_rte", "unknown setting")
    expect_error(lambda: from_dict(SFTConfig, {"data": "x", "batch_size": 0}), "batch_size")


def test_cli_prints_one_clear_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "data.json"
    bad.write_text("[1, 2")
    before = snapshot(tmp_path)
    assert main(["data", "stats", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and "Fix:" in err and len(err.strip().splitlines()) == 1
    assert main(["sft", "--data", str(bad), "--model", "tiny", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def test_cli_unknown_model_size(tmp_path, towninfo_dir, capsys):
    assert main(["sft", "--data", str(towninfo_dir), "--model", "huge", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "unknown model size 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_stats(towninfo_dir, capsys):
    assert main(["data", "stats", str(towninfo_dir)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["format"] == "multiwoz" and stats["examples"]["train"] > 0
