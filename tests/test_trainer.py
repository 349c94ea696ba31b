"""The shared training loop (aft_core.trainer) on a toy algorithm: cadence, stop_after, stop reasons, exact resume."""

from __future__ import annotations

import dataclasses
import json

import torch

from aft_core.trainer import LoopSettings, TrainerState, finished_result, train


@dataclasses.dataclass
class ToyState(TrainerState):
    losses: list[float] = dataclasses.field(default_factory=list)  # one per checkpoint
    noise_draws: int = 0


class Toy:
    """Fits w to noisy targets drawn from torch's RNG (so an inexact resume would change the weights)."""

    def __init__(self, stop_at: int | None = None, force_at: int | None = None, with_scheduler: bool = False):
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.05)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 2, 0.5) if with_scheduler else None
        self.state = ToyState()
        self.stop_at, self.force_at = stop_at, force_at
        self.events: list[tuple[str, int]] = []

    def start(self) -> None:
        self.events.append(("start", self.state.step))

    def resumed(self) -> None:
        self.events.append(("resumed", self.state.step))

    def train_step(self, step: int) -> dict[str, str]:
        x = torch.randn(8, 3)
        loss = ((self.model(x).squeeze(-1) - x.sum(-1)) ** 2).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.scheduler is not None:
            self.scheduler.step()
        self.state.noise_draws += 1
        self.last_loss = loss.item()
        return {"loss": f"{loss.item():.3f}"}

    def wants_checkpoint(self) -> bool:
        return self.state.step == self.force_at

    def at_checkpoint(self, step: int) -> None:
        self.events.append(("checkpoint", step))
        self.state.losses.append(self.last_loss)
        if step == self.stop_at:
            self.state.stop_reason = "toy_stop"

    def finish(self) -> dict:
        return {
            "steps": self.state.step,
            "stop_reason": self.state.stop_reason,
            "losses": self.state.losses,
            "noise_draws": self.state.noise_draws,
            "weight": self.model.weight.detach().tolist(),
        }


SETTINGS = LoopSettings(total_steps=7, checkpoint_every=3, keep_checkpoints=5, desc="toy")


def test_checkpoints_fall_on_the_cadence_the_last_step_and_when_asked(tmp_path):
    toy = Toy(force_at=4)
    result = train(toy, tmp_path, tmp_path / "result.json", SETTINGS, tmp_path / "provenance.json", progress=False)
    assert toy.events == [("start", 0), ("checkpoint", 3), ("checkpoint", 4), ("checkpoint", 6), ("checkpoint", 7)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step-0000003",
        "step-0000004",
        "step-0000006",
        "step-0000007",
    ]
    assert result["steps"] == 7 and result["stop_reason"] is None and len(result["losses"]) == 4
    assert json.loads((tmp_path / "result.json").read_text()) == result == finished_result(tmp_path / "result.json")
    assert finished_result(tmp_path / "nothing.json") is None


def test_stop_after_interrupts_at_the_first_checkpoint_at_or_after_it_and_resumes_exactly(tmp_path):
    straight = train(
        Toy(with_scheduler=True),
        tmp_path / "a",
        tmp_path / "a" / "result.json",
        SETTINGS,
        tmp_path / "a" / "provenance.json",
        progress=False,
    )
    first = Toy(with_scheduler=True)
    assert train(
        first,
        tmp_path / "b",
        tmp_path / "b" / "result.json",
        SETTINGS,
        tmp_path / "b" / "provenance.json",
        progress=False,
        stop_after=4,
    ) == {"interrupted_at": 6}
    assert not (tmp_path / "b" / "result.json").exists()
    second = Toy(with_scheduler=True)
    resumed = train(
        second,
        tmp_path / "b",
        tmp_path / "b" / "result.json",
        SETTINGS,
        tmp_path / "b" / "provenance.json",
        progress=False,
    )
    assert second.events == [("resumed", 6), ("checkpoint", 7)]
    # the typed state, the weights, the optimizer, the scheduler and the RNG all came back
    assert resumed == straight and resumed["noise_draws"] == 7
    assert second.scheduler.last_epoch == 7 and second.optimizer.param_groups[0]["lr"] == 0.05 * 0.5**3


def test_a_stop_reason_ends_the_run_and_a_resume_does_not_train_past_it(tmp_path):
    toy = Toy(stop_at=3)
    result = train(toy, tmp_path, tmp_path / "result.json", SETTINGS, tmp_path / "provenance.json", progress=False)
    assert result["steps"] == 3 and result["stop_reason"] == "toy_stop"
    # The result file lost (say, a crash right after the checkpoint): the resumed run stops where it stopped.
    (tmp_path / "result.json").unlink()
    again = Toy()
    assert (
        train(again, tmp_path, tmp_path / "result.json", SETTINGS, tmp_path / "provenance.json", progress=False)[
            "steps"
        ]
        == 3
    )
    assert again.events == [("resumed", 3)]


def test_trainer_state_round_trips_and_ignores_unknown_fields():
    state = ToyState(step=4, seconds=1.5, stop_reason=None, losses=[0.5, 0.25], noise_draws=4)
    assert ToyState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert ToyState.from_json({"step": 2, "written_by_an_older_version": 1}) == ToyState(step=2)
