"""Loading dialogue corpora into examples: the MultiWOZ 2.x original schema, the ConvLab unified schema, and (in
aft_core.data.schema_guided) MultiWOZ 2.2's and SGD's schema-guided layout.

Accepted inputs (AFT_SPEC §1):
- MultiWOZ original: one `.json` / `.json.zip` holding `{dialogue_id: {"goal", "log"}}` (split taken
  from the file name, or given), a folder with `data.json[.zip]` plus `valListFile.txt` /
  `testListFile.txt` (the rest is train), or a folder with one file per split
  (`train.json[.zip]`, `val.json[.zip]`, `test.json[.zip]`). A `db/` folder beside the data
  holds the venue databases.
- ConvLab unified: a `.json` list of dialogues, or `data.zip` holding `data/dialogues.json`;
  each dialogue carries its `data_split`.
- Schema-guided (MultiWOZ 2.2, SGD): `train/`, `dev/`, `test/` folders of `dialogues_NNN.json`, one such folder,
  or one such file (aft_core.data.schema_guided).
- The Hugging Face hub's parquet copies of MultiWOZ 2.2, SGD and DailyDialog: a `.parquet` file or a folder of
  them (aft_core.data.hub_parquet).
- Chat messages (TRL's conversational format, ShareGPT): `.jsonl` / `.json` files of `messages` records, or a
  folder of them (aft_core.data.chat_messages).
A corpus that holds a single split (like MultiWOZ's shared validation file) is divided into
train/validation/test by `hold_out_splits`, deterministically and by dialogue.
Bad input raises `AftInputError` naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aft_core import io
from aft_core.data.examples import Example, Turn, examples_from_turns
from aft_core.errors import AftInputError
from aft_core.io import write_json_atomic, write_text_atomic

SPLIT_ALIASES = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
}
MULTIWOZ_EMPTY_VALUES = {"", "not mentioned", "none"}
# MultiWOZ slot names as other releases spell them (MultiWOZ 2.2 `bookday`, `leaveat`; ConvLab's unified schema
# `book day`, `price range`, `leave at`), compared without spaces and case, read as MultiWOZ 2.1 spells them: the
# fields of its venue databases, which entity accuracy matches a belief state against (a name the records lack
# would silently drop that constraint)
MULTIWOZ21_SLOTS = {
    "leaveat": "leaveAt",
    "arriveby": "arriveBy",
    "bookday": "day",
    "bookpeople": "people",
    "booktime": "time",
    "bookstay": "stay",
    "pricerange": "pricerange",
    "openhours": "openhours",
    "trainid": "trainID",
}
NON_DOMAIN_GOAL_KEYS = {"topic", "message"}
HOLDOUT_FILE = "holdout.json"
RELEASE_ACTS = "dialogue_acts.json"  # MultiWOZ 2.0's system acts, beside data.json (with_release_acts)
# The files naming a MultiWOZ folder's held-out dialogues, one id per line: MultiWOZ 2.1 ships .txt, 2.0 and 2.4
# ship .json (the same lines); the first that exists is read
LIST_FILES = {
    "validation": ("valListFile.txt", "valListFile.json"),
    "test": ("testListFile.txt", "testListFile.json"),
}


@dataclass
class Corpus:
    """Examples per split, plus where they came from."""

    format: str  # "multiwoz", "unified", "schema-guided" or "chat"
    source: Path
    examples: dict[str, list[Example]]
    dialogues: dict[str, int]  # split -> number of dialogues
    db_dir: Path | None = None  # venue databases (`<domain>_db.json`): a folder, or a data.zip holding them
    holdout: dict[str, Any] | None = None  # how the splits were held out of a single-split source (hold_out_splits)

    def stats(self) -> dict[str, Any]:
        words = [sum(len(t.text.split()) for t in ex.history) for exs in self.examples.values() for ex in exs]
        return {
            "format": self.format,
            "source": str(self.source),
            "dialogues": dict(self.dialogues),
            "examples": {split: len(exs) for split, exs in self.examples.items()},
            "history_words_mean": round(statistics.fmean(words), 2) if words else 0.0,
            "history_words_max": max(words, default=0),
            "db_dir": str(self.db_dir) if self.db_dir else None,
            "holdout": self.holdout,
            # the share of examples whose I_x is not empty, for each I_x that can be (empty_ix refuses a zero)
            "ix_nonempty": {mode: _share(holds, self.examples) for mode, holds in IX_NONEMPTY.items()},
        }

    def require_splits(self, *splits: str) -> None:
        """Refuse, with the fix, a corpus that lacks a split a stage reads (SFT and a branch train on `train` and
        probe `validation`; evaluation reads `test`). A single-split corpus (MultiWOZ's validation file, one chat
        JSONL file) is what `aft data holdout` divides by dialogue, as aft-pipeline does."""
        missing = [split for split in splits if split not in self.examples]
        if not missing:
            return
        have = ", ".join(sorted(self.examples))
        fix = (
            f"divide it by dialogue with `aft data holdout {self.source} --out DIR` (what aft-pipeline does with a "
            "single-split corpus) and pass DIR"
            if len(self.examples) == 1
            else "pass a corpus with train, validation and test splits"
        )
        raise AftInputError(self.source, "<splits>", f"has no {' or '.join(missing)} split (its splits: {have})", fix)

    def empty_ix(self, ix_mode: str, split: str | None = None) -> tuple[str, str] | None:
        """(why, fix) when the I_x of `ix_mode` (AFT_SPEC §4) is empty for every example of `split` (of every split
        when None or absent), else None. Such an I_x is no error in the arithmetic (focus and coverage read 0, every
        candidate gets the same reward), so a branch on it would train on uniform weights without a word."""
        if split not in self.examples:
            split = None
        examples = self.examples[split] if split else [ex for exs in self.examples.values() for ex in exs]
        where = f"this corpus's {split} split" if split else "this corpus"
        holds = IX_NONEMPTY.get(ix_mode)
        if holds is None or any(holds(ex) for ex in examples):
            return None
        if ix_mode == "salient":
            return (
                f"I_x salient is the tokens of annotated slot values, and no turn of {where} has one",
                "use ix_mode all or history, or a corpus whose turns carry slot annotations (MultiWOZ span_info or "
                "dialogue acts, SGD / MultiWOZ 2.2 slots)",
            )
        return (
            f"I_x history is the tokens of turns before the current user turn, and every example of {where} "
            "answers a first user turn",
            "use ix_mode all or salient, or a corpus of multi-turn dialogues",
        )


# Whether an example's I_x can hold a token, for the I_x that can be empty (`all` always holds the prompt): salient
# needs a turn with annotated slot values, history a turn before the current user turn
IX_NONEMPTY: dict[str, Callable[[Example], bool]] = {
    "salient": lambda ex: any(turn.slot_values for turn in ex.history),
    "history": lambda ex: len(ex.history) > 1,
}


def _share(holds: Callable[[Example], bool], examples: dict[str, list[Example]]) -> float:
    """The share of all splits' examples for which `holds(example)` is true (0.0 without examples)."""
    every = [ex for exs in examples.values() for ex in exs]
    return round(sum(1 for ex in every if holds(ex)) / len(every), 4) if every else 0.0


