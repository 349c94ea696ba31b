"""Loading the schema-guided layout: MultiWOZ 2.2 as its authors ship it, and the Schema-Guided Dialogue corpus (SGD).

Both keep one folder per split (`train/`, `dev/`, `test/`) of `dialogues_NNN.json` files, each a list of
dialogues `{dialogue_id, services, turns: [{speaker: USER|SYSTEM, utterance, frames}]}`. A frame belongs to one
service and carries
- `slots`: the character spans of slot values in the utterance (`start`, `exclusive_end`; MultiWOZ 2.2 also gives
  the `value`, SGD does not). MultiWOZ 2.2's `copy_from` entries have no span and are skipped;
- `actions` (SGD): dialogue acts with their `values`;
- `state` (user turns): `slot_values`, slot -> list of accepted values, the belief state after that turn.

Accepted inputs: the corpus folder (its split folders), one split folder, or one `dialogues_NNN.json` file (the
split is read from the folder's name: `dev` is validation). MultiWOZ 2.2's `dialog_acts.json` beside the split
folders adds its annotated spans, categorical values included. A `db/` folder beside the data holds venue
databases, as for MultiWOZ 2.1.

What becomes of it (the same examples as the other schemas):
- a turn's slot values: the texts of its spans, the values of its acts and of `dialog_acts.json`'s spans that occur
  in the utterance (the `salient` I_x of AFT_SPEC §4);
- a system turn's belief state: the user turn's state just before it, service -> slot -> its first value. MultiWOZ
  2.2's slot names (`restaurant-bookday`) are read back into MultiWOZ 2.1's (`day`), so its venue databases give
  entity accuracy as they do for 2.1;
- a dialogue's domains: its `services`.
Dialogue goals are not part of this layout, so closed-loop conversations and corpus Inform/Success are skipped
with that reason (aft_core.dialogue.closed_loop.reader_gate).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aft_core.data.corpus import (
    SPLIT_ALIASES,
    Corpus,
    check_turn_list,
    multiwoz21_slot,
    read_json,
    unified_dialogue_examples,
)
from aft_core.data.examples import Example
from aft_core.errors import AftInputError

FORMAT = "schema-guided"
DIALOGUE_FILE = re.compile(r"dialogues_\d+\.json$")
DIALOG_ACTS = "dialog_acts.json"  # MultiWOZ 2.2's acts with their spans, beside the split folders
LAYOUT_FIX = "point at a folder of train/dev/test folders of dialogues_NNN.json files (MultiWOZ 2.2 or SGD)"


def dialogue_files(folder: Path) -> list[Path]:
    """The `dialogues_NNN.json` files directly in `folder`, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and DIALOGUE_FILE.match(p.name))


def split_folders(folder: Path) -> dict[str, Path]:
    """split -> its folder, for the subfolders of `folder` named as a split (`train`, `dev`, `test`, ...) that hold
    dialogue files."""
    found: dict[str, Path] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        split = SPLIT_ALIASES.get(sub.name.lower())
        if split is not None and dialogue_files(sub):
            if split in found:
                raise AftInputError(
                    folder,
                    sub.name,
                    f"two folders hold split '{split}': {found[split].name} and {sub.name}",
                    "keep one folder per split",
                )
            found[split] = sub
    return found


def is_schema_guided(folder: Path) -> bool:
    """Is `folder` in this layout: a folder of split folders, or a split folder? (A file is told by its contents,
    `looks_schema_guided`.)"""
    return bool(split_folders(folder)) or bool(dialogue_files(folder))


def looks_schema_guided(data: list[Any]) -> bool:
    """A parsed list of dialogues in this layout rather than the ConvLab unified one (upper-case speakers and
    frames, no data_split)."""
    first = data[0] if data else None
    if not isinstance(first, dict) or "data_split" in first or not isinstance(first.get("turns"), list):
        return False
    turn = first["turns"][0] if first["turns"] else None
    return isinstance(turn, dict) and ("frames" in turn or str(turn.get("speaker", "")).isupper())


def _split_of(folder: Path) -> str:
    split = SPLIT_ALIASES.get(folder.name.lower())
    if split is None:
        raise AftInputError(
            folder,
            "<folder name>",
            f"the split of a folder named '{folder.name}' is unknown",
            f"name the split folder one of {sorted(SPLIT_ALIASES)}, or {LAYOUT_FIX}",
        )
    return split


