"""Counts the training step's blocking reads of the device: tensor-to-host conversions and collectives made while a
Pretrainer step runs, attributed to the recipe (its own code, or torch, Accelerate and transformers code it called).

The data pipeline is left out (it builds CPU tensors before they travel to the device), and so is DeepSpeed's engine
(its reads are its own). Per step is the difference between the counts after two optimizer steps, divided by the steps
between them: setup, the first step and the end of the run do not count.

Run as a script under `accelerate launch` (tests/test_host_reads.py does), or imported for one in-process run.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch

PACKAGE = str(Path(__file__).resolve().parents[1] / "src" / "bert_recipes")
DATA_PIPELINE = ("masking.py", "corpus.py", "tokenization.py")
# libraries the recipe calls into: a read there is the recipe's
PASS_THROUGH = ("/torch/", "/accelerate/", "/transformers/")
READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "nonzero", "masked_select")
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier", "reduce_scatter_tensor")


def recipe_site() -> str | None:
    """The recipe's frame that caused the current call, or None when the data pipeline or another library
    (DeepSpeed) made it."""
    frame = sys._getframe(2)  # the caller of the counted method
    while frame is not None:
        filename = frame.f_code.co_filename
        if not any(part in filename for part in PASS_THROUGH):
            in_data_package = filename.startswith(f"{PACKAGE}/data/")
            if filename.startswith(PACKAGE) and not in_data_package and not filename.endswith(DATA_PIPELINE):
                return f"{Path(filename).name}:{frame.f_lineno}"
            return None
        frame = frame.f_back
    return None


def boolean_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, torch.Tensor) and part.dtype == torch.bool for part in parts)


class ReadCounter:
    """Counts the recipe's host reads and collectives, by kind and by site."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self._saved: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, kind: str, reads=lambda *args, **kwargs: True) -> None:
        """Count calls of `owner.name` that `reads` says wait for the device."""
        original = getattr(owner, name)
        counter = self

        def counted(*args, **kwargs):
            site = reads(*args, **kwargs) and recipe_site()
            if site:
                counter.counts[kind] += 1
                counter.sites[f"{site} {name}"] += 1
            return original(*args, **kwargs)

        self._saved.append((owner, name, original))
        setattr(owner, name, counted)

    def install(self) -> None:
        for name in READS:
            self.wrap(torch.Tensor, name, "reads")
        # a selection by a boolean tensor is sized on the host (a nonzero inside)
        self.wrap(torch.Tensor, "__getitem__", "reads", lambda _, index: boolean_index(index))
        for name in COLLECTIVES:
            self.wrap(torch.distributed, name, "collectives")

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


def count_reads(args: list[str], first: int, last: int) -> dict:
    """Train with `args`; reads per optimizer step between steps `first` and `last`, and where they came from."""
    from bert_recipes import dropout
    from bert_recipes.config import parse_config
    from bert_recipes.corpus import CorpusConfig
    from bert_recipes.data import DataConfig
    from bert_recipes.modeling import ModelConfig
    from bert_recipes.trainer import Pretrainer, TrainConfig

    counter, marks = ReadCounter(), {}
    trainer = Pretrainer(*parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args))
    after_step = trainer._log_evaluate_save

    def marked(*a, **k):
        marks[trainer.state.step] = (Counter(counter.counts), Counter(counter.sites))
        return after_step(*a, **k)

    trainer._log_evaluate_save = marked
    # count the accelerator's path: the mask check that is free on a CPU (and kept there) waits on a GPU
    host_memory, dropout.HOST_MEMORY_DEVICES = dropout.HOST_MEMORY_DEVICES, ()
    counter.install()
    try:
        trainer.run()
    finally:
        counter.uninstall()
        dropout.HOST_MEMORY_DEVICES = host_memory
    (start, start_sites), (end, end_sites) = marks[first], marks[last]
    return {
        "reads_per_step": (end["reads"] - start["reads"]) / (last - first),
        "collectives_per_step": (end["collectives"] - start["collectives"]) / (last - first),
        "sites": dict(end_sites - start_sites),
        "rank": trainer.accelerator.process_index,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "num_processes": trainer.accelerator.num_processes,
    }


def main(argv: list[str]) -> None:
    first, last, report = int(argv[0]), int(argv[1]), argv[2]
    result = count_reads(argv[3:], first, last)
    Path(f"{report}.rank{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
