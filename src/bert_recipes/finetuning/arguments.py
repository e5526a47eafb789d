"""What every fine-tuning recipe (GLUE, question answering, NER) parses besides its own data settings: the
checkpoint, transformers' TrainingArguments with the BERT paper's fine-tuning defaults, the sweep over learning
rates and seeds, and the Hub settings; and their checks, made before any heavy work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from bert_recipes.distributed import resolve_mixed_precision
from bert_recipes.errors import UsageError
from bert_recipes.hub import HubConfig

# flags of the recipes' own argument class before they used TrainingArguments, and their spelling now
# (transformers 5 reads a warmup_steps value below 1 as the fraction warmup_ratio was)
RENAMED_FLAGS = {"warmup_ratio": "warmup_steps"}
# stands for each task's own main metric: TrainingArguments would turn an unset metric into the loss
MAIN_METRIC = "main"


@dataclass
class CheckpointConfig:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretraining output dir, a checkpoint-STEP dir or a Hub id (required)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the checkpoint."})
    fast_cpu_dropout: bool = field(
        default=True,
        metadata={"help": "Draw CPU training dropout masks 16 random bits at a time (bert_recipes.dropout)."},
    )


@dataclass
class FinetuningArguments(TrainingArguments):
    """TrainingArguments with the BERT paper's fine-tuning settings (Devlin et al. 2019, appendix A.3) as defaults."""

    output_dir: str = field(default="runs/finetune", metadata={"help": "One folder per task."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch per device (paper: 32)."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Prediction batch per device."})
    learning_rate: float = field(default=2.0e-5, metadata={"help": "Peak learning rate (paper: 2e-5 to 5e-5)."})
    warmup_steps: float = field(
        default=0.1, metadata={"help": "Linear warmup steps; below 1, a fraction of all steps (paper: 0.1)."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (paper: 0.01)."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    # a finished run's checkpoints are deleted; while it runs, the newest (and the best) one is enough to resume
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept per run."})
    # rows of similar length share a batch, so dynamic padding leaves almost nothing to pad
    train_sampling_strategy: str = field(
        default="group_by_length", metadata={"help": "random, sequential or group_by_length (similar lengths)."}
    )
    # keeps the `length` column for the sampler; the recipes' collators drop it before the model
    remove_unused_columns: bool = field(default=False, metadata={"help": "Drop columns the model does not take."})
    # without a GPU, launched processes must be CPU ranks (gloo), or each would train alone as rank 0
    use_cpu: bool = field(default=not torch.cuda.is_available(), metadata={"help": "Train on the CPU."})
    # every head uses every weight: skip DDP's extra graph walk
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={"help": "DDP's unused-weight search."})
    dataloader_pin_memory: bool = field(default=torch.cuda.is_available(), metadata={"help": "Pin batch memory."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "no, bf16 or fp16 (CUDA only); auto: the Accelerate config's value, else bf16 where the hardware "
            "runs it natively (recent GPUs, CPUs with AVX512-BF16 or AMX). --bf16 or --fp16 given explicitly win."
        },
    )
    metric_for_best_model: str | None = field(
        default=MAIN_METRIC,
        metadata={"help": f"Picks the best checkpoint (--load_best_model_at_end); '{MAIN_METRIC}': the task's own."},
    )

    def __post_init__(self) -> None:
        if not (self.bf16 or self.fp16):
            precision = resolve_mixed_precision(self.mixed_precision)
            self.bf16, self.fp16 = precision == "bf16", precision == "fp16"
        self.mixed_precision = "bf16" if self.bf16 else "fp16" if self.fp16 else "no"
        super().__post_init__()


@dataclass
class SweepConfig:
    learning_rates: str | None = field(
        default=None,
        metadata={"help": "Comma list (2e-5,3e-5,5e-5): train with each, keep the one with the best median on dev."},
    )
    seeds: str | None = field(
        default=None,
        metadata={"help": "Comma list (1,2,3,4,5): one run per seed, reported as median (min-max); default: --seed."},
    )


TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}
# HubConfig's settings that TrainingArguments lacks (retries); the ones both have (--push_to_hub, --hub_model_id ...)
# are parsed once, as TrainingArguments fields
FinetuningHubConfig = dataclasses.make_dataclass(
    "FinetuningHubConfig",
    [
        (f.name, f.type, field(default=f.default, metadata=f.metadata))
        for f in dataclasses.fields(HubConfig)
        if f.name not in TRAINING_FIELDS
    ],
)


def hub_config(training: TrainingArguments, extra: Any) -> HubConfig:
    """The push settings, from TrainingArguments' hub fields and FinetuningHubConfig's."""
    shared = {f.name: getattr(training, f.name) for f in dataclasses.fields(HubConfig) if f.name in TRAINING_FIELDS}
    return HubConfig(**{**shared, "hub_private_repo": bool(training.hub_private_repo)}, **dataclasses.asdict(extra))


def parse_number_list(flag: str, text: str, kind: type) -> list:
    try:
        values = [kind(value) for value in text.split(",")]
    except ValueError:
        example = "2e-5,3e-5,5e-5" if kind is float else "1,2,3"
        raise UsageError(f"--{flag} '{text}' is not a comma list of numbers: write e.g. {example}") from None
    if len(set(values)) != len(values):
        raise UsageError(f"--{flag} '{text}' repeats a value: each one is a separate run")
    return values


def learning_rates(sweep: SweepConfig, training: TrainingArguments) -> list[float]:
    if not sweep.learning_rates:
        return [training.learning_rate]
    rates = parse_number_list("learning_rates", sweep.learning_rates, float)
    if any(rate <= 0 for rate in rates):
        raise UsageError(f"--learning_rates '{sweep.learning_rates}' must hold positive numbers only")
    return rates


def seeds(sweep: SweepConfig, training: TrainingArguments) -> list[int]:
    return parse_number_list("seeds", sweep.seeds, int) if sweep.seeds else [training.seed]


def check_finetuning(model: CheckpointConfig, training: TrainingArguments, max_seq_length: int) -> None:
    """The checks every fine-tuning recipe shares."""
    if not model.model_name_or_path:
        raise UsageError("no checkpoint given: pass --model_name_or_path (a pretraining output dir or a Hub id)")
    if training.warmup_steps < 0:
        raise UsageError(f"--warmup_steps {training.warmup_steps} must be >= 0 (below 1: a fraction of training)")
    if max_seq_length < 8:
        raise UsageError(f"--max_seq_length {max_seq_length} is too short: use 128 (the BERT paper's value)")


def check_resume(training: TrainingArguments, runs: int) -> None:
    """--resume_from_checkpoint is `true` (each run from its newest checkpoint) or the checkpoint of a single run."""
    wanted = training.resume_from_checkpoint
    if wanted is None or wanted.lower() in ("true", "false"):
        return
    if not Path(wanted).is_dir():
        raise UsageError(f"--resume_from_checkpoint '{wanted}' is not a checkpoint folder: pass one, or true")
    if runs > 1:
        raise UsageError(
            f"--resume_from_checkpoint '{wanted}' names one checkpoint, but this is {runs} runs: pass true to "
            "continue each from its own newest checkpoint"
        )
