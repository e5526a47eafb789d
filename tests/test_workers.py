"""--dataloader_num_workers auto and the copy of batches to the device: what each machine gets, and that the
CUDA-only pinning stays off on CPUs."""

from __future__ import annotations

import pytest
import torch

from bert_recipes.distributed import cores_per_process, resolve_num_workers
from bert_recipes.errors import UsageError
from bert_recipes.step_io import copies_from_pinned_memory, to_device

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


@pytest.mark.parametrize(("device", "cores", "workers"), [
    (CPU, 2, 0), (CPU, 64, 0),  # on a CPU-only machine the workers would take the step's cores
    (CUDA, 16, 4), (CUDA, 4, 3), (CUDA, 3, 2), (CUDA, 2, 1), (CUDA, 1, 0),  # one core stays with the step
])  # fmt: skip
def test_auto_workers_by_device_and_cores(device, cores, workers):
    assert resolve_num_workers("auto", device, cores) == workers


def test_a_given_count_is_kept_and_anything_else_refused():
    assert resolve_num_workers("3", CPU, 2) == 3 and resolve_num_workers("0", CUDA, 16) == 0
    for bad in ("-1", "many", "2.5", ""):
        with pytest.raises(UsageError, match="--dataloader_num_workers"):
            resolve_num_workers(bad, CUDA, 16)


def test_cores_are_shared_by_the_processes_of_a_machine(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    alone = cores_per_process()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cores_per_process() == max(1, alone // 2)


def test_batches_are_pinned_for_cuda_only():
    assert copies_from_pinned_memory(CUDA) and not copies_from_pinned_memory(CPU)
    batch = {"input_ids": torch.arange(6).view(2, 3), "labels": torch.ones(2, 3)}
    moved = to_device(batch, CPU)
    # on a CPU the batch is used where it is: no pinned copy, no copy at all
    assert all(moved[k] is batch[k] for k in batch)
