"""The GLUE recipe's arguments: the task and data, the checkpoint, and transformers' TrainingArguments with the
BERT paper's fine-tuning defaults; and their checks, made before any heavy work."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from bert_recipes.distributed import resolve_mixed_precision
from bert_recipes.errors import UsageError
from bert_recipes.glue.tasks import TASKS
from bert_recipes.hub import HubConfig

# flags of the recipe's own argument class before it used TrainingArguments, and their spelling now
# (transformers 5 reads a warmup_steps value below 1 as the fraction warmup_ratio was)
RENAMED_FLAGS = {"warmup_ratio": "warmup_steps"}
# stands for each task's own main metric: TrainingArguments would turn an unset metric into the loss
MAIN_METRIC = "main"


@dataclass
class TaskConfig:
    task_name: str = field(
        default="sst2", metadata={"help": f"One of {', '.join(TASKS)}, a comma list of them, or 'all'."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Original GLUE layout (DIR/SST-2/train.tsv ...); default: the Hub's GLUE."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Custom csv/tsv/json training file: text_a[, text_b], label columns."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Custom dev file (with --train_file)."})
    test_file: str | None = field(default=None, metadata={"help": "Custom test file, labels not needed."})
    max_seq_length: int = field(default=128, metadata={"help": "Longest tokenized input; longer pairs are cut."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows of each dev set."})
    learning_rates: str | None = field(
        default=None,
        metadata={"help": "Comma list (2e-5,3e-5,5e-5): train with each, keep the one with the best median on dev."},
    )
    seeds: str | None = field(
        default=None,
        metadata={"help": "Comma list (1,2,3,4,5): one run per seed, reported as median (min-max); default: --seed."},
    )


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
class GlueTrainingArguments(TrainingArguments):
    """TrainingArguments, with the BERT paper's GLUE settings (Devlin et al. 2019, appendix A.3) as defaults."""

    output_dir: str = field(default="runs/glue", metadata={"help": "One folder per task, plus submission/."})
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
    # keeps the `length` column for the sampler; ModelInputCollator drops it before the model
    remove_unused_columns: bool = field(default=False, metadata={"help": "Drop columns the model does not take."})
    # without a GPU, launched processes must be CPU ranks (gloo), or each would train alone as rank 0
    use_cpu: bool = field(default=not torch.cuda.is_available(), metadata={"help": "Train on the CPU."})
    # the classifier uses every weight: skip DDP's extra graph walk
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
        metadata={
            "help": f"Picks the best checkpoint (--load_best_model_at_end); '{MAIN_METRIC}': each task's own "
            "(CoLA Matthews corr., MRPC and QQP F1, STS-B Spearman, MNLI matched accuracy, accuracy elsewhere)."
        },
    )

    def __post_init__(self) -> None:
        if not (self.bf16 or self.fp16):
            precision = resolve_mixed_precision(self.mixed_precision)
            self.bf16, self.fp16 = precision == "bf16", precision == "fp16"
        self.mixed_precision = "bf16" if self.bf16 else "fp16" if self.fp16 else "no"
        super().__post_init__()


@dataclass
class GlueConfig:
    """One GLUE run's settings, as the recipe parses them."""

    task: TaskConfig
    model: CheckpointConfig
    training: GlueTrainingArguments

    @classmethod
    def from_values(cls, **values: Any) -> GlueConfig:
        """From flat keyword values, as on the command line (`task_name=`, `learning_rate=` ...)."""
        parts = []
        for config_type in (TaskConfig, CheckpointConfig):
            names = {f.name for f in dataclasses.fields(config_type)}
            parts.append(config_type(**{k: values.pop(k) for k in names & set(values)}))
        return cls(*parts, GlueTrainingArguments(**values))


TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}
# HubConfig's settings that TrainingArguments lacks (retries); the ones both have (--push_to_hub, --hub_model_id ...)
# are parsed once, as TrainingArguments fields
GlueHubConfig = dataclasses.make_dataclass(
    "GlueHubConfig",
    [
        (f.name, f.type, field(default=f.default, metadata=f.metadata))
        for f in dataclasses.fields(HubConfig)
        if f.name not in TRAINING_FIELDS
    ],
)


# what the recipe parses from YAML and the command line, in this order
GLUE_ARGUMENTS = (TaskConfig, CheckpointConfig, GlueTrainingArguments, GlueHubConfig)