CORPUS_FIX = "pass a MultiWOZ or ConvLab unified JSON file (or its .zip)"


def read_json(path: Path, member: str | None = None) -> Any:
    """Read a corpus JSON file or zip member; a damaged or hostile file is one AftInputError."""
    return io.read_json(path, member, fix=CORPUS_FIX)


def load_corpus(path: str | Path, split: str | None = None) -> Corpus:
    """Detect the format at `path` and load every split it holds.

    A file that parses but is too deep or too large to walk is one AftInputError, like one that does not parse.
    """
    path = Path(path)
    try:
        return _load_corpus(path, split)
    except (RecursionError, MemoryError) as e:
        problem = "nested too deeply to read" if isinstance(e, RecursionError) else "too large to read in memory"
        raise AftInputError(path, "<structure>", problem, CORPUS_FIX) from None


def load_held_out(path: Path, record: dict[str, Any]) -> Corpus:
    """A hold-out folder of a corpus other than MultiWOZ's schema (hold_out_splits; `record`: its holdout.json):
    its source, read by its own loader, with each example in the split its dialogue is listed in (train when in
    neither list)."""
    source = Path(str(record.get("source", "")))
    if not source.exists():
        raise AftInputError(
            path / HOLDOUT_FILE, "source", f"names {source}, which does not exist", "restore it, or delete the folder"
        )
    corpus = load_corpus(source)
    listed = {dialogue: split for split, ids in listed_dialogues(path).items() for dialogue in ids}
    examples: dict[str, list[Example]] = {}
    dialogues: dict[str, set[str]] = {}
    for example in (ex for exs in corpus.examples.values() for ex in exs):
        split = listed.get(example.dialogue_id, "train")
        examples.setdefault(split, []).append(dataclasses.replace(example, split=split))
        dialogues.setdefault(split, set()).add(example.dialogue_id)
    counts = {split: len(ids) for split, ids in dialogues.items()}
    return Corpus(corpus.format, path, examples, counts, corpus.db_dir, record)


