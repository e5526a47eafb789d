"""What Accelerate, DeepSpeed and FSDP need to be told, kept out of the training loop.

- CPU process groups: a multi-GPU launch on a CPU-only machine runs gloo DDP only with `cpu=True`; DeepSpeed
  brings its own CPU accelerator, is turned off by that flag, and needs the gloo backend named.
- DeepSpeed's "auto" values are filled from a prepared DataLoader, and ours is not prepared.
- Accelerate silently trains plain DDP when FSDP is asked for on CPUs.
- Under DeepSpeed, `accelerator.backward` also steps the optimizer, so a step is skipped by not calling it, and
  the engine's own gradient buffers are the ones to clear.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

from bert_recipes.errors import UsageError


def launched_with_deepspeed() -> bool:
    """`accelerate launch` tells its workers about DeepSpeed through this variable."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(
    gradient_accumulation_steps: int, report_to: str, project_dir: str, find_unused_parameters: bool
) -> Accelerator:
    """An Accelerator that runs the launch it was given on GPUs or, with no GPU, on CPU processes over gloo."""
    on_cpu = not torch.cuda.is_available()
    deepspeed = launched_with_deepspeed()
    handlers: list[Any] = []
    if on_cpu and deepspeed:
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    if find_unused_parameters:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    accelerator = Accelerator(
        cpu=on_cpu and not deepspeed,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=None if report_to == "none" else report_to,
        project_dir=project_dir,
        kwargs_handlers=handlers,
    )
    check_sharding_applied(accelerator)
    return accelerator


def check_sharding_applied(accelerator: Accelerator) -> None:
    fsdp_requested = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_requested and accelerator.distributed_type != DistributedType.FSDP:
        raise UsageError(
            f"FSDP was requested but Accelerate runs {accelerator.distributed_type} here: it applies FSDP on GPUs "
            "only; on CPUs use accelerate_configs/multi_cpu.yaml or a DeepSpeed config"
        )


def fill_deepspeed_auto_values(accelerator: Accelerator, micro_batch_size: int, max_grad_norm: float) -> None:
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = max_grad_norm


def any_rank(accelerator: Accelerator, flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one: every rank takes the same branch after it."""
    if flag:
        accelerator.set_trigger()
    return accelerator.check_trigger()


def discard_gradients(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Drop the gradients of a step that will not be taken."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # accelerate's optimizer wrapper ignores zero_grad under DeepSpeed: the engine owns the buffers
        model.optimizer.zero_grad()
    else:
        optimizer.zero_grad(set_to_none=True)
