"""The question-answering recipe's arguments: SQuAD data and windows, span decoding, and the shared fine-tuning
arguments with the BERT paper's SQuAD settings as defaults; and their checks, made before any heavy work."""

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

HUB_DATASETS = {False: "rajpurkar/squad", True: "rajpurkar/squad_v2"}


@dataclass
class QaDataConfig(SweepConfig):
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "SQuAD v2.0: questions may have no answer in the context."}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset; default rajpurkar/squad (rajpurkar/squad_v2 for v2.0)."}
    )
    train_file: str | None = field(default=None, metadata={"help": "Training file in the official SQuAD JSON format."})
    validation_file: str | None = field(default=None, metadata={"help": "Dev file in the official SQuAD JSON format."})
    max_seq_length: int = field(default=384, metadata={"help": "Tokens per window: question, context part, specials."})
    doc_stride: int = field(default=128, metadata={"help": "Tokens of context two neighbouring windows share."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer predicted, in tokens."})
    n_best_size: int = field(default=20, metadata={"help": "Start and end candidates tried per window."})
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={
            "help": "v2.0: predict no answer when the no-answer score beats the best span by more than this "
            "(eval_results.json's best_f1_thresh is the best value on the dev set)."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev questions."})


@dataclass
class QaTrainingArguments(FinetuningArguments):
    """The shared fine-tuning defaults with the BERT paper's SQuAD v1.1 settings (lr 5e-5, batch 32, 3 epochs)."""

    output_dir: str = field(
        default="runs/squad", metadata={"help": "The kept model, predictions.json, eval_results.json; runs/ inside."}
    )
    learning_rate: float = field(default=5.0e-5, metadata={"help": "Peak learning rate (paper: 5e-5)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training windows (paper: 3)."})
    metric_for_best_model: str | None = field(
        default="main", metadata={"help": "Picks the best checkpoint (--load_best_model_at_end); 'main': f1."}
    )


@dataclass
class QaConfig:
    data: QaDataConfig
    model: CheckpointConfig
    training: QaTrainingArguments


# what the recipe parses from YAML and the command line, in this order
QA_ARGUMENTS = (QaDataConfig, CheckpointConfig, QaTrainingArguments, FinetuningHubConfig)


def hub_dataset(data: QaDataConfig) -> str:
    return data.dataset_name or HUB_DATASETS[data.version_2_with_negative]


def check_qa_settings(config: QaConfig) -> None:
    data = config.data
    check_finetuning(config.model, config.training, data.max_seq_length)
    if bool(data.train_file) != bool(data.validation_file):
        raise UsageError("local SQuAD data needs both --train_file and --validation_file (official JSON format)")
    for flag, path in (("--train_file", data.train_file), ("--validation_file", data.validation_file)):
        if path and not Path(path).is_file():
            raise UsageError(f"{flag} '{path}' does not exist: pass a SQuAD JSON file (train-v1.1.json's format)")
    if not 0 < data.doc_stride < data.max_seq_length // 2:
        raise UsageError(
            f"--doc_stride {data.doc_stride} must be above 0 and below half of --max_seq_length "
            f"{data.max_seq_length}: windows would not move forward (BERT: 384 and 128)"
        )
    if data.max_answer_length < 1 or data.n_best_size < 1:
        raise UsageError("--max_answer_length and --n_best_size must be at least 1 (BERT: 30 and 20)")
    runs = len(learning_rates(data, config.training)) * len(seeds(data, config.training))
    check_resume(config.training, runs)