def _load_corpus(path: Path, split: str | None) -> Corpus:
    from aft_core.data import chat_messages, hub_parquet, schema_guided  # they build on the unified loader

    if not path.exists():
        raise AftInputError(path, "<path>", "does not exist", "pass the path of an existing corpus file or folder")
    if path.is_dir():
        if (path / HOLDOUT_FILE).is_file():
            record = io.read_json(path / HOLDOUT_FILE, fix="delete the hold-out folder and rerun: it is rebuilt")
            if isinstance(record, dict) and "format" in record:
                return load_held_out(path, record)
        if any((path / n).exists() for n in ("data.zip", "dialogues.json")):
            return load_unified(path / ("data.zip" if (path / "data.zip").exists() else "dialogues.json"))
        multiwoz_files = any(_find(path, stem) for stem in ("data", "train", "val", "test"))
        if not multiwoz_files and schema_guided.is_schema_guided(path):  # data.json's goals make it the richer one
            return schema_guided.load_schema_guided(path, split=split)
        if not multiwoz_files and chat_messages.chat_files(path):
            return chat_messages.load_chat_messages(path)
        if not multiwoz_files and hub_parquet.table_files_under(path):
            return hub_parquet.load_hub_parquet(path)
        return load_multiwoz(path, split=split)
    if path.suffix in hub_parquet.TABLE_SUFFIXES:
        return hub_parquet.load_hub_parquet(path)
    if path.suffix == ".jsonl":
        return chat_messages.load_chat_messages(path)
    if path.suffix == ".zip" and path.name != "data.zip":
        refuse_release_archive(path)
    data = read_json(path, "data/dialogues.json" if path.name == "data.zip" else None)
    if isinstance(data, list):
        if schema_guided.looks_schema_guided(data):
            return schema_guided.load_schema_guided(path, data=data, split=split)
        if data and chat_messages.is_chat_record(data[0]):
            return chat_messages.load_chat_messages(path, data=data)
        return load_unified(path, data=data)
    if isinstance(data, dict):
        return load_multiwoz(path, split=split, data=data)
    raise AftInputError(
        path,
        "<root>",
        f"top-level JSON is a {type(data).__name__}",
        "MultiWOZ files hold an object {dialogue_id: {goal, log}}; unified files a list of dialogues",
    )


