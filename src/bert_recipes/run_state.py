"""What a pretraining checkpoint records of the loop, and how a run continues from one: the trainer's state and the
run's layout (compared on resume), the model in save_pretrained form, and the resume itself (Accelerate's state,
random states for ranks the saved run did not have, each rank's place in the data stream). The files themselves are
written and checked in checkpointing.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed

from bert_recipes import checkpointing as ckpt
from bert_recipes.config import save_config
from bert_recipes.data import TrainingStream, loader_workers

logger = get_logger(__name__)


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    tokens_seen: int = 0
    elapsed_seconds: float = 0.0
    skipped_nan_steps: int = 0
    last_eval_step: int = -1
    # how the run was laid out, checked on resume
    world_size: int = 1
    num_workers: int = 0
    zero_stage: int = 0  # 0: not DeepSpeed
    fsdp: bool = False
    mixed_precision: str = "no"


def run_layout(acc: Accelerator, num_workers: int) -> dict[str, Any]:
    """How this run is laid out: what a checkpoint records and a resume compares."""
    plugin = acc.state.deepspeed_plugin
    return {
        "world_size": acc.num_processes,
        "num_workers": num_workers,
        "zero_stage": plugin.zero_stage if plugin is not None else 0,
        "fsdp": acc.distributed_type == DistributedType.FSDP,
        "mixed_precision": acc.mixed_precision,
    }


def save_model(acc: Accelerator, model, tokenizer, directory: Path, configs: tuple) -> None:
    """save_pretrained form: config, safetensors weights (gathered under ZeRO-3/FSDP), tokenizer, run config."""
    state_dict = acc.get_state_dict(model)
    if acc.is_main_process:
        weights = {k.removeprefix("model."): v for k, v in state_dict.items()}
        acc.unwrap_model(model).model.save_pretrained(directory, state_dict=weights, safe_serialization=True)
        tokenizer.save_pretrained(directory)
        save_config(directory / "training_args.yaml", *configs)


def resume_state(acc: Accelerator, path: Path, layout: dict[str, Any], seed: int) -> tuple[TrainerState, dict]:
    """Load a checkpoint's Accelerate state into this run; the trainer state to continue with, and the saved one."""
    saved = ckpt.read_trainer_state(path)
    ckpt.check_resumable_layout(path, saved, layout)
    saved_ranks = saved.get("world_size", 1)
    ckpt.load_accelerate_state(acc, path, with_random_state=acc.process_index < saved_ranks)
    if acc.process_index >= saved_ranks:
        # a rank the saved run did not have: no random state to restore, so one of its own
        set_seed(seed, device_specific=True)
    # Accelerate restores the saved run's micro-batch count; a checkpoint is always taken at an optimizer-step
    # boundary, and with another --gradient_accumulation_steps the restored count would put every sync point
    # off the step, so that the optimizer never updated the weights again
    acc.step = 0
    return TrainerState(**{**saved, **layout}), saved


def resume_stream(
    acc: Accelerator, stream: TrainingStream, path: Path, saved: dict[str, Any], num_workers: int, max_epochs: int
) -> None:
    """Each rank's stream continues where it stopped. With another number of data slots (processes x
    workers) the saved positions do not map onto the new slots: the stream restarts with the next epoch, and the
    documents and tokens read so far carry over."""
    state_dir = path / ckpt.STATE_DIR
    positions = [ckpt.read_json(state_dir / ckpt.data_state_file(r)) for r in range(saved.get("world_size", 1))]
    was = (len(positions), saved.get("num_workers", loader_workers(positions[0]["loader"])))
    if was == (acc.num_processes, num_workers):
        stream.load_state_dict(positions[acc.process_index])
        return
    epoch = max(p["epoch"] for p in positions) + 1
    ends = (
        f" (epoch {epoch} reaches --num_train_epochs {max_epochs}: nothing is left to train)"
        if 0 < max_epochs <= epoch
        else ""
    )
    logger.warning(
        f"checkpoint was written by {was[0]} process(es) with {was[1]} DataLoader worker(s) each, resuming with "
        f"{acc.num_processes} and {num_workers}: the data stream restarts with the next epoch's order{ends}"
    )
    # the counts of every saved rank go to rank 0, so that their sums over ranks carry on
    stream.restart_at(epoch, positions if acc.is_main_process else [])
