"""What Accelerate, DeepSpeed and FSDP need to be told, kept out of the training loop.

- CPU process groups: a multi-GPU launch on a CPU-only machine runs gloo DDP only with `cpu=True`; DeepSpeed
  brings its own CPU accelerator, is turned off by that flag, and needs the gloo backend named.
- DeepSpeed's "auto" values are filled from a prepared DataLoader, and ours is not prepared.
- Accelerate silently trains plain DDP when FSDP is asked for on CPUs.
- Under DeepSpeed, `accelerator.backward` also steps the optimizer, so a step is skipped by not calling it, and
  the engine's own gradient buffers are the ones to clear.
- Mixed precision: bf16 wherever the hardware runs it natively, CPUs included (oneDNN on AVX512-BF16/AMX).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs

from bert_recipes.errors import UsageError

logger = get_logger(__name__)

PRECISIONS = ("no", "bf16", "fp16")


def launched_with_deepspeed() -> bool:
    """`accelerate launch` tells its workers about DeepSpeed through this variable."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def bf16_supported() -> bool:
    if torch.cuda.is_available():
        # by default torch counts bf16 that a V100 or T4 emulates (slower than fp16 or fp32) as supported
        return torch.cuda.is_bf16_supported(including_emulation=False)
    # without AVX512-BF16 or AMX, oneDNN emulates bf16 and autocast is slower than fp32
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_mixed_precision(requested: str) -> str:
    """`auto`: the Accelerate config's value when launched with one, else bf16 where the hardware has it."""
    # Accelerate refuses a mixed_precision key beside a DeepSpeed config file, and its launcher then exports "no":
    # under DeepSpeed the precision is the DeepSpeed JSON's, whose "auto" Accelerate fills from this choice
    from_config = None if launched_with_deepspeed() else os.environ.get("ACCELERATE_MIXED_PRECISION")
    precision = requested if requested != "auto" else from_config or ("bf16" if bf16_supported() else "no")
    if precision not in PRECISIONS:
        raise UsageError(f"--mixed_precision {requested} is not one of auto, {', '.join(PRECISIONS)}")
    if precision == "fp16" and not torch.cuda.is_available():
        raise UsageError("--mixed_precision fp16 needs a CUDA GPU (fp16 on CPUs has no loss scaling): use bf16 or no")
    if precision == "bf16" and not bf16_supported():
        logger.warning("bf16 was asked for but this hardware emulates it (slower than fp32): --mixed_precision no")
    return precision


def cores_per_process() -> int:
    """The cores this process may use, shared with the other processes of its machine (torchrun sets
    LOCAL_WORLD_SIZE for `accelerate launch`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def resolve_num_workers(requested: str, device: torch.device, cores: int) -> int:
    """--dataloader_num_workers: a count, or `auto`. On a CPU-only machine auto is 0: the workers would take the
    cores the step runs on (benchmarks/streaming_pipeline.py measured a slower run with them). On an accelerator the
    data comes from the host while the device steps: up to 4 workers, leaving one core to the training process,
    which launches the kernels. One core makes about 330k tokens/s of pairs (benchmarks/data_throughput.py), about
    what a bert-base step at length 128 eats on an A100 and half of an H100's; four leave room for slower cores and
    smaller models."""
    if requested != "auto":
        if not requested.isdigit():
            raise UsageError(f"--dataloader_num_workers {requested} is not a count: pass 0, 1, 2, ... or auto")
        return int(requested)
    return 0 if device.type == "cpu" else max(0, min(4, cores - 1))


def make_accelerator(
    gradient_accumulation_steps: int,
    report_to: str,
    project_dir: str,
    find_unused_parameters: bool,
    mixed_precision: str = "auto",
    torch_compile: bool = False,
    ddp_timeout: float = 1800.0,
) -> Accelerator:
    """An Accelerator that runs the launch it was given on GPUs or, with no GPU, on CPU processes over gloo."""
    on_cpu = not torch.cuda.is_available()
    deepspeed = launched_with_deepspeed()
    backend = {"backend": "gloo"} if on_cpu and deepspeed else {}
    handlers: list[Any] = [InitProcessGroupKwargs(timeout=timedelta(seconds=ddp_timeout), **backend)]
    if find_unused_parameters:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    accelerator = Accelerator(
        cpu=on_cpu and not deepspeed,
        mixed_precision=resolve_mixed_precision(mixed_precision),
        dynamo_backend="inductor" if torch_compile else None,
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


def check_optimizer_steps(accelerator: Accelerator, step: int, accumulation: int) -> None:
    """Stop rather than train on silently when the optimizer would not run: Accelerate's optimizer step (and, under
    DeepSpeed, the engine's step inside backward) does nothing unless the last micro-batch was a sync point."""
    if not accelerator.sync_gradients:
        raise UsageError(
            f"step {step}: the optimizer would not update the weights (Accelerate's micro-batch counter is "
            f"{accelerator.step}, off the --gradient_accumulation_steps {accumulation} boundary); stopped instead "
            "of training on unchanged weights; the last checkpoint is intact, please report this"
        )


def discard_gradients(
    accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, last_loss: torch.Tensor
) -> None:
    """Drop the gradients of a step that will not be taken; `last_loss` is its last micro-batch's, whose backward
    has not run."""
    # accumulate() counts micro-batches here: a step cut short would shift the next step's sync point
    accelerator.step = 0
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # no backward here: it would step the optimizer. Accelerate's optimizer wrapper ignores zero_grad under
        # DeepSpeed: the engine owns the buffers
        model.optimizer.zero_grad()
        return
    # the reducing backward: DDP expects it after the forward, and FSDP2 keeps the earlier micro-batches' gradients
    # in unsharded buffers that only a reducing backward empties (zero_grad would leave them for the next step)
    accelerator.backward(last_loss)
    optimizer.zero_grad(set_to_none=True)
