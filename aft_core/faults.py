"""Named fault points, so a test kills a process at an exact place instead of sleeping and hoping.

`AFT_FAULT=<point>:<step>` (test-only; unset in normal use) makes the process SIGKILL itself when it
reaches `point` at `step`. The points are:

- `after_update`: step `step`'s update is applied and counted, its checkpoint (if one is due) not yet written.
"""
from __future__ import annotations

import os
import signal

FAULT_ENV = "AFT_FAULT"
FAULT_POINTS = ("after_update",)


def fault_point(point: str, step: int) -> None:
    """SIGKILL this process if `AFT_FAULT` names `point` at `step`; otherwise do nothing."""
    assert point in FAULT_POINTS, point
    if os.environ.get(FAULT_ENV) == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