def refuse_release_archive(path: Path) -> None:
    """A release archive as downloaded (MultiWOZ_2.1.zip: a folder holding data.json, the split lists and the venue
    tables) is not one corpus file: the one-line error says to unzip it, rather than that the zip holds too many
    JSON files."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return  # read_json names the damage
    inner = sorted(n for n in names if Path(n).name == "data.json" and "/" in n.strip("/"))
    if inner and sum(n.endswith(".json") for n in names) > 1:  # a lone data.json inside is read as one file
        folder = Path(inner[0]).parent
        raise AftInputError(
            path,
            "<zip member>",
            f"is a release archive: its {folder}/ holds data.json with the split lists and venue tables",
            f"unzip it and pass the folder (e.g. {path.parent / folder})",
        )


# --- hold-out of a single-split corpus --------------------------------------------------------------


def hold_out_splits(
    source: str | Path, out_dir: str | Path, test_share: float = 0.1, validation_share: float = 0.1
) -> dict[str, Any]:
    """Divide a single-split corpus into train/validation/test, by dialogue, deterministically.

    Dialogues are ordered by sha256 of their id (independent of file order); the first `test_share`
    of them are test, the next `validation_share` validation, the rest train. `out_dir` becomes a folder
    that every stage loads as it is: `valListFile.txt`/`testListFile.txt` name the held-out dialogues,
    `holdout.json` records the rule and the counts, and nothing is copied. For the MultiWOZ schema it is a
    MultiWOZ folder (`data.json[.zip]` and `db/` are links to the source; its goals serve conversations); for
    any other corpus `holdout.json` also names the source and its format, and `load_held_out` reads the source
    and gives each example its dialogue's split. Returns the record.
    """
    source, out = Path(source).resolve(), Path(out_dir)
    corpus = load_corpus(source)
    if len(corpus.examples) != 1:
        raise AftInputError(
            source,
            "<splits>",
            f"hold-out needs a single-split corpus, this one has splits {sorted(corpus.examples)}",
            "pass a corpus with one split (one file), or use its train/validation/test as they are",
        )
    ids = sorted(
        {ex.dialogue_id for exs in corpus.examples.values() for ex in exs},
        key=lambda d: hashlib.sha256(d.encode()).hexdigest(),
    )
    n_test, n_val = round(len(ids) * test_share), round(len(ids) * validation_share)
    if len(ids) - n_test - n_val < 1 or n_test < 1 or n_val < 1:
        raise AftInputError(
            source,
            "<dialogues>",
            f"{len(ids)} dialogues are too few to hold out test and validation dialogues and keep some for training",
            "use a larger corpus file",
        )
    record: dict[str, Any] = {
        "source": str(source),
        "rule": f"dialogues ordered by sha256(dialogue_id): first {test_share:.0%} test, "
        f"next {validation_share:.0%} validation, the rest train",
        "dialogues": {"test": n_test, "validation": n_val, "train": len(ids) - n_test - n_val},
    }
    if corpus.format != "multiwoz":
        record["format"] = corpus.format  # read through the source's own loader (load_held_out)
    old = out / HOLDOUT_FILE
    # Never replace a user's files by links: only a hold-out's own files (links, lists, a temporary name left by an
    # interrupted write) may be there already
    lists = {split: LIST_FILES[split][0] for split in ("test", "validation")}
    own = {HOLDOUT_FILE, *lists.values()}
    foreign = sorted(
        p.name
        for p in (out.iterdir() if out.is_dir() else ())
        if not p.is_symlink() and p.name not in own and not io.is_temporary(p)
    )
    if foreign:
        raise AftInputError(
            out,
            "--out",
            f"holds files of its own ({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}), so it is not a "
            "hold-out folder",
            "pass a new or empty folder",
        )
    out.mkdir(parents=True, exist_ok=True)
    if old.exists() and json.loads(old.read_text()) == record:
        return record  # the same hold-out is already in place
    tables = venue_tables(source.parent) if corpus.format == "multiwoz" else None
    links = [(out / "db", tables)] if tables is not None else []
    if corpus.format == "multiwoz":
        links.insert(0, (out / ("data.json.zip" if source.suffix == ".zip" else "data.json"), source))
    for link, target in links:
        if link.is_symlink():
            link.unlink()
        os.symlink(target, link)
    write_text_atomic(out / lists["test"], "\n".join(ids[:n_test]) + "\n")
    write_text_atomic(out / lists["validation"], "\n".join(ids[n_test : n_test + n_val]) + "\n")
    write_json_atomic(old, record)  # last: its presence marks a complete hold-out folder
    return record


# --- MultiWOZ original schema -------------------------------------------------------------------


def _split_from_name(path: Path) -> str:
    stem = path.name.split(".")[0].lower()
    for key, split in SPLIT_ALIASES.items():
        if key == stem or stem.startswith(key):
            return split
    return "train"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.json", f"{stem}.json.zip"):
        if (folder / name).exists():
            return folder / name
    return None


def split_in_name(file: Path, default: str | None = None) -> str:
    """The split a data file holds: the first word of its name that names one (`train-00000-of-00001.parquet`,
    `validation.jsonl`), else its folder's name, else `default`; without one, an AftInputError."""
    for word in re.split(r"[-_.\s]", file.stem.lower()):
        if word in SPLIT_ALIASES:
            return SPLIT_ALIASES[word]
    split = SPLIT_ALIASES.get(file.parent.name.lower()) or default
    if split is None:
        raise AftInputError(
            file,
            "<file name>",
            "names no split (train, validation or test), and neither does its folder",
            "name the file for its split (train…, validation…, test…) or put it in a folder so named",
        )
    return split


def list_file(folder: Path, split: str) -> Path | None:
    """The file listing the dialogues of `split` (validation or test) in a MultiWOZ folder, when it has one."""
    return next((folder / name for name in LIST_FILES[split] if (folder / name).is_file()), None)


def listed_dialogues(folder: Path) -> dict[str, list[str]]:
    """split (validation, test) -> the dialogue ids its list file in `folder` names; [] where there is none."""
    return {split: read_split_list(f) if (f := list_file(folder, split)) is not None else [] for split in LIST_FILES}


