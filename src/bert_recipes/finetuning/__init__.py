"""What the fine-tuning recipes (GLUE, question answering, NER) share: their arguments, the checkpoint under a task
head, predictions in row order, and the sweep over learning rates and seeds with its medians and kept model.

arguments.py parses and checks, checkpoint.py loads, batches.py pads, prediction.py predicts, sweep.py runs and
records.
"""

from bert_recipes.finetuning.arguments import (
    MAIN_METRIC,
    RENAMED_FLAGS,
    CheckpointConfig,
    FinetuningArguments,
    FinetuningHubConfig,
    SweepConfig,
    check_finetuning,
    check_resume,
    hub_config,
    learning_rates,
    seeds,
)
from bert_recipes.finetuning.batches import InOrderTrainer, ModelInputCollator
from bert_recipes.finetuning.checkpoint import load_checked_tokenizer, load_model
from bert_recipes.finetuning.prediction import predict_in_order, prediction_trainer
from bert_recipes.finetuning.sweep import (
    RunRecord,
    Sweep,
    TaskResult,
    format_metrics,
    mean_score,
    points_range,
    summarize_runs,
    write_json,
)

__all__ = [
    "MAIN_METRIC",
    "RENAMED_FLAGS",
    "CheckpointConfig",
    "FinetuningArguments",
    "FinetuningHubConfig",
    "InOrderTrainer",
    "ModelInputCollator",
    "RunRecord",
    "Sweep",
    "SweepConfig",
    "TaskResult",
    "check_finetuning",
    "check_resume",
    "format_metrics",
    "hub_config",
    "learning_rates",
    "load_checked_tokenizer",
    "load_model",
    "mean_score",
    "points_range",
    "predict_in_order",
    "prediction_trainer",
    "seeds",
    "summarize_runs",
    "write_json",
]
