"""Fine-tune and evaluate a BERT checkpoint on the nine GLUE tasks with transformers' Trainer.

tasks.py describes the tasks, config.py holds the recipe's arguments, data.py reads the data, finetune.py trains
and predicts, report.py writes the results.
"""

from bert_recipes.finetuning import RENAMED_FLAGS, CheckpointConfig, TaskResult, hub_config
from bert_recipes.glue.config import GLUE_ARGUMENTS, GlueConfig, GlueTrainingArguments, TaskConfig
from bert_recipes.glue.finetune import majority_baseline, run_glue
from bert_recipes.glue.report import glue_score, results_markdown
from bert_recipes.glue.tasks import TASKS, Task

__all__ = [
    "GLUE_ARGUMENTS",
    "RENAMED_FLAGS",
    "TASKS",
    "CheckpointConfig",
    "GlueConfig",
    "GlueTrainingArguments",
    "Task",
    "TaskConfig",
    "TaskResult",
    "glue_score",
    "hub_config",
    "majority_baseline",
    "results_markdown",
    "run_glue",
]