def read_split_list(path: Path) -> list[str]:
    """The dialogue ids of a list file: one per line, or a JSON list of them."""
    text = io.read_text(path)
    if text.lstrip().startswith("["):
        ids = io.read_json(path, fix="write one dialogue id per line, or a JSON list of ids")
        if isinstance(ids, list):
            return [str(i).strip() for i in ids if str(i).strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]


def with_release_acts(folder: Path, dialogues: dict[str, Any]) -> dict[str, Any]:
    """The dialogues of a MultiWOZ folder's data.json with the system turns' acts of its `dialogue_acts.json` where
    the turns carry none: MultiWOZ 2.0 keeps them in that file alone, keyed by the dialogue id without `.json` and
    by "k" for the k-th system turn (log[2k-1]), "No Annotation" where a turn has none. Each such turn gets them as
    its `dialog_act`, as 2.1 has them, so the reader of system text, corpus Inform/Success and the salient I_x read
    2.0 as they read 2.1. Unchanged (the same object) when data.json has acts (2.1 on) or the file is absent."""
    acts_file = folder / RELEASE_ACTS
    logs = [d["log"] for d in dialogues.values() if isinstance(d, dict) and isinstance(d.get("log"), list)]
    has_acts = any(isinstance(t, dict) and "dialog_act" in t for log in logs for t in log)
    if has_acts or not acts_file.is_file():
        return dialogues
    acts = io.read_json(acts_file, fix=f"restore MultiWOZ 2.0's {RELEASE_ACTS}, or remove it")
    if not isinstance(acts, dict):
        raise AftInputError(
            acts_file, "<root>", "expected an object {dialogue_id: {turn: acts}}", f"restore {RELEASE_ACTS}"
        )
    merged = {}
    for dialogue_id, dialogue in dialogues.items():
        by_turn = acts.get(dialogue_id, acts.get(dialogue_id.removesuffix(".json")))
        log = dialogue.get("log") if isinstance(dialogue, dict) else None
        if not isinstance(by_turn, dict) or not isinstance(log, list):
            merged[dialogue_id] = dialogue
            continue
        log = [dict(t) if isinstance(t, dict) else t for t in log]
        for key, turn_acts in by_turn.items():
            index = 2 * int(key) - 1 if str(key).isdigit() else -1
            # acts past the log's end ("garbage annotation" at some dialogues' ends) have no turn to go to
            if 0 < index < len(log) and isinstance(log[index], dict) and isinstance(turn_acts, dict):
                log[index]["dialog_act"] = turn_acts
        merged[dialogue_id] = {**dialogue, "log": log}
    return merged


def venue_tables(folder: Path) -> Path | None:
    """Where a corpus folder's venue databases (`<domain>_db.json`) lie: its `db/` (TownInfo, ConvLab), else the
    folder itself (MultiWOZ 2.x as released keeps restaurant_db.json ... beside data.json); None when neither."""
    if (folder / "db").is_dir():
        return folder / "db"
    return folder if folder.is_dir() and any(folder.glob("*_db.json")) else None


