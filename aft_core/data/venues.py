"""Venue databases (MultiWOZ `db/<domain>_db.json` layout) and the entity-accuracy check built on them.

A response is entity-correct when it names a venue of the database that satisfies every
constraint of the dialogue's belief state for that venue's domain. A `<domain>_db.json` that is not a
list of records (MultiWOZ's taxi_db.json) is not a venue table: it is skipped and named in `skipped`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aft_core.errors import AftInputError
from aft_core.io import read_json

IGNORED_VALUES = {"", "dontcare", "not mentioned", "none", "dont care", "don't care"}
NAME_FIELDS = ("name", "trainID")


@dataclass
class VenueDB:
    """domain -> list of venue records; names indexed for fast mention lookup."""

    venues: dict[str, list[dict[str, Any]]]
    skipped: dict[str, str] = field(default_factory=dict)  # domain -> why its file is not a venue table

    def __post_init__(self) -> None:
        self._by_name: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for domain, records in self.venues.items():
            for record in records:
                name = venue_name(record)
                if name:
                    self._by_name.setdefault(name.lower(), []).append((domain, record))
        names = sorted(self._by_name, key=len, reverse=True)
        self._pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)") if names else None

    @classmethod
    def load(cls, db_dir: str | Path) -> VenueDB:
        """The `<domain>_db.json` tables of a folder, or the members so named of a zip (ConvLab's unified data.zip
        keeps them in data/)."""
        db_dir = Path(db_dir)
        venues: dict[str, list[dict[str, Any]]] = {}
        skipped: dict[str, str] = {}
        for file, member in venue_files(db_dir):
            records = read_json(file, member, fix="restore the venue database file")
            name = Path(member).name if member else file.name
            domain = name[: -len("_db.json")]
            if not isinstance(records, list):
                # MultiWOZ's taxi_db.json is a JSON object of colours, types and phone formats, not venues:
                # by rule, a file that is not a list of records is not a venue table and is skipped (and named).
                skipped[domain] = f"{name} is a JSON {type(records).__name__}, not a list of venue records"
                continue
            venues[domain] = [r for r in records if isinstance(r, dict)]
        if not venues:
            found = f" (skipped: {'; '.join(skipped.values())})" if skipped else ""
            raise AftInputError(
                db_dir,
                "<folder>",
                f"holds no venue table (<domain>_db.json, a list of records){found}",
                "point at the corpus's db/ folder",
            )
        return cls(venues, skipped)

    def mentioned(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        """Venues whose name appears in `text` (case-insensitive, whole words)."""
        if self._pattern is None:
            return []
        found = []
        for name in dict.fromkeys(m.group(1) for m in self._pattern.finditer(text.lower())):
            found.extend(self._by_name[name])
        return found

    def matching(self, domain: str, constraints: dict[str, str]) -> list[dict[str, Any]]:
        return [r for r in self.venues.get(domain, []) if satisfies(r, constraints)]


def venue_files(db: Path) -> list[tuple[Path, str | None]]:
    """(file, zip member or None) of each `<domain>_db.json` in the folder or zip `db`, in name order."""
    if db.is_file() and db.suffix == ".zip":
        import zipfile

        try:
            with zipfile.ZipFile(db) as zf:
                members = sorted(n for n in zf.namelist() if Path(n).name.endswith("_db.json"))
        except (zipfile.BadZipFile, OSError) as e:
            raise AftInputError(db, "<zip>", f"cannot be read ({type(e).__name__})", "restore the zip") from None
        return [(db, m) for m in members]
    return [(f, None) for f in sorted(db.glob("*_db.json"))]


def venue_name(record: dict[str, Any]) -> str | None:
    for key in NAME_FIELDS:
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key].strip()
    return None


# Time slots that bound rather than equal (MultiWOZ's database query): a train leaving at or after `leaveAt`, and one
# arriving at or before `arriveBy`, meets the constraint
TIME_BOUNDS = {"leaveAt": 1, "arriveBy": -1}
CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


def minutes_of(clock: str) -> int | None:
    """'13:15' -> 795; None when the text holds no clock time."""
    match = CLOCK.search(str(clock))
    return int(match.group(1)) * 60 + int(match.group(2)) if match else None


def satisfies(record: dict[str, Any], constraints: dict[str, str]) -> bool:
    """True when every constraint that the record has a field for holds (case-insensitive; `leaveAt` and `arriveBy`
    as bounds, TIME_BOUNDS)."""
    for slot, value in constraints.items():
        if slot in NAME_FIELDS or slot not in record or str(value).lower() in IGNORED_VALUES:
            continue
        if slot in TIME_BOUNDS:
            have, want = minutes_of(record[slot]), minutes_of(value)
            if have is not None and want is not None:
                if (have - want) * TIME_BOUNDS[slot] < 0:
                    return False
                continue
        if str(record[slot]).lower() != str(value).lower():
            return False
    return True


def names_venue(db: VenueDB, text: str) -> bool:
    return bool(db.mentioned(text))


def entity_correct(db: VenueDB, response: str, belief_state: dict[str, dict[str, str]]) -> bool:
    """Does `response` name a venue that satisfies the belief-state constraints of its domain?

    Only domains present in the belief state count: naming a venue of a domain the user never
    asked about is not a correct answer.
    """
    for domain, record in db.mentioned(response):
        if domain in belief_state and satisfies(record, belief_state[domain]):
            return True
    return False
