"""The NER recipe's arguments: CoNLL files or a Hub dataset, how tags meet word pieces, and the shared fine-tuning
arguments; and their checks, made before any heavy work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bert_recipes.errors import UsageError
from bert_recipes.finetuning import (
    CheckpointConfig,
    FinetuningArguments,
    FinetuningHubConfig,
    SweepConfig,
    check_finetuning,
    check_resume,
    learning_rates,
    seeds,
)


@dataclass
class NerDataConfig(SweepConfig):
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset with `tokens` and `ner_tags` columns (e.g. eriktks/conll2003)."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "CoNLL file: a token per line, its tag in a column, a blank line between sentences."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "CoNLL dev file (with --train_file)."})
    label_column: int = field(
        default=-1, metadata={"help": "Column of the tag in the CoNLL files (0 is the token; -1 the last)."}
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Train on every piece of a word (B- becomes I- after the first); default: the first only."},
    )
    max_seq_length: int = field(
        default=256, metadata={"help": "Tokens per sentence; words past it are predicted O (and scored)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training sentences."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev sentences."})


@dataclass
class NerTrainingArguments(FinetuningArguments):
    """The shared fine-tuning defaults with 5e-5, 3 epochs and batch 16 (from the BERT paper's fine-tuning grid; the
    smaller of its batches gives the few thousand sentences of a NER set twice the steps)."""

    output_dir: str = field(
        default="runs/ner", metadata={"help": "The kept model, predictions.txt, eval_results.json; runs/ inside."}
    )
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Training batch per device (paper: 16, 32)."}
    )
    learning_rate: float = field(default=5.0e-5, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training sentences."})
    metric_for_best_model: str | None = field(
        default="main", metadata={"help": "Picks the best checkpoint (--load_best_model_at_end); 'main': overall_f1."}
    )


@dataclass
class NerConfig:
    data: NerDataConfig
    model: CheckpointConfig
    training: NerTrainingArguments


# what the recipe parses from YAML and the command line, in this order
NER_ARGUMENTS = (NerDataConfig, CheckpointConfig, NerTrainingArguments, FinetuningHubConfig)


def check_ner_settings(config: NerConfig) -> None:
    data = config.data
    check_finetuning(config.model, config.training, data.max_seq_length)
    if not (data.train_file or data.dataset_name):
        raise UsageError("no data given: pass --train_file and --validation_file (CoNLL format) or --dataset_name")
    if data.train_file and data.dataset_name:
        raise UsageError("--train_file and --dataset_name both given: use local CoNLL files or a Hub dataset")
    if bool(data.train_file) != bool(data.validation_file):
        raise UsageError("local NER data needs both --train_file and --validation_file (CoNLL format)")
    for flag, path in (("--train_file", data.train_file), ("--validation_file", data.validation_file)):
        if path and not Path(path).is_file():
            raise UsageError(f"{flag} '{path}' does not exist: pass a CoNLL file (a token and its tag per line)")
    if data.label_column == 0:
        raise UsageError("--label_column 0 is the token itself: use the tag's column (-1, the last, by default)")
    check_resume(config.training, len(learning_rates(data, config.training)) * len(seeds(data, config.training)))