def load_multiwoz(path: Path, split: str | None = None, data: dict | None = None) -> Corpus:
    """Load MultiWOZ-schema dialogues from a file or a folder (see the module docstring)."""
    by_split: dict[str, tuple[Path, dict[str, Any]]] = {}
    holdout = None
    if path.is_dir():
        per_split = {s: _find(path, stem) for stem, s in (("train", "train"), ("val", "validation"), ("test", "test"))}
        whole = _find(path, "data")
        if whole is not None:
            dialogues = read_json(whole)
            _check_object(whole, dialogues)
            dialogues = with_release_acts(path, dialogues)
            assigned: dict[str, str] = {}
            for split_name in LIST_FILES:
                listing = list_file(path, split_name)
                if listing is None:
                    continue
                for dialogue_id in read_split_list(listing):
                    if dialogue_id not in dialogues:
                        raise AftInputError(
                            listing,
                            dialogue_id,
                            f"names dialogue '{dialogue_id}', which {whole.name} lacks",
                            "remove the id from the list or use the matching data file",
                        )
                    if dialogue_id in assigned:
                        raise AftInputError(
                            listing,
                            dialogue_id,
                            f"dialogue already listed for split '{assigned[dialogue_id]}'",
                            "list each dialogue in one split only",
                        )
                    assigned[dialogue_id] = split_name
            for split_name in ("train", "validation", "test"):
                chosen = {k: v for k, v in dialogues.items() if assigned.get(k, "train") == split_name}
                if chosen:
                    by_split[split_name] = (whole, chosen)
        elif any(per_split.values()):
            seen: dict[str, str] = {}
            for split_name, file in per_split.items():
                if file is None:
                    continue
                dialogues = read_json(file)
                _check_object(file, dialogues)
                for dialogue_id in dialogues:
                    if dialogue_id in seen:
                        raise AftInputError(
                            file,
                            dialogue_id,
                            f"dialogue also appears in split '{seen[dialogue_id]}'",
                            "keep each dialogue in one split file only",
                        )
                    seen[dialogue_id] = split_name
                by_split[split_name] = (file, dialogues)
        else:
            raise AftInputError(
                path,
                "<folder>",
                "holds no data.json, train/val/test.json(.zip), data.zip or train/dev/test folders of "
                "dialogues_NNN.json",
                "point at a MultiWOZ data file, a folder of split files, a unified data.zip, or a MultiWOZ 2.2 / SGD "
                "folder",
            )
        db_dir = venue_tables(path)
        if (path / HOLDOUT_FILE).is_file():
            holdout = io.read_json(path / HOLDOUT_FILE, fix="delete the hold-out folder and rerun: it is rebuilt")
    else:
        dialogues = data if data is not None else read_json(path)
        _check_object(path, dialogues)
        by_split[split or _split_from_name(path)] = (path, dialogues)
        db_dir = venue_tables(path.parent)

    examples: dict[str, list[Example]] = {}
    counts: dict[str, int] = {}
    for split_name, (file, dialogues) in by_split.items():
        examples[split_name] = []
        for dialogue_id, dialogue in dialogues.items():
            examples[split_name].extend(_multiwoz_examples(file, split_name, dialogue_id, dialogue))
        counts[split_name] = len(dialogues)
    return Corpus("multiwoz", path, examples, counts, db_dir, holdout)


def _check_object(path: Path, data: Any) -> None:
    if not isinstance(data, dict):
        raise AftInputError(
            path,
            "<root>",
            f"expected an object {{dialogue_id: {{goal, log}}}}, got a {type(data).__name__}",
            "pass a MultiWOZ original-schema file, or a unified-schema data.zip",
        )
    if not data:
        raise AftInputError(path, "<root>", "holds no dialogues", "pass a non-empty corpus file")


def multiwoz_belief_state(metadata: Any) -> dict[str, dict[str, str]]:
    """Flatten MultiWOZ turn metadata into domain -> slot -> value, keeping only filled slots."""
    state: dict[str, dict[str, str]] = {}
    if not isinstance(metadata, dict):
        return state
    for domain, parts in metadata.items():
        if not isinstance(parts, dict):
            continue
        slots: dict[str, str] = {}
        for part in ("semi", "book"):
            for slot, value in (parts.get(part) or {}).items():
                if isinstance(value, str) and value.strip().lower() not in MULTIWOZ_EMPTY_VALUES:
                    slots[slot] = value
        if slots:
            state[domain] = slots
    return state


def _multiwoz_examples(file: Path, split: str, dialogue_id: str, dialogue: Any) -> list[Example]:
    where = f"dialogue '{dialogue_id}'"
    if not isinstance(dialogue, dict) or not isinstance(dialogue.get("log"), list):
        raise AftInputError(
            file,
            f"{dialogue_id}.log",
            f"{where} has no 'log' list of turns",
            "each dialogue must be an object with a 'log' list (MultiWOZ original schema)",
        )
    log = dialogue["log"]
    turns, states = [], []
    for i, raw_turn in enumerate(log):
        if not isinstance(raw_turn, dict):
            raise AftInputError(
                file, f"{dialogue_id}.log[{i}]", f"{where} turn {i} is not an object", "give every turn a 'text'"
            )
        text = raw_turn.get("text")
        if not isinstance(text, str):
            raise AftInputError(
                file,
                f"{dialogue_id}.log[{i}].text",
                f"{where} turn {i} has no text string",
                "give every turn a 'text' string",
            )
        if not text.strip():
            raise AftInputError(
                file,
                f"{dialogue_id}.log[{i}].text",
                f"{where} turn {i} is an empty utterance",
                "remove the dialogue or fill the turn's text",
            )
        turns.append(Turn("user" if i % 2 == 0 else "system", " ".join(text.split()), _turn_values(log, i)))
        states.append(multiwoz_belief_state(raw_turn.get("metadata")) if i % 2 == 1 else {})
    if len(turns) < 2:
        raise AftInputError(
            file, f"{dialogue_id}.log", f"{where} has no system turn", "drop dialogues with fewer than two turns"
        )
    raw_goal = dialogue.get("goal")
    goal: dict[str, Any] = raw_goal if isinstance(raw_goal, dict) else {}
    domains = [d for d, v in goal.items() if d not in NON_DOMAIN_GOAL_KEYS and isinstance(v, dict) and v]
    return examples_from_turns(dialogue_id, split, turns, states, domains)


