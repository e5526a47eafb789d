"""Launched by tests/test_nan_guard.py under `accelerate launch`: rank 1's loss turns NaN at its third training
forward pass; records what each rank ended with (steps, learning rate, DeepSpeed's own step count, finite weights)."""

from __future__ import annotations

import json
import math
import os
import sys
from itertools import count
from pathlib import Path

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import run_cli
from bert_recipes.modeling import ModelConfig, SparsePretrainingLoss
from bert_recipes.trainer import Pretrainer, TrainConfig

NAN_AT_FORWARD = 3


def poison_rank_one() -> None:
    forward, calls = SparsePretrainingLoss.forward, count(1)

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training and next(calls) == NAN_AT_FORWARD and os.environ.get("RANK") == "1":
            out["loss"] = out["loss"] * math.nan
        return out

    SparsePretrainingLoss.forward = poisoned


def main(argv: list[str]) -> None:
    poison_rank_one()
    trainer = Pretrainer(*parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], argv))
    acc = trainer.accelerator
    trainer.run()
    report = {
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "step": trainer.state.step,
        "skipped_nan_steps": trainer.state.skipped_nan_steps,
        # the rate the last step ran with, and the one the schedule gives the step after step - 1 completed ones
        "learning_rate": trainer.optimizer.param_groups[0]["lr"],
        # (no time budget in this run: the clock plays no part)
        "scheduled_rate": trainer.schedule.learning_rate(trainer.state.step - 1, seconds=0.0),
        "engine_steps": getattr(trainer.model, "global_steps", None),
        "finite_weights": all(math.isfinite(p.detach().double().sum().item()) for p in trainer.bert.parameters()),
    }
    Path(trainer.output_dir, f"nan_probe_rank{acc.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:], init_state=False)
