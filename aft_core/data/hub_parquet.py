"""Loading the Hugging Face hub's parquet copies of dialogue corpora: `multi_woz_v22` (MultiWOZ 2.2),
`schema_guided_dstc8` (SGD) and `daily_dialog`, as `snapshot_download` or the hub's file browser leaves them.

Accepted inputs: one `.parquet` file, or a folder holding them at any depth (the hub's
`data/train-00000-of-00001.parquet`, its parquet conversion's `<config>/<split>/0000.parquet`, a cache snapshot);
`.arrow` files likewise (`datasets`' `save_to_disk` folders: `train/data-00000-of-00001.arrow`, and its cache).
A file's split is a word of its name (`train`, `validation`, `test`, ...) or else its folder's name; the shards of
one split lie in one folder, so a download holding two configurations (`v2.2/` and `v2.2_active_only/`) is refused
with the fix of naming one.

The hub's `datasets` library stores a list of records column-wise: a dialogue's `turns` is one record of lists
(`{"speaker": [...], "utterance": [...], "frames": [...]}`), and so are each turn's `frames` and each frame's
`slots`. `records` turns every struct whose fields are all lists back into a list of records, reading the Arrow
schema rather than guessing from values, so empty lists come back the same way.

What each copy becomes:
- MultiWOZ 2.2 and SGD rows (`dialogue_id`, `services`, `turns`) are put back in the shape their authors ship
  (aft_core.data.schema_guided) and loaded by that module's rules: the same examples as the JSON release. Two
  known quirks of the hub's MultiWOZ 2.2 copy are undone: its slot spans have `start` and `exclusive_end`
  swapped (a span is read between the smaller and the larger), and its speakers are ClassLabel integers (names from
  the file's `huggingface` schema metadata; without it, the labels' published order USER, SYSTEM). Each turn's
  `dialogue_acts.span_info` plays the part of the release's `dialog_acts.json`. The hub's default configuration
  (`v2.2_active_only`) keeps only frames with an active intent, so it has fewer slot spans and states than `v2.2`;
- DailyDialog rows (`dialog`, a list of utterances) become dialogues whose speakers alternate from the user, with
  ids `<split>-<row>`; they carry no annotations (use I_x = history);
- rows of a chat dataset (`messages` or `conversations`) are read as aft_core.data.chat_messages reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aft_core.data.chat_messages import CHAT_KEYS, chat_dialogue
from aft_core.data.corpus import Corpus, split_in_name, unified_dialogue_examples
from aft_core.data.examples import Example
from aft_core.data.schema_guided import FORMAT as SCHEMA_GUIDED
from aft_core.data.schema_guided import as_unified
from aft_core.errors import AftInputError

FIX = (
    "point at a parquet file or folder of the hub's multi_woz_v22, schema_guided_dstc8 or daily_dialog, one "
    "configuration, with train/validation/test in its file or folder names"
)
SPEAKER_NAMES = ("USER", "SYSTEM")  # the ClassLabel order published for multi_woz_v22 and schema_guided_dstc8


TABLE_SUFFIXES = (".parquet", ".arrow")  # the hub's files; `datasets`' save_to_disk folders and its cache


def table_files_under(folder: Path) -> list[Path]:
    """Every parquet or Arrow file under `folder`, in name order."""
    return sorted(p for p in folder.rglob("*") if p.suffix in TABLE_SUFFIXES and p.is_file())


def parquet_files(path: Path) -> dict[str, list[Path]]:
    """split -> its parquet or Arrow files (name order), for one file or every such file under a folder."""
    files = [path] if path.is_file() else table_files_under(path)
    if not files:
        raise AftInputError(path, "<folder>", "holds no .parquet or .arrow files", FIX)
    found: dict[str, list[Path]] = {}
    for file in files:
        split = split_in_name(file)
        if found.get(split) and found[split][0].parent != file.parent:
            raise AftInputError(
                file,
                "<path>",
                f"split '{split}' has files in two folders: {found[split][0].parent} and {file.parent}",
                "point at one configuration's folder (e.g. v2.2 or v2.2_active_only), not the folder above both",
            )
        found.setdefault(split, []).append(file)
    return found


def read_rows(file: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows as records, the file's `huggingface` features metadata or {}) of one parquet file, or of one Arrow
    stream file as `datasets`' save_to_disk and cache write them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file.suffix == ".arrow":
            with pa.memory_map(str(file)) as source:
                table = pa.ipc.open_stream(source).read_all()
        else:
            table = pq.read_table(file)
    except (pa.ArrowException, OSError) as e:
        kind = "Arrow stream" if file.suffix == ".arrow" else "parquet"
        raise AftInputError(file, "<file>", f"is not a readable {kind} file ({type(e).__name__})", FIX) from None
    schema = table.schema
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        meta = {}
    features = meta.get("info", {}).get("features", {}) if isinstance(meta, dict) else {}
    rows = [{f.name: records(row.get(f.name), f.type) for f in schema} for row in table.to_pylist()]  # a row stays one
    return rows, features if isinstance(features, dict) else {}


def records(value: Any, arrow_type: Any) -> Any:
    """`value` (of a row's column) with every column-wise list of records (a struct whose fields are all lists) made
    a list of records, decided by the Arrow type, at any depth."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_struct(arrow_type):
        fields = [arrow_type.field(i) for i in range(arrow_type.num_fields)]
        if fields and all(pa.types.is_list(f.type) or pa.types.is_large_list(f.type) for f in fields):
            columns = {f.name: value.get(f.name) or [] for f in fields}
            n = max(len(c) for c in columns.values())
            return [
                {
                    f.name: records(columns[f.name][i] if i < len(columns[f.name]) else None, f.type.value_type)
                    for f in fields
                }
                for i in range(n)
            ]
        return {f.name: records(value.get(f.name), f.type) for f in fields}
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return [records(v, arrow_type.value_type) for v in value]
    return value


def class_names(features: Any, key: str) -> list[str] | None:
    """The ClassLabel names of the field `key` anywhere in a `huggingface` features description."""
    if isinstance(features, dict):
        found = features.get(key)
        for node in (found, found.get("feature") if isinstance(found, dict) else None):
            if isinstance(node, dict) and node.get("_type") == "ClassLabel" and isinstance(node.get("names"), list):
                return [str(n) for n in node["names"]]
        for child in features.values():
            names = class_names(child, key)
            if names:
                return names
    if isinstance(features, list):
        for child in features:
            names = class_names(child, key)
            if names:
                return names
    return None


def load_hub_parquet(path: Path) -> Corpus:
    """Load a hub parquet copy at `path` (see the module docstring)."""
    examples: dict[str, list[Example]] = {}
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    formats: set[str] = set()
    for split, files in parquet_files(path).items():
        for file in files:
            rows, features = read_rows(file)
            if not rows:
                continue
            columns = set(rows[0])
            if "turns" in columns:
                formats.add(SCHEMA_GUIDED)
                speakers = class_names(features, "speaker") or list(SPEAKER_NAMES)
                dialogues = [schema_guided_dialogue(file, n, row, split, speakers) for n, row in enumerate(rows)]
            elif any(k in columns for k in CHAT_KEYS):
                formats.add("chat")
                dialogues = [chat_dialogue(file, n, row, split) for n, row in enumerate(rows)]
            elif "dialog" in columns:
                formats.add("unified")
                dialogues = [daily_dialog_dialogue(file, n, row, split) for n, row in enumerate(rows)]
            else:
                raise AftInputError(
                    file,
                    "<columns>",
                    f"has columns {sorted(columns)}: none of 'turns' (MultiWOZ 2.2, SGD), 'messages' or "
                    "'conversations' (chat) and 'dialog' (DailyDialog)",
                    FIX,
                )
            for n, dialogue in enumerate(dialogues):
                _, found = unified_dialogue_examples(file, n, dialogue, seen)
                examples.setdefault(split, []).extend(found)
                counts[split] = counts.get(split, 0) + 1
    if not examples:
        raise AftInputError(path, "<rows>", "its parquet files hold no dialogues", FIX)
    if len(formats) > 1:
        raise AftInputError(path, "<columns>", f"mixes corpora of kinds {sorted(formats)}", FIX)
    root = path if path.is_dir() else path.parent
    beside = [root / "db", root.parent / "db"]  # a db/ the user put beside the download
    return Corpus(formats.pop(), path, examples, counts, next((d for d in beside if d.is_dir()), None))


def schema_guided_dialogue(file: Path, n: int, row: dict[str, Any], split: str, speakers: list[str]) -> dict[str, Any]:
    """Row `n` of a MultiWOZ 2.2 / SGD parquet file in the unified shape, through the schema-guided rules."""
    turns = row.get("turns")
    if not isinstance(turns, list):
        raise AftInputError(file, f"[{n}].turns", "is not a list of turns", FIX)
    dialogue_id = str(row.get("dialogue_id") or n)
    acts: dict[str, Any] = {}
    released = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise AftInputError(file, f"{dialogue_id}.turns[{i}]", "a turn is not a record", FIX)
        speaker = turn.get("speaker")
        if isinstance(speaker, int) and 0 <= speaker < len(speakers):
            speaker = speakers[speaker]
        turn_id = str(turn.get("turn_id") if turn.get("turn_id") is not None else i)
        spans = (turn.get("dialogue_acts") or {}).get("span_info") or []
        acts[turn_id] = {
            "span_info": [
                [
                    s.get("act_type"),
                    s.get("act_slot_name"),
                    s.get("act_slot_value"),
                    s.get("span_start"),
                    s.get("span_end"),
                ]
                for s in spans
                if isinstance(s, dict)
            ]
        }
        released.append(
            {
                "turn_id": turn_id,
                "speaker": speaker,
                "utterance": turn.get("utterance"),
                "frames": [released_frame(f) for f in turn.get("frames") or [] if isinstance(f, dict)],
            }
        )
    dialogue = {"dialogue_id": dialogue_id, "services": list(row.get("services") or []), "turns": released}
    return as_unified(file, n, dialogue, split, {dialogue_id: acts})


def released_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """A hub frame as the JSON release writes it: spans ordered (the hub's MultiWOZ 2.2 swaps their ends) and the
    state's slot values an object slot -> accepted values."""
    slots = []
    for slot in frame.get("slots") or []:
        a, b = (slot.get("start"), slot.get("exclusive_end")) if isinstance(slot, dict) else (None, None)
        if isinstance(a, int) and isinstance(b, int) and min(a, b) >= 0:
            start, end = min(a, b), max(a, b)
            slots.append({"slot": slot.get("slot"), "start": start, "exclusive_end": end})
    out: dict[str, Any] = {"service": frame.get("service"), "slots": slots, "actions": frame.get("actions") or []}
    state = frame.get("state")
    if isinstance(state, dict):
        pairs = state.get("slot_values", state.get("slots_values"))
        out["state"] = {"active_intent": state.get("active_intent"), "slot_values": slot_value_object(pairs)}
    return out


def slot_value_object(pairs: Any) -> dict[str, list[str]]:
    """slot -> accepted values, from the hub's list of (name, value list) records (`slots_values_name` /
    `slots_values_list` in MultiWOZ 2.2, `slot_name` / `slot_value_list` in SGD) or an object already."""
    if isinstance(pairs, dict):
        return {str(k): v if isinstance(v, list) else [v] for k, v in pairs.items()}
    out: dict[str, list[str]] = {}
    for pair in pairs or []:
        if not isinstance(pair, dict):
            continue
        name = next((v for v in pair.values() if isinstance(v, str)), None)
        values = next((v for v in pair.values() if isinstance(v, list)), None)
        if name is not None and values is not None:
            out[name] = [str(v) for v in values]
    return out


def daily_dialog_dialogue(file: Path, n: int, row: dict[str, Any], split: str) -> dict[str, Any]:
    """Row `n` of a DailyDialog parquet file as a unified dialogue: speakers alternate from the user."""
    utterances = row.get("dialog")
    if not isinstance(utterances, list):
        raise AftInputError(file, f"[{n}].dialog", "is not a list of utterances", FIX)
    turns = [
        {"speaker": ("user", "system")[i % 2], "utterance": str(u).strip() if u is not None else ""}
        for i, u in enumerate(utterances)
    ]
    return {"dialogue_id": f"{split}-{n}", "data_split": split, "domains": [], "turns": turns}
