"""Wall-clock seconds per phase of a training step (sampling, teacher-forced, reference, ...), for profiles."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager, nullcontext

import torch


class PhaseTimer:
    """Adds the wall time of each `with timer("phase"):` block to `seconds[phase]`.

    Waits for queued GPU work at both ends of a block, so a phase is charged for its own kernels.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        _sync()
        started = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.seconds[phase] += time.perf_counter() - started


def untimed(phase: str) -> ContextManager[None]:
    """The timer used when nobody is measuring: does nothing."""
    return nullcontext()


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
