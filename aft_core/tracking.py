"""The small logging interface aft_core writes to; Comet and Prefect adapters live outside the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_table(self, name: str, path: str | Path) -> None: ...


class NullTracker:
    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_table(self, name: str, path: str | Path) -> None:
        pass


class JsonlTracker:
    """Appends one JSON line per metrics call; the run folder's own record of training."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log_params(self, params: dict[str, Any]) -> None:
        self._write({"params": params})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write({"step": step, **metrics})

    def log_table(self, name: str, path: str | Path) -> None:
        self._write({"table": name, "path": str(path)})

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")


class MultiTracker:
    def __init__(self, *trackers: Tracker):
        self.trackers = trackers

    def log_params(self, params: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def log_table(self, name: str, path: str | Path) -> None:
        for t in self.trackers:
            t.log_table(name, path)
