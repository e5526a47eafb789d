"""The learning rate as a function of the run's progress, measured in steps or in training time.

transformers' schedulers count `scheduler.step()` calls towards `num_training_steps`, so a run stopped by a time
budget ends at whatever rate the step count had reached, often near the peak. Here the rate is computed from
progress = the larger of step / max_steps and training seconds / max_train_time (as cramming's budget schedules do):
it reaches its end value when the first of the two limits does. It is a pure function of the step and the clock,
so resuming needs no saved scheduler state, and a changed accumulation or process count cannot shift it. Without
a time budget it equals transformers' schedule of the same name step for step (`wsd`: its warmup_stable_decay;
tests/test_schedule.py); other transformers schedules (polynomial, ...) are not offered.

cramming's budget triangle (the rate rises for 75% of the budget, then falls to 0) needs no shape of its own:
`--lr_scheduler_type linear --warmup_ratio 0.75`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bert_recipes.errors import UsageError

SHAPES = ("linear", "cosine", "constant_with_warmup", "constant", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt", "cosine")


@dataclass(frozen=True)
class LearningRateSchedule:
    """Warmup, then decay over progress in [0, 1] (`constant`: neither, as in transformers).

    Warmup is counted in steps (`warmup_steps`, or `warmup_ratio` x max_steps without a time budget); with a time
    budget and no `warmup_steps` it is the first `warmup_ratio` of the budget's progress instead. The rate is the
    lower of the warmup line and the decay curve, so it stays continuous when a budget's clock runs ahead of the
    steps that count the warmup. `wsd` (warmup, stable, decay) holds the peak after warmup and decays over the last
    `decay_fraction` of the progress in `decay_shape`: any checkpoint on the plateau can be continued, or decayed.
    """

    peak: float
    max_steps: int
    max_train_time: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    shape: str = "linear"
    decay_fraction: float = 0.2
    decay_shape: str = "1-sqrt"

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise UsageError(f"--lr_scheduler_type {self.shape} is not one of {', '.join(SHAPES)}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 < self.decay_fraction <= 1 or self.decay_shape not in DECAY_SHAPES:
            raise UsageError(
                f"--wsd_decay_fraction must be in (0, 1] and --wsd_decay_shape one of {', '.join(DECAY_SHAPES)}, got "
                f"{self.decay_fraction} and {self.decay_shape}"
            )

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
        shape = self.shape
        if shape == "wsd":
            # the decay's own share of the progress, whatever the warmup
            decay_from, shape = 1.0 - self.decay_fraction, self.decay_shape
        done = (progress - decay_from) / max(1.0 - decay_from, 1e-12)
        # rounded: 1-sqrt would turn the 1e-16 of float rounding at the decay's first step into 1e-8
        return min(warm, decay_curve(shape, min(1.0, max(0.0, round(done, 12)))))

    def learning_rate(self, step: int, seconds: float) -> float:
        return self.peak * self.factor(step, seconds)


def decay_curve(shape: str, done: float) -> float:
    """The decay's multiplier when the fraction `done` of it has passed (1 for the shapes that do not decay)."""
    if shape == "linear":
        return 1.0 - done
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(done)
    return 1.0


def ramped_accumulation(progress: float, target: int, warmup_ratio: float) -> int:
    """Micro-batches per optimizer step under batch-size warmup: from 1 to `target`, linearly over the first
    `warmup_ratio` of the progress (0: `target` from the start), so the global batch grows from one micro-batch per
    process to its full size as cramming and ModernBERT do."""
    if warmup_ratio <= 0:
        return target
    return 1 + int((target - 1) * min(1.0, progress / warmup_ratio))