def hub_config(training: GlueTrainingArguments, extra: Any) -> HubConfig:
    """The push settings, from TrainingArguments' hub fields and GlueHubConfig's."""
    shared = {f.name: getattr(training, f.name) for f in dataclasses.fields(HubConfig) if f.name in TRAINING_FIELDS}
    return HubConfig(**{**shared, "hub_private_repo": bool(training.hub_private_repo)}, **dataclasses.asdict(extra))


def check_task_name(name: str) -> list[str]:
    """The tasks `--task_name` asks for (one, a comma list, or all), in the order given."""
    if name == "all":
        return list(TASKS)
    names = name.split(",")
    for one in names:
        if one not in TASKS:
            close = difflib.get_close_matches(one.lower(), [*TASKS, "all"], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(f"unknown --task_name '{one}'{hint}: use one of {', '.join(TASKS)}, or all")
    return names


def parse_number_list(flag: str, text: str, kind: type) -> list:
    try:
        values = [kind(value) for value in text.split(",")]
    except ValueError:
        example = "2e-5,3e-5,5e-5" if kind is float else "1,2,3"
        raise UsageError(f"--{flag} '{text}' is not a comma list of numbers: write e.g. {example}") from None
    if len(set(values)) != len(values):
        raise UsageError(f"--{flag} '{text}' repeats a value: each one is a separate run")
    return values


def learning_rates(config: GlueConfig) -> list[float]:
    if not config.task.learning_rates:
        return [config.training.learning_rate]
    rates = parse_number_list("learning_rates", config.task.learning_rates, float)
    if any(rate <= 0 for rate in rates):
        raise UsageError(f"--learning_rates '{config.task.learning_rates}' must hold positive numbers only")
    return rates


def seeds(config: GlueConfig) -> list[int]:
    if not config.task.seeds:
        return [config.training.seed]
    return parse_number_list("seeds", config.task.seeds, int)


def check_settings(config: GlueConfig) -> None:
    task, training = config.task, config.training
    if not config.model.model_name_or_path:
        raise UsageError("no checkpoint given: pass --model_name_or_path (a pretraining output dir or a Hub id)")
    if training.warmup_steps < 0:
        raise UsageError(f"--warmup_steps {training.warmup_steps} must be >= 0 (below 1: a fraction of training)")
    if task.max_seq_length < 8:
        raise UsageError(f"--max_seq_length {task.max_seq_length} is too short: use 128 (the BERT paper's value)")
    if task.train_file and task.data_dir:
        raise UsageError("--train_file and --data_dir both given: use the GLUE layout or custom files, not both")
    if task.train_file and len(check_task_name(task.task_name)) > 1:
        raise UsageError("custom --train_file data is one task: name it with --task_name (its labels and metric)")
    if bool(task.train_file) != bool(task.validation_file):
        raise UsageError("custom data needs both --train_file and --validation_file (the dev set picks the metric)")
    if task.data_dir and not Path(task.data_dir).is_dir():
        raise UsageError(f"--data_dir '{task.data_dir}' is not a directory: point it at the unpacked GLUE data")
    learning_rates(config)
    seeds(config)
    check_best_metric(config)
    check_resume(config)


def check_best_metric(config: GlueConfig) -> None:
    """A --metric_for_best_model given by hand must be one every requested task reports."""
    wanted = config.training.metric_for_best_model
    if wanted in (None, MAIN_METRIC, "loss", "eval_loss"):
        return
    for name in check_task_name(config.task.task_name):
        if wanted.removeprefix("eval_") not in TASKS[name].metrics:
            raise UsageError(
                f"--metric_for_best_model '{wanted}' is not a {name} metric ({', '.join(TASKS[name].metrics)}): "
                "leave it unset to use each task's main metric"
            )


def check_resume(config: GlueConfig) -> None:
    """--resume_from_checkpoint is `true` (each run from its newest checkpoint) or the checkpoint of a single run."""
    wanted = config.training.resume_from_checkpoint
    if wanted is None or wanted.lower() in ("true", "false"):
        return
    if not Path(wanted).is_dir():
        raise UsageError(f"--resume_from_checkpoint '{wanted}' is not a checkpoint folder: pass one, or true")
    runs = len(check_task_name(config.task.task_name)) * len(learning_rates(config)) * len(seeds(config))
    if runs > 1:
        raise UsageError(
            f"--resume_from_checkpoint '{wanted}' names one checkpoint, but this is {runs} runs: pass true to "
            "continue each from its own newest checkpoint"
        )
