"""Launched by tests/test_distributed.py under `accelerate launch`: trains with the real Pretrainer, then records
what each rank saw (process count, backend, hashes of its first examples, a parameter checksum, the optimizer that
stepped and what it was given, the weights' dtype) as JSON."""

from __future__ import annotations

import hashlib
import json
import math
import sys
from itertools import islice
from pathlib import Path

import torch

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import run_cli
from bert_recipes.modeling import ModelConfig
from bert_recipes.train_config import build_optimizer
from bert_recipes.trainer import Pretrainer, TrainConfig


def example_hashes(trainer: Pretrainer, count: int) -> list[str]:
    stream = trainer.stream.open_epoch(0)
    return [hashlib.sha1(str(row["input_ids"]).encode()).hexdigest() for row in islice(stream, count)]


def sharded_parameter_count(model: torch.nn.Module) -> int:
    """Parameters whose local tensor is smaller than the full one (FSDP2 DTensor shards)."""
    return sum(1 for p in model.parameters() if hasattr(p, "to_local") and p.to_local().numel() < p.numel())


def process_group_timeout() -> float:
    group = torch.distributed.distributed_c10d._get_default_group()
    return group._get_backend(torch.device("cpu")).options._timeout.total_seconds()


def logged_records(output_dir: Path) -> list[dict]:
    # not tests.test_trainer's reader: importing the test modules sets up Accelerate's state before the Pretrainer
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def stepping_optimizer(trainer: Pretrainer) -> torch.optim.Optimizer:
    """The optimizer that updates the weights: under DeepSpeed the one inside the engine's ZeRO optimizer."""
    zero_optimizer = getattr(trainer.model, "optimizer", None)
    return getattr(zero_optimizer, "optimizer", None) or trainer.optimizer.optimizer


def main(argv: list[str]) -> None:
    corpus, data, model, train = parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], argv)
    trainer = Pretrainer(corpus, data, model, train)
    acc = trainer.accelerator
    # read before run(): end_training() tears the process group down
    backend = str(torch.distributed.get_backend()) if torch.distributed.is_initialized() else None
    timeout = process_group_timeout() if torch.distributed.is_initialized() else None
    sharded = sharded_parameter_count(trainer.model)
    optimizer = stepping_optimizer(trainer)
    # the recipe's grouping as it meets the model here (under ZeRO-3: empty shards), counted in whole weights;
    # the stepping optimizer's groups cannot say it: ZeRO-3 empties them between steps
    grouped = [
        {"weight_decay": g["weight_decay"], "elements": sum(getattr(p, "ds_numel", p.numel()) for p in g["params"])}
        for g in build_optimizer(trainer.bert, train).param_groups
    ]
    trainer.run()
    report = {
        "rank": acc.process_index,
        "num_processes": acc.num_processes,
        "distributed_type": str(acc.distributed_type),
        "backend": backend,
        "timeout_seconds": timeout,
        # equal on every rank exactly when the ranks drew the same random numbers (dropout masks) all along
        "rng_state": hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest(),
        "examples": example_hashes(trainer, 40),
        "sharded_parameters": sharded,
        "checksum": [p.detach().double().sum().item() for p in trainer.bert.parameters()],
        "optimizer": type(optimizer).__name__,
        "optimizer_groups": [{k: g[k] for k in ("betas", "eps", "weight_decay")} for g in optimizer.param_groups],
        "weight_decay_groups": grouped,
        "offloads_optimizer": bool(getattr(trainer.model, "zero_use_cpu_optimizer", lambda: False)()),
        "weight_dtype": str(next(trainer.model.parameters()).dtype),
        "losses_finite": all(math.isfinite(r["loss"]) for r in logged_records(trainer.output_dir)),
    }
    Path(train.output_dir, f"probe_rank{acc.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    run_cli(main, sys.argv[1:], init_state=False)