def load_schema_guided(path: Path, data: list[Any] | None = None, split: str | None = None) -> Corpus:
    """Load the schema-guided layout at `path` (see the module docstring); `data`: the file's dialogues, when
    `path` is one file already read; `split`: the split of a single split folder or file, instead of its folder's
    name."""
    if path.is_dir():
        folders = split_folders(path)
        if folders:
            files = {name: dialogue_files(folder) for name, folder in folders.items()}
            root = path
        else:
            files = {split or _split_of(path): dialogue_files(path)}
            root = path.parent
    else:
        files = {split or _split_of(path.parent): [path]}
        root = path.parent.parent
    if not any(files.values()):
        raise AftInputError(path, "<folder>", "holds no dialogues_NNN.json files", LAYOUT_FIX)
    acts = read_json(root / DIALOG_ACTS) if (root / DIALOG_ACTS).is_file() else {}
    if not isinstance(acts, dict):
        raise AftInputError(
            root / DIALOG_ACTS,
            "<root>",
            f"expected an object {{dialogue_id: {{turn_id: acts}}}}, got a {type(acts).__name__}",
            "restore MultiWOZ 2.2's dialog_acts.json, or remove it",
        )
    examples: dict[str, list[Example]] = {}
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    for split_name, split_files in files.items():
        for file in split_files:
            dialogues = data if data is not None else read_json(file)
            if not isinstance(dialogues, list) or not dialogues:
                raise AftInputError(
                    file,
                    "<root>",
                    "expected a non-empty list of dialogues",
                    f"restore the file, or remove it from its folder; {LAYOUT_FIX}",
                )
            for n, dialogue in enumerate(dialogues):
                unified = as_unified(file, n, dialogue, split_name, acts)
                _, found = unified_dialogue_examples(file, n, unified, seen)
                examples.setdefault(split_name, []).extend(found)
                counts[split_name] = counts.get(split_name, 0) + 1
    beside = ([path / "db"] if path.is_dir() else []) + [root / "db"]
    return Corpus(FORMAT, path, examples, counts, next((d for d in beside if d.is_dir()), None))


def as_unified(file: Path, n: int, dialogue: Any, split: str, acts: dict[str, Any]) -> dict[str, Any]:
    """The `n`-th dialogue of `file` in the ConvLab unified schema's shape, which the unified loader checks and
    turns into examples (speakers alternate, utterances are not empty, ...)."""
    check_turn_list(
        file, n, dialogue, "each dialogue needs dialogue_id, services and turns (MultiWOZ 2.2 / SGD layout)"
    )
    dialogue_id = str(dialogue.get("dialogue_id", n))
    found = acts.get(dialogue_id)
    dialogue_acts: dict[str, Any] = found if isinstance(found, dict) else {}
    turns = []
    for i, raw in enumerate(dialogue["turns"]):
        if not isinstance(raw, dict):
            raise AftInputError(file, f"{dialogue_id}.turns[{i}]", "a turn is not an object", LAYOUT_FIX)
        text = raw.get("utterance")
        frames = [f for f in raw.get("frames") or [] if isinstance(f, dict)]
        turn_acts = dialogue_acts.get(str(raw.get("turn_id", i)))
        turns.append(
            {
                "speaker": str(raw.get("speaker", "")).lower(),
                "utterance": text,
                "dialogue_acts": {
                    "non-categorical": [
                        {"value": v} for v in turn_values(text if isinstance(text, str) else "", frames, turn_acts)
                    ]
                },
                "state": frame_state(frames),
            }
        )
    services = dialogue.get("services")
    return {
        "dialogue_id": dialogue_id,
        "data_split": split,
        "domains": [str(s) for s in services] if isinstance(services, list) else [],
        "turns": turns,
    }


def turn_values(text: str, frames: list[dict[str, Any]], turn_acts: Any) -> list[str]:
    """A turn's annotated slot values, in order of appearance, each once: the text of every span of its frames'
    `slots`, the values of its frames' `actions`, and the values of MultiWOZ 2.2's `dialog_acts.json` spans
    (`turn_acts`: that file's entry for the turn); an act's value only where it occurs in `text`."""
    values: list[str] = []
    for frame in frames:
        for slot in frame.get("slots") or []:
            start, end = (slot.get("start"), slot.get("exclusive_end")) if isinstance(slot, dict) else (None, None)
            if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text):
                values.append(text[start:end])
    mentioned: list[str] = []
    for frame in frames:
        for action in frame.get("actions") or []:
            if isinstance(action, dict):
                mentioned.extend(v for v in action.get("values") or [] if isinstance(v, str))
    if isinstance(turn_acts, dict):
        for span in turn_acts.get("span_info") or []:
            if isinstance(span, list) and len(span) >= 3 and isinstance(span[2], str):
                mentioned.append(span[2])
    lowered = text.lower()
    values.extend(v for v in mentioned if v.strip() and v.lower() in lowered)
    return list(dict.fromkeys(v.strip() for v in values if v.strip()))


def frame_state(frames: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The belief state of a user turn: service -> slot -> the first of its accepted values (MultiWOZ 2.2's
    `<service>-` prefix dropped and its names read as MultiWOZ 2.1's, corpus.MULTIWOZ21_SLOTS)."""
    state: dict[str, dict[str, str]] = {}
    for frame in frames:
        service = str(frame.get("service", ""))
        raw = frame.get("state")
        slot_values = raw.get("slot_values") if isinstance(raw, dict) else None
        if not service or not isinstance(slot_values, dict):
            continue
        slots: dict[str, str] = {}
        for slot, accepted in slot_values.items():
            value = accepted[0] if isinstance(accepted, list) and accepted else accepted
            if not isinstance(value, str) or not value.strip():
                continue
            name = str(slot).removeprefix(f"{service}-")
            slots[multiwoz21_slot(name)] = value
        if slots:
            state[service] = slots
    return state
