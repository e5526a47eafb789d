"""The learning-rate schedule: step for step transformers' schedule without a time budget; over a time budget, the
rate follows the clock and reaches its end value when the budget runs out, whichever limit comes first."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import get_scheduler

from bert_recipes.errors import UsageError
from bert_recipes.schedule import LearningRateSchedule


@pytest.mark.parametrize("shape", ["linear", "cosine", "constant_with_warmup", "constant"])
@pytest.mark.parametrize(("warmup_steps", "warmup_ratio"), [(0, 0.0), (7, 0.0), (0, 0.06), (3, 0.5)])
def test_without_a_budget_it_is_transformers_schedule(shape, warmup_steps, warmup_ratio):
    steps, peak = 50, 1e-3
    schedule = LearningRateSchedule(peak, steps, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, shape=shape)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    # the warmup the trainer always gave transformers: a ratio rounds up to whole steps
    warmup = warmup_steps or math.ceil(warmup_ratio * steps)
    reference = get_scheduler(shape, optimizer, warmup, num_training_steps=steps)
    for step in range(steps + 1):
        # the rate of the optimizer step that follows `step` completed steps; the clock plays no part
        assert schedule.learning_rate(step, seconds=1e6) == pytest.approx(reference.get_last_lr()[0], abs=1e-12)
        optimizer.step()
        reference.step()


def test_over_a_budget_the_rate_follows_the_clock_to_its_end():
    schedule = LearningRateSchedule(1.0, max_steps=10**9, max_train_time=100.0, warmup_ratio=0.1)
    assert schedule.warmup_in_steps == 0
    assert schedule.learning_rate(step=5, seconds=5.0) == pytest.approx(0.5)  # warming up over the first 10 s
    assert schedule.learning_rate(step=50, seconds=10.0) == pytest.approx(1.0)
    assert schedule.learning_rate(step=500, seconds=55.0) == pytest.approx(0.5)
    assert schedule.learning_rate(step=900, seconds=99.0) == pytest.approx(1 / 90)
    assert schedule.learning_rate(step=999, seconds=100.0) == 0.0


def test_the_first_limit_reached_drives_the_schedule():
    schedule = LearningRateSchedule(1.0, max_steps=100, max_train_time=100.0, warmup_steps=10)
    # steps ahead of the clock: progress 0.55 by steps
    assert schedule.progress(step=55, seconds=20.0) == pytest.approx(0.55)
    # the clock ahead of the steps: progress 0.8 by time
    assert schedule.progress(step=30, seconds=80.0) == pytest.approx(0.8)
    assert schedule.learning_rate(step=30, seconds=80.0) == pytest.approx((1 - 0.8) / (1 - 0.1))
    assert schedule.learning_rate(step=5, seconds=1.0) == pytest.approx(0.5)  # warmup counted in steps


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_warmup_in_steps_meets_the_decay_without_a_jump_when_the_clock_leads(shape):
    # a budget that binds: 1,000 warmup steps of 100,000 while the clock runs 27 times ahead of the steps
    schedule = LearningRateSchedule(1.0, max_steps=100_000, max_train_time=3600.0, warmup_steps=1000, shape=shape)
    rates = [schedule.factor(step, seconds=step * 0.972) for step in range(3705)]
    assert max(abs(b - a) for a, b in itertools.pairwise(rates)) < 2e-3
    assert rates[-1] == 0.0


def test_an_unknown_shape_or_ratio_is_one_clear_error():
    with pytest.raises(UsageError, match="--lr_scheduler_type polynomial is not one of linear, cosine, constant_with"):
        LearningRateSchedule(1.0, 10, shape="polynomial")
    with pytest.raises(UsageError, match="--warmup_ratio"):
        LearningRateSchedule(1.0, 10, warmup_ratio=1.5)


@pytest.mark.parametrize("decay_shape", ["linear", "1-sqrt", "cosine"])
@pytest.mark.parametrize(("warmup_steps", "decay_fraction"), [(0, 0.2), (5, 0.2), (5, 0.1), (10, 0.8), (0, 1.0)])
def test_wsd_without_a_budget_is_transformers_warmup_stable_decay(decay_shape, warmup_steps, decay_fraction):
    steps, peak = 50, 1e-3
    schedule = LearningRateSchedule(peak, steps, warmup_steps=warmup_steps, shape="wsd",
                                    decay_fraction=decay_fraction, decay_shape=decay_shape)  # fmt: skip
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    kwargs = {"num_decay_steps": round(decay_fraction * steps), "decay_type": decay_shape}
    reference = get_scheduler("warmup_stable_decay", optimizer, warmup_steps, steps, scheduler_specific_kwargs=kwargs)
    for step in range(steps + 1):
        assert schedule.learning_rate(step, seconds=0.0) == pytest.approx(reference.get_last_lr()[0], abs=1e-12)
        optimizer.step()
        reference.step()


def test_wsd_over_a_budget_holds_the_peak_until_its_last_fifth():
    schedule = LearningRateSchedule(1.0, max_steps=10**9, max_train_time=100.0, warmup_ratio=0.05, shape="wsd")
    assert schedule.factor(0, seconds=2.5) == pytest.approx(0.5)
    assert schedule.factor(0, seconds=5.0) == schedule.factor(0, seconds=80.0) == 1.0
    assert schedule.factor(0, seconds=85.0) == pytest.approx(1 - math.sqrt(0.25))
    assert schedule.factor(0, seconds=100.0) == 0.0


def test_the_budget_triangle_is_linear_with_three_quarters_warmup():
    schedule = LearningRateSchedule(1.0, max_steps=10**9, max_train_time=100.0, warmup_ratio=0.75)
    assert [schedule.factor(0, seconds=t) for t in (0.0, 37.5, 75.0, 87.5, 100.0)] == pytest.approx(
        [0.0, 0.5, 1.0, 0.5, 0.0]
    )


def test_a_wsd_decay_outside_its_range_is_refused():
    with pytest.raises(UsageError, match="--wsd_decay_fraction"):
        LearningRateSchedule(1.0, 10, shape="wsd", decay_fraction=0.0)
    with pytest.raises(UsageError, match="--wsd_decay_shape"):
        LearningRateSchedule(1.0, 10, shape="wsd", decay_shape="exponential")
