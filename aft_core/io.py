"""Crash-safe file writing: every artefact is written to a temporary name, then renamed.

A kill at any moment leaves either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


@contextmanager
def replace_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; when the block succeeds it takes `path`'s place.

    The old folder is moved aside first and deleted last, so at every moment either the
    complete old folder or the complete new one is present (possibly under `<name>.old`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        old = path.with_name(path.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def claim_run_dir(out_dir: str | Path, config_file: str, config: dict[str, Any]) -> bool:
    """Make `out_dir` this run's folder. Returns True when it already held this same run (resume).

    Refuses a folder holding a different run, or any other files, so nothing is overwritten.
    """
    from aft_core.errors import AftInputError

    out = Path(out_dir)
    marker = out / config_file
    if marker.exists():
        existing = json.loads(marker.read_text(encoding="utf-8"))
        if existing != json.loads(json.dumps(config, sort_keys=True, default=str)):
            differing = sorted(k for k in set(existing) | set(config) if existing.get(k) != config.get(k))
            raise AftInputError(marker, ", ".join(differing) or "<config>",
                                "the output directory holds a different run",
                                "choose another --out folder, or delete this one to start over")
        return True
    if out.exists() and any(out.iterdir()):
        raise AftInputError(out, "<folder>", f"is not empty and holds no {config_file}",
                            "choose an empty or new --out folder")
    write_json_atomic(marker, json.loads(json.dumps(config, default=str)))
    return False