def _turn_values(log: list[dict[str, Any]], i: int) -> tuple[str, ...]:
    """The slot values of turn `i`: its `span_info` spans (MultiWOZ 2.1 on). A MultiWOZ 2.0 turn has no spans: a
    system turn's are the values of its acts (with_release_acts) that its text writes, a user turn's the values of
    the belief state after it (the next turn's metadata) that its text writes."""
    turn = log[i]
    if "span_info" in turn:
        spans = turn.get("span_info") or []
        return tuple(dict.fromkeys(str(span[2]) for span in spans if isinstance(span, list) and len(span) >= 3))
    if i % 2 == 1:
        found = turn.get("dialog_act")
        acts: dict[str, Any] = found if isinstance(found, dict) else {}
        pairs = [pair for listed in acts.values() if isinstance(listed, list) for pair in listed]
        said = [pair[1] for pair in pairs if isinstance(pair, list) and len(pair) >= 2]
    else:
        after = log[i + 1].get("metadata") if i + 1 < len(log) and isinstance(log[i + 1], dict) else None
        said = [v for slots in multiwoz_belief_state(after).values() for v in slots.values()]
    text = turn["text"]
    # a value is a word or more ("?" marks a request, "none" an empty slot)
    written = [
        v for v in said if isinstance(v, str) and re.search(r"\w", v) and v.strip().lower() not in MULTIWOZ_EMPTY_VALUES
    ]
    return tuple(dict.fromkeys(v for v in written if in_text(v, text)))


# --- ConvLab unified schema ---------------------------------------------------------------------


def load_unified(path: Path, data: list | None = None) -> Corpus:
    """Load a ConvLab unified-schema corpus (a list of dialogues, each with its `data_split`)."""
    if data is None:
        data = read_json(path, "data/dialogues.json" if path.suffix == ".zip" else None)
    if not isinstance(data, list):
        raise AftInputError(
            path,
            "<root>",
            f"expected a list of dialogues, got a {type(data).__name__}",
            "pass a ConvLab unified dialogues.json or data.zip",
        )
    if not data:
        raise AftInputError(path, "<root>", "holds no dialogues", "pass a non-empty corpus file")
    examples: dict[str, list[Example]] = {}
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    for n, dialogue in enumerate(data):
        split, dialogue_examples = unified_dialogue_examples(path, n, dialogue, seen)
        examples.setdefault(split, []).extend(dialogue_examples)
        counts[split] = counts.get(split, 0) + 1
    db_dir = path.parent / "db"
    if db_dir.is_dir():
        return Corpus("unified", path, examples, counts, db_dir)
    # ConvLab's unified MultiWOZ ships its venue databases inside data.zip (data/<domain>_db.json)
    return Corpus("unified", path, examples, counts, path if zip_holds_venue_tables(path) else None)


