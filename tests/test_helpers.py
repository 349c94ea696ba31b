"""Direct tests of the helpers the trainers and the attractor classifier depend on: the loss/reward trend,
generic-closing detection and the batch schedule (hand-computed values)."""

from __future__ import annotations

import random

import pytest

from aft_core.data.batching import BatchSchedule, epoch_batches
from aft_core.monitor import is_generic_closing, trend


def test_trend_of_no_steps_is_flat():
    assert trend([]) == {
        "loss_mean": 0.0,
        "reward_mean": 0.0,
        "loss_slope": 0.0,
        "reward_slope": 0.0,
        "loss_rising_steps": 0,
    }


def test_trend_by_hand():
    # EMA 0.9 from the first loss: 1, 1.1, 1.29, 1.561 — rising over the last 3 steps; slopes exactly 1 per step.
    rising = trend([{"loss": x, "reward_mean": x - 1} for x in (1.0, 2.0, 3.0, 4.0)])
    assert rising == pytest.approx(
        {"loss_mean": 2.5, "reward_mean": 1.5, "loss_slope": 1.0, "reward_slope": 1.0, "loss_rising_steps": 3}
    )
    # Losses 4, 3, 2, 5: EMA 4, 3.9, 3.71, 3.839 — rising over the last step only; least-squares slope
    # Σ(x−1.5)(y−3.5) / Σ(x−1.5)² = 1.0 / 5 = 0.2; rewards constant.
    dip = trend([{"loss": y, "reward_mean": 0.5} for y in (4.0, 3.0, 2.0, 5.0)])
    assert dip["loss_rising_steps"] == 1
    assert dip["loss_slope"] == pytest.approx(0.2) and dip["reward_slope"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "text,closing",
    [
        ("Is there anything else I can help you with?", True),
        ("Thank you! Is there anything else I can help you with today?", True),  # 3 other words
        ("anything else i can help with", True),
        ("Great, thank you so much. Is there anything else I can do for you?", False),  # 5 other words
        ("The Copper Kettle is in the centre. Is there anything else I can help you with?", False),
        ("Goodbye.", False),
        ("", False),
    ],
)
def test_generic_closing_detection(text, closing):
    assert is_generic_closing(text) is closing


def test_epoch_batches_cover_every_example_once_and_depend_only_on_seed_and_epoch():
    lengths = [random.Random(0).randint(5, 200) for _ in range(1_037)]
    batches = epoch_batches(lengths, batch_size=16, seed=3, epoch=0)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= 16 for b in batches)
    assert epoch_batches(lengths, 16, 3, 0) == batches
    assert epoch_batches(lengths, 16, 3, 1) != batches and epoch_batches(lengths, 16, 4, 0) != batches
    # Bucketed by length: a batch spans far less of the length range than a random batch would.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 30, spread


def test_batch_schedule_walks_epochs_and_resumes_at_any_step():
    lengths = list(range(50))
    schedule = BatchSchedule(lengths, batch_size=8, seed=1)
    assert schedule.per_epoch == 7  # 50 examples in batches of 8: six full and one of 2
    walked = [schedule(step) for step in range(3 * schedule.per_epoch)]
    expected = [b for epoch in range(3) for b in epoch_batches(lengths, 8, 1, epoch)]
    assert walked == expected
    # A fresh schedule (as after a resume) gives the same batch at any step, backwards included.
    for step in (20, 5, 13):
        assert BatchSchedule(lengths, 8, 1)(step) == expected[step]
        assert schedule(step) == expected[step]
