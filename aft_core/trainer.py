"""The one resumable training loop that SFT and every AFT branch share (nanoGPT-style: one straight loop).

An algorithm (`sft.SFTRun`, `aft.BranchRun`) supplies its model, optimizer, optional LR scheduler, a
typed state, one update (`train_step`) and what happens at a checkpoint (`at_checkpoint`: evaluate,
write its own artefacts, and perhaps set `state.stop_reason`). `train` owns the rest:

- resume from the newest checkpoint that loads (weights, optimizer, scheduler, RNG and the typed state);
- the checkpoint cadence: every `checkpoint_every` steps, at the last step, and whenever the
  algorithm asks for one (`wants_checkpoint`, e.g. after a run of non-finite losses);
- `stop_after`: end the process at the first checkpoint at or after that step, as an interruption would
  (the next call resumes there);
- one progress bar (or none), elapsed training time across resumes, and `torch` thread count;
- the run's provenance (machine, libraries, seeds), one entry per start or resume;
- the finished marker: the algorithm's result, written atomically last. A folder holding it is done.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from aft_core.checkpoint import resume_latest, save_checkpoint
from aft_core.faults import fault_point
from aft_core.io import write_json_atomic
from aft_core.models import torch_threads
from aft_core.provenance import record_provenance

S = TypeVar("S", bound="TrainerState")


@dataclasses.dataclass
class TrainerState:
    """What the loop keeps in every checkpoint; an algorithm subclasses it with its own counters."""

    step: int = 0
    seconds: float = 0.0  # training time, summed over resumes
    stop_reason: str | None = None  # set by the algorithm to end before the last step; kept, so a resume stops too

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls: type[S], data: dict[str, Any]) -> S:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Algorithm(Protocol[S]):
    """What `train` needs from SFT or AFT."""

    # read-only to `train` (properties), so an implementation may narrow their types; `state` is its own type S
    @property
    def model(self) -> torch.nn.Module: ...
    @property
    def optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def scheduler(self) -> Any: ...  # an LR scheduler, or None

    state: S

    def start(self) -> None:
        """A fresh run (nothing to resume): log parameters, write step-0 artefacts."""

    def resumed(self) -> None:
        """A run resumed from `state`: drop anything written after that checkpoint."""

    def train_step(self, step: int) -> dict[str, str]:
        """One update from step `step` to `step + 1`; returns what the progress bar shows."""

    def wants_checkpoint(self) -> bool:
        """A checkpoint now, off the cadence (e.g. the run is about to stop)."""

    def at_checkpoint(self, step: int) -> None:
        """Evaluate and write the algorithm's artefacts for `step`; may set `state.stop_reason`."""

    def finish(self) -> dict[str, Any]:
        """The run's result (written as the finished marker)."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    total_steps: int
    checkpoint_every: int
    keep_checkpoints: int
    desc: str = "train"
    seeds: tuple[tuple[str, int], ...] = ()  # recorded in the run's provenance


def finished_result(result_file: Path) -> dict[str, Any] | None:
    """The result of a finished run (its marker file), or None."""
    return json.loads(result_file.read_text()) if result_file.exists() else None


def train(
    algorithm: Algorithm[S],
    run_dir: Path,
    result_file: Path,
    settings: LoopSettings,
    provenance_file: Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run `algorithm` to its end (or to `stop_after`), resuming from `run_dir/checkpoints`.

    Every start and resume appends the machine and seeds to `provenance_file`.

    Returns the result written to `result_file`, or {"interrupted_at": step} when stopped by `stop_after`.
    """
    torch.set_num_threads(torch_threads())
    checkpoints = run_dir / "checkpoints"
    meta = resume_latest(checkpoints, algorithm.model, algorithm.optimizer, algorithm.scheduler)
    if meta is None:
        algorithm.start()
    else:
        algorithm.state = type(algorithm.state).from_json(meta["trainer"])
        algorithm.resumed()
    state = algorithm.state
    record_provenance(provenance_file, dict(settings.seeds), state.step)
    started = time.monotonic() - state.seconds
    bar = tqdm(
        total=settings.total_steps, initial=state.step, desc=settings.desc, disable=not progress, dynamic_ncols=True
    )
    try:
        while state.step < settings.total_steps and state.stop_reason is None:
            postfix = algorithm.train_step(state.step)
            state.step += 1
            fault_point("after_update", state.step)
            bar.update(1)
            bar.set_postfix(postfix)
            if (
                state.step % settings.checkpoint_every == 0
                or state.step == settings.total_steps
                or algorithm.wants_checkpoint()
            ):
                state.seconds = time.monotonic() - started
                algorithm.at_checkpoint(state.step)
                save_checkpoint(
                    checkpoints,
                    state.step,
                    algorithm.model,
                    algorithm.optimizer,
                    algorithm.scheduler,
                    state.to_json(),
                    keep=settings.keep_checkpoints,
                )
                if (
                    state.stop_reason is None
                    and stop_after is not None
                    and state.step >= stop_after
                    and state.step < settings.total_steps
                ):
                    return {"interrupted_at": state.step}
    finally:
        bar.close()
    state.seconds = time.monotonic() - started
    result = algorithm.finish()
    write_json_atomic(result_file, result)
    return result