def zip_holds_venue_tables(path: Path) -> bool:
    """Does the zip at `path` hold `<domain>_db.json` members (ConvLab unified data.zip's venue databases)?"""
    import zipfile

    if path.suffix != ".zip":
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(Path(n).name.endswith("_db.json") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def in_text(value: str, text: str) -> bool:
    """Is `value` written in `text` as whole words (case-insensitive)?"""
    return re.search(rf"(?<!\w){re.escape(value.strip().lower())}(?!\w)", text.lower()) is not None


def multiwoz21_slot(name: str) -> str:
    """A belief-state slot name in MultiWOZ 2.1's spelling where it is one of MULTIWOZ21_SLOTS, else as given."""
    return MULTIWOZ21_SLOTS.get(name.replace(" ", "").lower(), name)


def check_turn_list(path: Path, n: int, dialogue: Any, fix: str) -> None:
    """The `n`-th dialogue of a list-of-dialogues file must be an object with a `turns` list; `fix` says what a
    dialogue of that schema holds."""
    if not isinstance(dialogue, dict) or not isinstance(dialogue.get("turns"), list):
        raise AftInputError(path, f"[{n}].turns", f"dialogue {n} has no 'turns' list", fix)


def unified_dialogue_examples(path: Path, n: int, dialogue: Any, seen: dict[str, str]) -> tuple[str, list[Example]]:
    """(split, examples) of the `n`-th dialogue of `path` in the unified schema (dialogue_id, data_split, domains,
    turns of speaker, utterance, dialogue_acts.non-categorical values and state); `seen` maps the ids read so far to
    their split, and gains this one."""
    check_turn_list(path, n, dialogue, "each dialogue needs dialogue_id, data_split and turns (ConvLab unified schema)")
    dialogue_id = str(dialogue.get("dialogue_id", n))
    split_raw = str(dialogue.get("data_split", "")).lower()
    if split_raw not in SPLIT_ALIASES:
        raise AftInputError(
            path, f"{dialogue_id}.data_split", f"unknown split '{split_raw}'", "use train, validation or test"
        )
    split = SPLIT_ALIASES[split_raw]
    if dialogue_id in seen:
        raise AftInputError(
            path,
            f"{dialogue_id}.dialogue_id",
            f"dialogue id appears twice (splits '{seen[dialogue_id]}' and '{split}')",
            "give every dialogue a unique id and one split",
        )
    seen[dialogue_id] = split
    turns: list[Turn] = []
    states: list[dict[str, dict[str, str]]] = []
    for i, raw_turn in enumerate(dialogue["turns"]):
        field_name = f"{dialogue_id}.turns[{i}]"
        if not isinstance(raw_turn, dict) or raw_turn.get("speaker") not in ("user", "system"):
            raise AftInputError(
                path, f"{field_name}.speaker", "speaker must be 'user' or 'system'", "fix the turn's speaker field"
            )
        text = raw_turn.get("utterance")
        if not isinstance(text, str) or not text.strip():
            raise AftInputError(
                path,
                f"{field_name}.utterance",
                "empty or missing utterance",
                "remove the dialogue or fill the turn's utterance",
            )
        if turns and turns[-1].speaker == raw_turn["speaker"]:
            raise AftInputError(
                path,
                f"{field_name}.speaker",
                f"two '{raw_turn['speaker']}' turns in a row: turns must alternate",
                "merge consecutive turns of one speaker",
            )
        acts = raw_turn.get("dialogue_acts") or {}
        # non-categorical values are spans of the utterance; a categorical one (`cheap`, `centre`) counts where the
        # utterance says it, as MultiWOZ 2.1's span annotations mark it
        values = tuple(
            dict.fromkeys(
                [str(a.get("value")) for a in acts.get("non-categorical", []) if isinstance(a, dict) and a.get("value")]
                + [
                    str(a["value"])
                    for a in acts.get("categorical", [])
                    if isinstance(a, dict) and str(a.get("value") or "").strip() and in_text(str(a["value"]), text)
                ]
            )
        )
        turns.append(Turn(raw_turn["speaker"], " ".join(text.split()), values))
        raw_state = raw_turn.get("state")
        state: dict[str, Any] = raw_state if isinstance(raw_state, dict) else {}
        filled = {
            d: {
                multiwoz21_slot(str(s)): v
                for s, v in slots.items()
                if isinstance(v, str) and v.strip().lower() not in MULTIWOZ_EMPTY_VALUES
            }
            for d, slots in state.items()
            if isinstance(slots, dict)
        }
        # ConvLab's unified MultiWOZ lists every domain in every state, unfilled ones with "": a domain with no
        # filled slot is not in the state (entity accuracy would take any of its venues as answering it)
        states.append({d: slots for d, slots in filled.items() if slots})
    if not any(t.speaker == "system" for t in turns[1:]):
        raise AftInputError(
            path,
            f"{dialogue_id}.turns",
            f"dialogue '{dialogue_id}' has no system turn after the first",
            "drop dialogues without a system response",
        )
    # In the unified schema the state sits on user turns; the system turn answers the state just before it.
    states = [states[i - 1] if i and turns[i].speaker == "system" else {} for i in range(len(turns))]
    domains = [str(d) for d in dialogue.get("domains") or []]
    return split, examples_from_turns(dialogue_id, split, turns, states, domains)
