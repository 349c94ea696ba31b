"""Crash-safe file writing: every artefact is written to a temporary name, then renamed.

A kill at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMPORARY_SUFFIX = ".tmp"  # `.<name>.<random>.tmp` beside the file or folder it will replace


def is_temporary(path: Path) -> bool:
    """Whether `path` is a temporary name of `atomic_path` / `atomic_dir`, as an interrupted write leaves one."""
    return path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A full disk or an unwritable folder ends in an AftInputError naming the file; the old file,
    if any, is left as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        if e.errno not in _OUTPUT_ERRORS:
            raise
        from aft_core.errors import AftInputError

        raise AftInputError(
            path, "<output>", f"cannot be written ({os.strerror(e.errno)})", _OUTPUT_ERRORS[e.errno]
        ) from e
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


_OUTPUT_ERRORS = {
    errno.ENOSPC: "free disk space (or choose an output folder on another disk) and rerun; the run resumes",
    errno.EDQUOT: "free space within your quota and rerun; the run resumes",
    errno.EROFS: "choose an output folder on a writable file system",
    errno.EACCES: "choose an output folder you can write to, or fix its permissions",
    errno.EPERM: "choose an output folder you can write to, or fix its permissions",
}


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent))
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


@contextmanager
def copy_dir(source: str | Path, path: str | Path) -> Iterator[Path]:
    """`replace_dir(path)` pre-filled with copies of `source`'s files: edit them in the block, then it is swapped in."""
    with replace_dir(path) as tmp:
        for file in Path(source).iterdir():
            if file.is_file():
                shutil.copy2(file, tmp / file.name)
        yield tmp


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
            raise AftInputError(
                marker,
                ", ".join(differing) or "<config>",
                "the output directory holds a different run",
                "choose another --out folder, or delete this one to start over",
            )
        return True
    if out.exists() and any(out.iterdir()):
        raise AftInputError(
            out, "<folder>", f"is not empty and holds no {config_file}", "choose an empty or new --out folder"
        )
    write_json_atomic(marker, json.loads(json.dumps(config, default=str)))
    return False


LOCK_FILE = ".aft-lock.json"


@contextmanager
def run_lock(run_dir: str | Path, owner: str) -> Iterator[None]:
    """Hold `run_dir` for one pipeline or sweep at a time.

    The lock file names its owner (what, process id, host, since). A second run on the same folder
    is refused with that owner named; a lock left by a process that no longer runs on this host is
    taken over. Re-entrant within one process (the pipeline runs its sweep as a subflow).
    """
    import socket
    import time

    from aft_core.errors import AftInputError

    lock = Path(run_dir) / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"owner": owner, "pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                held = {}
            if held.get("pid") == me["pid"] and held.get("host") == me["host"]:
                yield  # our own process already holds it
                return
            if held.get("host") == me["host"] and not _alive(held.get("pid")):
                lock.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            raise AftInputError(
                lock,
                "<lock>",
                f"the run folder is in use by {held.get('owner', '?')} (pid {held.get('pid')} "
                f"on {held.get('host')}, since {held.get('since')})",
                "wait for that run to finish, or use another run folder; delete the lock file only if "
                "that process is gone",
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
        return
    raise AftInputError(
        lock,
        "<lock>",
        "another run keeps taking the run folder's lock",
        "wait for the other run to finish, or use another run folder",
    )


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Everything a parser can raise on a hostile file: malformed or over-long numbers (ValueError covers
# JSONDecodeError), bad encodings, nesting deeper than the interpreter's stack, and sizes beyond memory.
_PARSE_ERRORS = (ValueError, UnicodeDecodeError, RecursionError, MemoryError)


def _parse_failure(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply to parse"
    if isinstance(e, MemoryError):
        return "too large to parse in memory"
    return f"not valid JSON ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})"


def read_bytes(path: Path, member: str | None = None) -> bytes:
    """The bytes of a file, or of the `.json` member of a zip (`member`, or its only .json file).

    Every way reading can fail on a damaged or hostile file ends in an AftInputError naming `path`.
    """
    import zipfile
    import zlib

    try:
        if path.suffix != ".zip":
            return path.read_bytes()
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".json")]
            wanted = member or (names[0] if len(names) == 1 else None)
            if wanted not in zf.namelist():
                from aft_core.errors import AftInputError

                raise AftInputError(
                    path,
                    member or "<zip member>",
                    f"the zip holds {sorted(zf.namelist())[:5]}, not the expected JSON file",
                    f"put {member or 'exactly one .json file'} inside the zip",
                )
            return zf.read(wanted)
    except FileNotFoundError as e:
        from aft_core.errors import AftInputError

        raise AftInputError(path, "<path>", "does not exist", "pass the path of an existing file or folder") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, MemoryError, OSError) as e:
        from aft_core.errors import AftInputError

        what = "a zip that cannot be read" if path.suffix == ".zip" else "a file that cannot be read"
        raise AftInputError(
            path, "<file>", f"{what} ({type(e).__name__}: {str(e)[:200]})", "re-download or restore the file"
        ) from e


def read_json(path: str | Path, member: str | None = None, fix: str = "restore the file from its source") -> Any:
    """Parse a JSON file (or a zip's JSON member); any parser failure is one AftInputError naming the file."""
    path = Path(path)
    raw = read_bytes(path, member)
    try:
        return json.loads(raw)
    except _PARSE_ERRORS as e:
        from aft_core.errors import AftInputError

        raise AftInputError(path, "<root>", _parse_failure(e), fix) from None


def read_text(path: str | Path) -> str:
    """A UTF-8 text file; a bad encoding or an unreadable file is one AftInputError naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError, MemoryError) as e:
        from aft_core.errors import AftInputError

        raise AftInputError(
            path,
            "<file>",
            f"cannot be read as UTF-8 text ({type(e).__name__})",
            "restore the file (UTF-8 text, one entry per line)",
        ) from None
