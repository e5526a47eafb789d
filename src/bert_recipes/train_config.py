"""The training settings of a pretraining run: `TrainConfig`, the checks it must pass before any heavy work, and
what it builds (the AdamW optimizer, the learning-rate schedule, the one-line description logged at the start)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import BertConfig

from bert_recipes import checkpointing as ckpt
from bert_recipes.corpus import CorpusConfig, check_corpus
from bert_recipes.data import DataConfig, validate_data_config
from bert_recipes.distributed import fill_deepspeed_auto_values, launched_with_deepspeed
from bert_recipes.errors import UsageError
from bert_recipes.modeling import SparsePretrainingLoss
from bert_recipes.schedule import DECAY_SHAPES, SHAPES, LearningRateSchedule


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/pretrain", metadata={"help": "Where checkpoints and the final model go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over: delete an earlier run's checkpoints, metrics and model."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint-STEP directory to continue from exactly."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data pairing, masking and dropout."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sequences per process per micro-batch."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sequences per process per eval batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    batch_size_warmup_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Batch-size warmup: over this first fraction of the run (steps or --max_train_time, as the LR "
            "schedule), the micro-batches per step grow linearly from 1 to --gradient_accumulation_steps (0: off)."
        },
    )
    learning_rate: float = field(default=5.0e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases or LayerNorm)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1.0e-6, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": f"Decay after warmup: {', '.join(SHAPES)} (wsd: warmup, stable at the peak, decay at the end). "
            "cramming's budget triangle is linear with --warmup_ratio 0.75."
        },
    )
    wsd_decay_fraction: float = field(
        default=0.2, metadata={"help": "wsd: the last fraction of the run (steps or --max_train_time) that decays."}
    )
    wsd_decay_shape: str = field(default="1-sqrt", metadata={"help": f"wsd: {', '.join(DECAY_SHAPES)} decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup steps; 0 uses warmup_ratio."})
    warmup_ratio: float = field(
        default=0.06,
        metadata={"help": "Warmup as a fraction of max_steps, or of --max_train_time when that is set (and no steps)."},
    )
    max_steps: int = field(
        default=1000,
        metadata={"help": "Optimizer steps; the LR schedule ends here or at --max_train_time, whichever comes first."},
    )
    num_train_epochs: int = field(
        default=0, metadata={"help": "Stop after this many passes (0: no limit); the LR schedule does not follow it."}
    )
    max_train_time: float = field(
        default=0.0,
        metadata={
            "help": "Training-time budget in seconds (0: no limit). The LR schedule runs over it: progress is the "
            "larger of step/max_steps and seconds/max_train_time, so the rate reaches its end with the budget."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Log loss, lr and tokens/s every N steps."})
    eval_steps: int = field(default=100, metadata={"help": "Evaluate on held-out documents every N steps (0: never)."})
    save_steps: int = field(default=500, metadata={"help": "Write checkpoint-STEP every N steps (0: only at the end)."})
    save_every_seconds: float = field(
        default=0.0, metadata={"help": "Also write a checkpoint every N seconds of training (0: never)."}
    )
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept (0: all)."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate trackers: tensorboard, wandb, none."})
    skip_nan_steps: int = field(default=0, metadata={"help": "Steps with a NaN/inf loss to skip before stopping."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "no, bf16 or fp16 (CUDA only); auto: the Accelerate config's value, else bf16 where the "
            "hardware runs it natively (recent GPUs, CPUs with AVX512-BF16 or AMX), else no."
        },
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model (inductor); pays with --max_predictions_per_seq (fixed shapes)."},
    )
    dataloader_num_workers: str = field(
        default="auto",
        metadata={
            "help": "DataLoader worker processes that read and tokenize while the model steps (0: none); auto: 0 on "
            "a CPU-only machine, else up to 4 per process, one core per process left to it."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward: less memory, about a third more time."}
    )
    ddp_timeout: float = field(
        default=1800.0,
        metadata={
            "help": "Seconds a collective waits for the slowest rank before the run fails (NCCL's default is 600; "
            "an exact resume first replays the data stream up to its position, which can take longer)."
        },
    )
    dropout_seed_per_rank: bool = field(
        default=True,
        metadata={
            "help": "Seed each rank's dropout with seed + rank after the (shared) initialisation; false: every "
            "rank draws the same dropout masks, as before."
        },
    )


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        # under ZeRO-3 (zero3_init_flag) a parameter holds an empty 1-d shard and its real shape is ds_shape:
        # by param.ndim every weight would lose its weight decay
        vector = len(getattr(param, "ds_shape", param.shape)) < 2
        (no_decay if vector or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over every parameter; torch's CPU default loops over them (bert-small: 21 ms against 124)
    return torch.optim.AdamW(
        groups, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon, fused=True
    )


def prepare_model_and_optimizer(acc: Accelerator, bert: torch.nn.Module, train: TrainConfig) -> tuple:
    """The model with its sparse pretraining loss and the AdamW optimizer, as Accelerate wraps them for this launch."""
    if train.gradient_checkpointing:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    fill_deepspeed_auto_values(acc, train.per_device_train_batch_size, train.max_grad_norm)
    # with offload_optimizer in the DeepSpeed config, Accelerate hands DeepSpeed a DeepSpeedCPUAdam with these
    # parameter groups and hyperparameters in place of the torch AdamW (tests/test_distributed.py reads what it got)
    return acc.prepare(SparsePretrainingLoss(bert), build_optimizer(bert, train))


def build_schedule(train: TrainConfig) -> LearningRateSchedule:
    return LearningRateSchedule(
        peak=train.learning_rate, max_steps=train.max_steps, max_train_time=train.max_train_time,
        warmup_steps=train.warmup_steps, warmup_ratio=train.warmup_ratio, shape=train.lr_scheduler_type,
        decay_fraction=train.wsd_decay_fraction, decay_shape=train.wsd_decay_shape,
    )  # fmt: skip


def validate_run(
    corpus_cfg: CorpusConfig, data_cfg: DataConfig, train: TrainConfig, bert_config: BertConfig, tokenizer
) -> Path | None:
    """Every check that can fail on user input, before any heavy work; returns the checkpoint to resume."""
    if not data_cfg.prepared_data_dir:
        check_corpus(corpus_cfg)
    validate_data_config(data_cfg, tokenizer)
    if data_cfg.max_seq_length > bert_config.max_position_embeddings:
        raise UsageError(
            f"--max_seq_length {data_cfg.max_seq_length} exceeds --max_position_embeddings "
            f"{bert_config.max_position_embeddings}: lower the first or raise the second"
        )
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(train, name) <= 0:
            raise UsageError(f"--{name} must be a positive number, got {getattr(train, name)}")
    if not 0 <= train.batch_size_warmup_ratio < 1:
        raise UsageError(f"--batch_size_warmup_ratio must be in [0, 1), got {train.batch_size_warmup_ratio}")
    if train.batch_size_warmup_ratio > 0 and launched_with_deepspeed():
        raise UsageError(
            "--batch_size_warmup_ratio changes the micro-batches per step, which DeepSpeed's engine fixes in its "
            "config: train without it under DeepSpeed, or use DDP or FSDP"
        )
    if train.overwrite_output_dir and train.resume_from_checkpoint:
        raise UsageError(
            "--overwrite_output_dir true deletes the checkpoints that --resume_from_checkpoint would continue: "
            "pass one of them"
        )
    ckpt.check_output_dir(train.output_dir, train.resume_from_checkpoint, train.overwrite_output_dir)
    resume = ckpt.resolve_resume_checkpoint(train.resume_from_checkpoint, train.output_dir)
    if resume is not None:
        ckpt.check_same_model(resume, bert_config.to_dict())
    return resume


def describe_run(
    train: TrainConfig, max_seq_length: int, acc: Accelerator, parameters: int, schedule: LearningRateSchedule
) -> str:
    """The first log line: the model's size, the processes, the batch, the length of the run, its learning rate."""
    micro_batch = train.per_device_train_batch_size * acc.num_processes  # sequences, all processes together
    global_batch = micro_batch * train.gradient_accumulation_steps
    ramping = train.batch_size_warmup_ratio > 0
    ramp = f" (from {micro_batch} over the first {train.batch_size_warmup_ratio:g})" if ramping else ""
    budget = f" or {train.max_train_time:g} s" if train.max_train_time > 0 else ""
    steps = schedule.warmup_in_steps
    warmup = (
        f"warmup {steps} steps" if steps or not train.max_train_time else f"warmup {train.warmup_ratio:g} of the budget"
    )
    wsd = train.lr_scheduler_type == "wsd"
    decay = f" ({train.wsd_decay_shape} decay over the last {train.wsd_decay_fraction:g})" if wsd else ""
    return (
        f"{parameters / 1e6:.1f}M params | {acc.num_processes} process(es), {acc.distributed_type} | global batch "
        f"{global_batch} seqs{ramp} = {global_batch * max_seq_length:,} tokens/step at length {max_seq_length} | "
        f"{train.max_steps} steps{budget}, {warmup}, peak lr {train.learning_rate:g} {train.lr_scheduler_type}{decay}"
        f" | mixed precision {acc.mixed_precision}"
    )
