"""The learning rate as a function of the run's progress, measured in steps or in training time.

transformers' schedulers count `scheduler.step()` calls towards `num_training_steps`, so a run stopped by a time
budget ends at whatever rate the step count had reached, often near the peak. Here the rate is computed from
progress = the larger of step / max_steps and training seconds / max_train_time (as cramming's budget schedules do):
it reaches its end value when the first of the two limits does. It is a pure function of the step and the clock,
so resuming needs no saved scheduler state, and a changed accumulation or process count cannot shift it. Without
a time budget it equals transformers' schedule of the same name step for step (tests/test_schedule.py); other
transformers schedules (polynomial, ...) are not offered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bert_recipes.errors import UsageError

SHAPES = ("linear", "cosine", "constant_with_warmup", "constant")


@dataclass(frozen=True)
class LearningRateSchedule:
    """Warmup, then decay over progress in [0, 1] (`constant`: neither, as in transformers).

    Warmup is counted in steps (`warmup_steps`, or `warmup_ratio` x max_steps without a time budget); with a time
    budget and no `warmup_steps` it is the first `warmup_ratio` of the budget's progress instead. The rate is the
    lower of the warmup line and the decay curve, so it stays continuous when a budget's clock runs ahead of the
    steps that count the warmup.
    """

    peak: float
    max_steps: int
    max_train_time: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    shape: str = "linear"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise UsageError(f"--lr_scheduler_type {self.shape} is not one of {', '.join(SHAPES)}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @property
    def warmup_in_steps(self) -> int:
        """Warmup length in steps, or 0 when warmup is measured on the time budget's progress."""
        if self.warmup_steps > 0 or self.max_train_time <= 0:
            return self.warmup_steps or math.ceil(self.warmup_ratio * self.max_steps)
        return 0

    def progress(self, step: int, seconds: float) -> float:
        by_steps = step / self.max_steps
        by_time = seconds / self.max_train_time if self.max_train_time > 0 else 0.0
        return min(1.0, max(by_steps, by_time))

    def factor(self, step: int, seconds: float) -> float:
        """The multiplier of the peak rate for the optimizer step that follows `step` completed steps."""
        if self.shape == "constant":
            return 1.0
        progress, warmup = self.progress(step, seconds), self.warmup_in_steps
        if warmup:
            warm, decay_from = step / warmup, warmup / self.max_steps
        else:
            warm = progress / self.warmup_ratio if self.warmup_ratio > 0 else 1.0
            decay_from = self.warmup_ratio
        done = min(1.0, max(0.0, (progress - decay_from) / max(1.0 - decay_from, 1e-12)))
        decay = {"linear": 1.0 - done, "cosine": 0.5 * (1.0 + math.cos(math.pi * done))}.get(self.shape, 1.0)
        return min(warm, decay)

    def learning_rate(self, step: int, seconds: float) -> float:
        return self.peak * self.factor(step, seconds)
