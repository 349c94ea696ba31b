"""Bad input: one clear message naming the file, the field and the fix; nothing on disk changed."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch
from conftest import snapshot, write_json

from aft_core.cli import main
from aft_core.config import SFTConfig, from_dict
from aft_core.data.corpus import load_corpus
from aft_core.errors import AftInputError


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


def test_a_release_archive_says_to_unzip_it(tmp_path):
    """MultiWOZ_2.1.zip as downloaded holds a folder of data.json, split lists and venue tables: the error says to
    unzip it and names the folder to pass; a zip whose only JSON file is a data.json inside a folder still loads."""
    dialogue = {"goal": {}, "log": [{"text": "hi", "metadata": {}}, {"text": "hello", "metadata": {}}]}
    with zipfile.ZipFile(tmp_path / "MultiWOZ_2.1.zip", "w") as zf:
        zf.writestr("MultiWOZ_2.1/data.json", json.dumps({"d1.json": dialogue}))
        zf.writestr("MultiWOZ_2.1/valListFile.txt", "d1.json\n")
        zf.writestr("MultiWOZ_2.1/hotel_db.json", "[]")
    expect_error(lambda: load_corpus(tmp_path / "MultiWOZ_2.1.zip"), "release archive", "unzip it", "MultiWOZ_2.1")
    with zipfile.ZipFile(tmp_path / "one.zip", "w") as zf:
        zf.writestr("MultiWOZ_2.1/data.json", json.dumps({"d1.json": dialogue}))
    assert load_corpus(tmp_path / "one.zip").dialogues == {"train": 1}


def test_a_malformed_dialogue_beside_multiwoz_20s_acts_is_the_one_line_error(tmp_path):
    write_json(tmp_path / "data.json", {"d1.json": "not a dialogue"})
    write_json(tmp_path / "dialogue_acts.json", {"d1": {"1": {"Hotel-Inform": [["Area", "east"]]}}})
    expect_error(lambda: load_corpus(tmp_path), "d1.json.log", "no 'log' list")


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
    turns = [
        {"speaker": "user", "utterance": "a"},
        {"speaker": "user", "utterance": "b"},
        {"speaker": "system", "utterance": "c"},
    ]
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


# --- the catalogue: settings that are refused before anything is written --------------------------------


def _aft(**over):
    from aft_core.config import AFTConfig

    return lambda: AFTConfig(**{"sft_model": "tiny", "data": "x", **over}).validate()


def _grid(**grid):
    from flows.params import SweepGrid

    return lambda: SweepGrid(**grid)


CATALOGUE = {
    "K below 2": (_aft(k=1), "'k'"),
    "eta not positive": (_aft(eta=0.0), "'eta'"),
    "negative gamma": (_aft(gamma=-0.5), "'gamma'"),
    "negative eta_kl": (_aft(eta_kl=-0.01), "'eta_kl'"),
    "max_new_tokens not positive": (_aft(max_new_tokens=0), "'max_new_tokens'"),
    "unknown KL estimator": (_aft(kl_estimator="k2"), "'kl_estimator'"),
    "unknown I_x mode": (_aft(ix_mode="future"), "'ix_mode'"),
    "unknown AFT setting": (
        lambda: from_dict(
            __import__("aft_core.config").config.AFTConfig, {"sft_model": "tiny", "data": "x", "betta": 1}
        ),
        "'betta'",
    ),
    "attractor share out of range": (
        lambda: __import__("aft_core.attractors").attractors.AttractorThresholds(unique_min_fraction=1.5).validate(),
        "'unique_min_fraction'",
    ),
    "negative KL target": (_aft(kl_target=-0.1), "'kl_target'"),
    "adaptive KL with eta_kl 0": (_aft(kl_target=0.05, eta_kl=0.0), "'eta_kl'"),
    "negative early-stop count": (_aft(early_stop_checkpoints=-1), "'early_stop_checkpoints'"),
    "unknown threshold basis": (
        lambda: __import__("aft_core.attractors").attractors.AttractorThresholds(basis="absolute").validate(),
        "'basis'",
    ),
    "unknown threshold": (
        lambda: __import__("aft_core.attractors").attractors.thresholds_from("sft", {"uniq": 0.5}),
        "'uniq'",
    ),
    "entity floor out of range": (
        lambda: __import__("aft_core.attractors").attractors.thresholds_from(
            "sft", {"primary_min_delta_entity_accuracy": 2.0}
        ),
        "'primary_min_delta_entity_accuracy'",
    ),
    "data-check share out of range": (
        lambda: __import__("data_checks.suites").suites.DataCheckConfig(annotated_mostly=2.0).validate(),
        "'annotated_mostly'",
    ),
}


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_catalogue_setting_refused_with_field_and_fix(case):
    call, field = CATALOGUE[case]
    message = expect_error(call)
    assert field in message, message


@pytest.mark.parametrize(
    "grid, problem",
    [
        ({"beta": []}, "at least one value"),
        ({"other": {"temprature": [1.0]}}, "'temprature' is not a branch setting"),
        ({"other": {"kl_estimator": []}}, "non-empty list"),
        ({"variants": [{}, {"ix_modes": "salient"}]}, r"variants\[1\]: 'ix_modes' is not a branch setting"),
        ({"variants": []}, "at least one variant"),
    ],
)
def test_sweep_grid_refused_with_what_to_do(grid, problem):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=problem):
        _grid(**grid)()


def test_unknown_pipeline_parameter_and_preset():
    from pydantic import ValidationError

    from flows.params import preset

    with pytest.raises(ValidationError, match="sft_steps"):
        preset("tiny", {"sft_steps": 5})
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")


def test_read_only_output_folder(tmp_path):
    import os

    from aft_core.io import write_json_atomic

    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "keep.json").write_text("{}")
    os.chmod(folder, 0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that can write to read-only folders (root); simulated below instead")
        expect_error(lambda: write_json_atomic(folder / "keep.json", {"new": 1}), "cannot be written", "writable")
    finally:
        os.chmod(folder, 0o700)
    assert (folder / "keep.json").read_text() == "{}"


@pytest.mark.parametrize(
    "errno_name, fix",
    [("ENOSPC", "free disk space"), ("EROFS", "writable file system"), ("EACCES", "you can write to")],
)
def test_full_disk_or_unwritable_output_leaves_the_old_file(tmp_path, monkeypatch, errno_name, fix):
    import errno
    import os

    import aft_core.io
    from aft_core.io import write_json_atomic

    target = tmp_path / "result.json"
    write_json_atomic(target, {"old": True})
    before = snapshot(tmp_path)

    def failing_replace(src, dst):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(aft_core.io.os, "replace", failing_replace)
    message = expect_error(lambda: write_json_atomic(target, {"new": True}), str(target), fix)
    assert "cannot be written" in message
    assert snapshot(tmp_path) == before  # the old file intact, no temporary left behind


@pytest.mark.parametrize(
    "value, fragment",
    [("banana", "is not a device name"), ("mps", "is not supported")]
    + ([] if torch.cuda.is_available() else [("cuda", "asks for a GPU but torch sees none")]),
)
def test_unusable_device_named_by_aft_device(monkeypatch, value, fragment):
    from aft_core.models import default_device

    monkeypatch.setenv("AFT_DEVICE", value)
    expect_error(default_device, "AFT_DEVICE", fragment)
    monkeypatch.setenv("AFT_DEVICE", "cpu")
    assert default_device() == torch.device("cpu")


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply to parse"),
        ("deep-object.json", b'{"d1": ' * 50_000 + b"{}" + b"}" * 50_000, "nested too deeply to parse"),
        ("latin1.json", '{"d1": {"log": [{"text": "caf\xe9"}]}}'.encode("latin-1"), "not valid JSON"),
        ("bigint.json", b'{"d1": ' + b"9" * 10_000 + b"}", "not valid JSON"),
        ("nul.json", b"\x00\x00\xff\xfe", "not valid JSON"),
    ],
)
def test_a_hostile_corpus_file_is_one_line_not_a_traceback(tmp_path, name, content, problem, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    expect_error(lambda: load_corpus(path), str(path), problem)
    assert main(["data", "stats", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and problem in err and "Traceback" not in err


def test_a_damaged_zip_member_and_a_deep_venue_database_are_named(tmp_path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/dialogues.json", json.dumps([{"x": "y" * 5000}]))
    raw = bytearray(good.read_bytes())
    start = raw.index(b"data/dialogues.json") + len("data/dialogues.json")  # the local header's name, then data
    raw[start + 10 : start + 200] = b"\x00" * 190  # corrupt the compressed stream, keep the directory
    bad = tmp_path / "data.zip"
    bad.write_bytes(bytes(raw))
    expect_error(lambda: load_corpus(bad), str(bad), "a zip that cannot be read")

    from aft_core.data.venues import VenueDB

    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "hotel_db.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    expect_error(
        lambda: VenueDB.load(tmp_path / "db"),
        "hotel_db.json",
        "nested too deeply to parse",
        "restore the venue database file",
    )


def test_a_split_list_that_is_not_text_is_named(tmp_path):
    write_json(tmp_path / "data.json", {"d1": {"log": [{"text": "hi"}, {"text": "hello"}]}})
    (tmp_path / "valListFile.txt").write_bytes(b"\xff\xfe\x00bad")
    expect_error(lambda: load_corpus(tmp_path), "valListFile.txt", "cannot be read as UTF-8 text")


def _broken_copy(sft_model, tmp_path, name):
    import shutil

    folder = tmp_path / name
    shutil.copytree(sft_model, folder)
    return folder


def test_broken_model_folders_end_in_one_line_not_a_traceback(sft_model, towninfo_dir, tmp_path, capsys):
    """As a user's downloads go wrong: no tokenizer, pickle weights only, truncated weights, a config whose
    vocabulary disagrees with the weights. Each is refused with the file and the fix, before any training."""
    from safetensors.torch import load_file, save_file

    no_tokenizer = _broken_copy(sft_model, tmp_path, "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    pickled = _broken_copy(sft_model, tmp_path, "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")  # only a .bin, as older checkpoints ship
    truncated = _broken_copy(sft_model, tmp_path, "truncated")
    raw = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(raw[: len(raw) // 3])
    mismatched = _broken_copy(sft_model, tmp_path, "mismatched")
    config = json.loads((mismatched / "config.json").read_text())
    weights = load_file(str(mismatched / "model.safetensors"))
    save_file(
        {k: (v[: v.shape[0] // 2] if v.shape[0] == config["vocab_size"] else v) for k, v in weights.items()},
        str(mismatched / "model.safetensors"),
        metadata={"format": "pt"},
    )
    cases = {
        no_tokenizer: "holds no tokenizer files",
        pickled: "pickle weights are never loaded",
        truncated: "could not be loaded",
        mismatched: "could not be loaded (RuntimeError",
    }
    for folder, problem in cases.items():
        out = tmp_path / f"sft-of-{folder.name}"
        code = main(["sft", "--data", str(towninfo_dir), "--model", str(folder), "--out", str(out), "--max-steps", "2"])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and problem in errors[0] and "Fix:" in errors[0], (
            folder.name,
            err[-800:],
        )
        assert "Traceback" not in err and not (out / "sft_result.json").exists()


def test_aft_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    from aft_core.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"aft {version('aft')}"
