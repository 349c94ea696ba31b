"""Loading conversations in the chat-messages format that fine-tuning libraries share (TRL's conversational format,
the hub's chat datasets): one record per conversation holding `messages` (`{"role", "content"}`), or ShareGPT's
`conversations` (`{"from", "value"}`).

Accepted inputs: a `.jsonl` file (one record per line), a `.json` file holding a list of records, a folder of such
files, or (through aft_core.data.hub_parquet) parquet files with a `messages` or `conversations` column. A file's
split is a word of its name (`train.jsonl`, `validation.jsonl`, `test-00000-of-00001.parquet`) or of its folder's.

What becomes of a record: user (`user`, `human`) and assistant (`assistant`, `gpt`, `model`, `bot`) messages are the
user and system turns, and every assistant message after the first turn is an example. A `system` message is an
instruction to the model, not a turn of the conversation, and is left out; so are `tool` / `function` messages
(a tool's output is no one's utterance). Consecutive messages of one speaker (what is left around a dropped
message, or a user who writes twice) are joined into one turn with a space, since turns alternate. A content given
as a list of parts keeps its text parts. There are no annotations: no belief state, no slot values (use
I_x = history or all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aft_core import io
from aft_core.data.corpus import Corpus, split_in_name, unified_dialogue_examples
from aft_core.data.examples import Example
from aft_core.errors import AftInputError

FIX = (
    "give one record per conversation with a 'messages' list of {role, content} (roles user/assistant; system "
    "and tool messages are left out) or ShareGPT's 'conversations' of {from, value}"
)
SPEAKERS = {"user": "user", "human": "user", "assistant": "system", "gpt": "system", "model": "system", "bot": "system"}
LEFT_OUT = {"system", "tool", "function", "ipython", "developer"}  # instructions and tool traffic, not turns
CHAT_KEYS = ("messages", "conversations")


def is_chat_record(record: Any) -> bool:
    """Does `record` hold a conversation in the chat-messages format?"""
    return isinstance(record, dict) and any(isinstance(record.get(k), list) for k in CHAT_KEYS)


def chat_files(path: Path) -> list[Path]:
    """The `.jsonl` files of a folder, in name order."""
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".jsonl")


def read_records(file: Path) -> list[Any]:
    """The records of a `.jsonl` file (blank lines skipped) or of a `.json` list."""
    if file.suffix != ".jsonl":
        data = io.read_json(file, fix=FIX)
        if not isinstance(data, list):
            raise AftInputError(file, "<root>", f"expected a list of conversations, got a {type(data).__name__}", FIX)
        return data
    records = []
    for n, line in enumerate(io.read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as e:
            raise AftInputError(file, f"line {n}", f"is not a JSON object ({e.__class__.__name__})", FIX) from None
    return records


def load_chat_messages(path: Path, data: list[Any] | None = None) -> Corpus:
    """Load chat-messages conversations at `path`: a file, or a folder of `.jsonl` files (`data`: the records of
    the one file at `path`, when already read)."""
    files = chat_files(path) if path.is_dir() else [path]
    if not files:
        raise AftInputError(path, "<folder>", "holds no .jsonl files", FIX)
    examples: dict[str, list[Example]] = {}
    counts: dict[str, int] = {}
    seen: dict[str, str] = {}
    for file in files:
        split = split_in_name(file, default="train" if not path.is_dir() else None)
        records = data if data is not None else read_records(file)
        if not records:
            raise AftInputError(file, "<records>", "holds no conversations", FIX)
        for n, record in enumerate(records):
            dialogue = chat_dialogue(file, n, record, split)
            _, found = unified_dialogue_examples(file, n, dialogue, seen)
            examples.setdefault(split, []).extend(found)
            counts[split] = counts.get(split, 0) + 1
    return Corpus("chat", path, examples, counts)


def chat_dialogue(file: Path, n: int, record: Any, split: str) -> dict[str, Any]:
    """Record `n` of `file` as a unified dialogue (see the module docstring)."""
    if not is_chat_record(record):
        raise AftInputError(file, f"[{n}]", "has no 'messages' or 'conversations' list", FIX)
    key = next(k for k in CHAT_KEYS if isinstance(record.get(k), list))
    ident = record.get("dialogue_id", record.get("id"))
    dialogue_id = str(ident) if isinstance(ident, (str, int)) and str(ident).strip() else f"{split}-{n}"
    turns: list[dict[str, str]] = []
    for i, message in enumerate(record[key]):
        where = f"{dialogue_id}.{key}[{i}]"
        if not isinstance(message, dict):
            raise AftInputError(file, where, "a message is not an object", FIX)
        role = str(message.get("role", message.get("from", ""))).lower()
        if role in LEFT_OUT:
            continue
        speaker = SPEAKERS.get(role)
        if speaker is None:
            raise AftInputError(file, f"{where}.role", f"unknown role '{role}'", FIX)
        text = content_text(message.get("content", message.get("value")))
        if turns and turns[-1]["speaker"] == speaker:
            turns[-1]["utterance"] = f"{turns[-1]['utterance']} {text}".strip()
        else:
            turns.append({"speaker": speaker, "utterance": text})
    return {"dialogue_id": dialogue_id, "data_split": split, "domains": [], "turns": turns}


def content_text(content: Any) -> str:
    """A message's text: the string, or the text parts of a list of parts (`{"type": "text", "text": ...}`)."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
        return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return ""
