"""Goals: what a simulated user wants, read from a corpus dialogue's own `goal` field.

MultiWOZ and TownInfo both store a goal per dialogue (`info`, `reqt`, `book`, `fail_info`, `fail_book`); a
TownInfo goal was drawn by its generator, so evaluating on TownInfo's test dialogues' goals is drawing goals as
the generator draws them. The two corpora mean different things by `fail_info`:
- MultiWOZ: `fail_info` is the set of constraints the user asks for first, which no venue meets; `info` is
  the set it moves to after the no-offer;
- TownInfo: `info` holds the constraints asked for first, one of them impossible, and `fail_info` names that
  slot. (Its generator wrote the impossible value into `fail_info` too, where the value the user moved to was
  meant; fixing that would change every corpus byte and the frontier built on them. So the value is read from
  the dialogue itself: the user's inform right after the system's NoOffer.)
`DomainGoal` states both the same way: `constraints` (asked first) and `relaxed` (after a no-offer; equal to
`constraints` when nothing fails).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aft_core import io
from aft_core.data.corpus import listed_dialogues, venue_tables, with_release_acts
from aft_core.errors import AftInputError

VENUE_DOMAINS = ("restaurant", "hotel", "attraction", "train")
BOOK_IGNORED = {"invalid", "pre_invoice"}


@dataclass(frozen=True)
class DomainGoal:
    """One domain of a goal: find a venue meeting `constraints`, ask for `requests`, book with `book`."""

    domain: str
    constraints: dict[str, str]
    relaxed: dict[str, str]
    requests: tuple[str, ...] = ()
    book: dict[str, str] = field(default_factory=dict)

    @property
    def fails(self) -> bool:
        """True when the first constraints meet no venue and the user must relax one."""
        return self.relaxed != self.constraints


@dataclass(frozen=True)
class Goal:
    """A whole user goal: its domains in the order the user pursues them."""

    dialogue_id: str
    domains: tuple[DomainGoal, ...]


def _values(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (raw or {}).items() if not isinstance(v, (dict, list, bool))}


def _relaxed_in_log(dialogue: dict[str, Any], domain: str, slots: set[str]) -> dict[str, str]:
    """The values a TownInfo user moved to after the system's no-offer in `domain` (its next Inform act)."""
    log = dialogue.get("log", [])
    act = f"{domain.capitalize()}-"
    for i, turn in enumerate(log[:-1]):
        if f"{act}NoOffer" in (turn.get("dialog_act") or {}):
            informed = (log[i + 1].get("dialog_act") or {}).get(f"{act}Inform", [])
            return {str(k): str(v) for k, v in informed if k in slots}
    return {}


def goal_from_dialogue(dialogue_id: str, dialogue: dict[str, Any], towninfo: bool) -> Goal:
    """The `Goal` of one MultiWOZ-schema dialogue; its venue domains in the order the dialogue's acts first name
    them (the goal object's own key order is fixed, not the order the user pursued them)."""
    goal = dialogue.get("goal")
    if not isinstance(goal, dict):
        raise AftInputError(
            dialogue_id,
            "goal",
            "the dialogue has no goal object",
            "use a MultiWOZ-schema corpus whose dialogues carry their `goal` (TownInfo and MultiWOZ do)",
        )
    order: list[str] = []
    for turn in dialogue.get("log", []):
        for act in turn.get("dialog_act") or {}:
            domain = act.split("-", 1)[0].lower()
            if domain in VENUE_DOMAINS and domain not in order:
                order.append(domain)
    wanted = [d for d in VENUE_DOMAINS if isinstance(goal.get(d), dict) and goal[d].get("info")]
    ordered = [d for d in order if d in wanted] + [d for d in wanted if d not in order]
    domains = []
    for domain in ordered:
        g = goal[domain]
        info, fail = _values(g.get("info")), _values(g.get("fail_info"))
        if towninfo:
            constraints, relaxed = info, {**info, **_relaxed_in_log(dialogue, domain, set(fail))}
        else:
            constraints, relaxed = (fail or info), info
        book = {k: v for k, v in _values(g.get("book")).items() if k not in BOOK_IGNORED}
        domains.append(DomainGoal(domain, constraints, relaxed, tuple(str(r) for r in g.get("reqt") or ()), book))
    return Goal(dialogue_id, tuple(domains))


def dialogues_file(corpus_dir: str | Path) -> Path | None:
    """A MultiWOZ-schema corpus folder's dialogue file: data.json, or data.json.zip (as the MultiWOZ hold-out of a
    single-split file links it); None when it has neither."""
    folder = Path(corpus_dir)
    return next((folder / n for n in ("data.json", "data.json.zip") if (folder / n).exists()), None)


def venue_folder(corpus_dir: str | Path) -> Path:
    """The folder of a MultiWOZ-schema corpus's venue databases: its db/, or the corpus folder itself where the
    `<domain>_db.json` files lie beside data.json (MultiWOZ 2.x as released)."""
    tables = venue_tables(Path(corpus_dir))
    if tables is None:
        raise AftInputError(
            corpus_dir, "db", "the folder holds no venue databases", "put db/<domain>_db.json beside data.json"
        )
    return tables


def read_dialogues(corpus_dir: str | Path) -> dict[str, Any]:
    """The dialogues of a MultiWOZ-schema corpus folder (its data.json or data.json.zip)."""
    folder = Path(corpus_dir)
    path = dialogues_file(folder)
    if path is None:
        raise AftInputError(
            folder,
            "data.json",
            "the folder holds no data.json",
            "point at a MultiWOZ-schema corpus folder (data.json, valListFile.txt, testListFile.txt)",
        )
    dialogues: dict[str, Any] = io.read_json(path, fix="restore the corpus file")
    return with_release_acts(folder, dialogues)


def load_goals(corpus_dir: str | Path, split: str = "test", dialogues: dict[str, Any] | None = None) -> list[Goal]:
    """Goals of one split of a MultiWOZ-schema corpus folder (data.json with its valListFile/testListFile,
    as TownInfo writes and MultiWOZ 2.1 ships; `dialogues`: its data.json when already read); dialogues without a
    venue domain are left out."""
    folder = Path(corpus_dir)
    dialogues = dialogues if dialogues is not None else read_dialogues(folder)
    listed = listed_dialogues(folder)
    if split == "train":
        held = set(listed["validation"]) | set(listed["test"])
        ids = [k for k in dialogues if k not in held]
    elif split in listed:
        ids = listed[split]
    else:
        raise AftInputError(folder, "split", f"unknown split '{split}'", "use train, validation or test")
    towninfo = (folder / "towninfo.json").exists()
    goals = [goal_from_dialogue(i, dialogues[i], towninfo) for i in ids]
    return [g for g in goals if g.domains]
