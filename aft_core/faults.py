"""Named fault points, so a test kills a process at an exact place instead of sleeping and hoping.

`AFT_FAULT=<point>:<step>` (test-only; unset in normal use) makes the process SIGKILL itself when it
reaches `point` at `step`. The points are:

- `after_update`: step `step`'s update is applied and counted, its checkpoint (if one is due) not yet written.

`AFT_HOLD=<folder>` (test-only) makes a process wait at a hold point while `<folder>/<point>` exists, so a test
can keep flow runs in flight until it has seen them all running (`branch_start`: a branch, before any work).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "AFT_FAULT"
FAULT_POINTS = ("after_update",)
HOLD_ENV = "AFT_HOLD"
HOLD_POINTS = ("branch_start",)
HOLD_LIMIT_S = 900.0  # a forgotten hold file delays a run, never blocks it for good


def fault_point(point: str, step: int) -> None:
    """SIGKILL this process if `AFT_FAULT` names `point` at `step`; otherwise do nothing."""
    assert point in FAULT_POINTS, point
    if os.environ.get(FAULT_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def hold_point(point: str) -> None:
    """Wait while `AFT_HOLD/<point>` exists (at most HOLD_LIMIT_S); without `AFT_HOLD`, return at once."""
    assert point in HOLD_POINTS, point
    folder = os.environ.get(HOLD_ENV)
    if not folder:
        return
    deadline = time.monotonic() + HOLD_LIMIT_S
    while (Path(folder) / point).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
