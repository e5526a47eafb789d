"""The GLUE recipe's arguments: the task and data, the checkpoint, and transformers' TrainingArguments with the
BERT paper's fine-tuning defaults; and their checks, made before any heavy work."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bert_recipes.errors import UsageError
from bert_recipes.finetuning import (
    MAIN_METRIC,
    CheckpointConfig,
    FinetuningArguments,
    FinetuningHubConfig,
    SweepConfig,
    check_finetuning,
    check_resume,
    learning_rates,
    seeds,
)
from bert_recipes.glue.tasks import TASKS


@dataclass
class TaskConfig(SweepConfig):
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


@dataclass
class GlueTrainingArguments(FinetuningArguments):
    """The shared fine-tuning defaults, with GLUE's output layout and main metrics."""

    output_dir: str = field(default="runs/glue", metadata={"help": "One folder per task, plus submission/."})
    metric_for_best_model: str | None = field(
        default=MAIN_METRIC,
        metadata={
            "help": f"Picks the best checkpoint (--load_best_model_at_end); '{MAIN_METRIC}': each task's own "
            "(CoLA Matthews corr., MRPC and QQP F1, STS-B Spearman, MNLI matched accuracy, accuracy elsewhere)."
        },
    )


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


# what the recipe parses from YAML and the command line, in this order
GLUE_ARGUMENTS = (TaskConfig, CheckpointConfig, GlueTrainingArguments, FinetuningHubConfig)


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


def runs_wanted(config: GlueConfig) -> tuple[list[float], list[int]]:
    """The learning rates and seeds of each task's sweep."""
    return learning_rates(config.task, config.training), seeds(config.task, config.training)


def check_settings(config: GlueConfig) -> None:
    task = config.task
    check_finetuning(config.model, config.training, task.max_seq_length)
    if task.train_file and task.data_dir:
        raise UsageError("--train_file and --data_dir both given: use the GLUE layout or custom files, not both")
    if task.train_file and len(check_task_name(task.task_name)) > 1:
        raise UsageError("custom --train_file data is one task: name it with --task_name (its labels and metric)")
    if bool(task.train_file) != bool(task.validation_file):
        raise UsageError("custom data needs both --train_file and --validation_file (the dev set picks the metric)")
    if task.data_dir and not Path(task.data_dir).is_dir():
        raise UsageError(f"--data_dir '{task.data_dir}' is not a directory: point it at the unpacked GLUE data")
    rates, run_seeds = runs_wanted(config)
    check_best_metric(config)
    check_resume(config.training, len(check_task_name(task.task_name)) * len(rates) * len(run_seeds))


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
