"""Fine-tuning on GLUE with transformers' Trainer: the checkpoint under a classification head, every learning rate
and seed run by the shared sweep (bert_recipes.finetuning), and GLUE's own predictions, metrics and files."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import evaluate
import numpy as np
from accelerate import PartialState
from accelerate.logging import get_logger
from transformers import (
    AutoModelForSequenceClassification,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from bert_recipes.errors import UsageError
from bert_recipes.finetuning import (
    CheckpointConfig,
    ModelInputCollator,
    Sweep,
    TaskResult,
    load_checked_tokenizer,
    load_model,
    mean_score,
    predict_in_order,
    prediction_trainer,
)
from bert_recipes.glue.config import GlueConfig, check_settings, runs_wanted
from bert_recipes.glue.data import load_task_data, tasks_to_run, tokenize
from bert_recipes.glue.report import write_glue_results, write_task_outputs
from bert_recipes.glue.tasks import SPLIT_SUFFIX, TASKS, Task
from bert_recipes.metrics import GLUE_METRIC

logger = get_logger(__name__)


def load_classifier(config: CheckpointConfig, task: Task, seed: int) -> PreTrainedModel:
    """The checkpoint under a fresh classification (or, for STS-B, regression) head drawn from `seed`."""
    head = {"num_labels": task.num_labels}
    head["problem_type"] = "regression" if task.is_regression else "single_label_classification"
    if task.labels:
        head["id2label"] = dict(enumerate(task.label_names))
        head["label2id"] = {name: i for i, name in enumerate(task.label_names)}
    return load_model(AutoModelForSequenceClassification, config, seed, "classifier", **head)


# ---- prediction and metrics --------------------------------------------------------------------------------------


def predicted_values(task: Task, outputs: np.ndarray) -> np.ndarray:
    """Class ids, or scores for STS-B, from the model's logits."""
    return np.squeeze(outputs, -1) if task.is_regression else np.argmax(outputs, axis=-1)


def predict(predictor: Trainer, split: datasets.Dataset, task: Task) -> np.ndarray:
    """Class ids (scores for STS-B) in the split's row order."""
    return predicted_values(task, predict_in_order(predictor, split, drop=("label",)))


def compute_metrics(name: str, split: str, predictions: np.ndarray, references: list) -> dict[str, float]:
    metric = evaluate.load(GLUE_METRIC, config_name=name, keep_in_memory=True)
    scores = metric.compute(predictions=predictions, references=references)
    # constant predictions have no correlation: scipy says NaN, which sorts anywhere and breaks the median and
    # the learning-rate choice; score it 0, as sklearn's Matthews coefficient does for a constant predictor
    return {
        f"{metric_name}{SPLIT_SUFFIX.get(split, '')}": 0.0 if np.isnan(v) else float(v)
        for metric_name, v in scores.items()
    }


def evaluation_metrics(name: str):
    """The Trainer's compute_metrics during training: the task's metrics on its (first) dev set, unsuffixed."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        values = predicted_values(TASKS[name], prediction.predictions)
        return compute_metrics(name, "validation", values, prediction.label_ids.tolist())

    return compute


# ---- one run: a learning rate and a seed -------------------------------------------------------------------------


def log_banner(name: str, args: TrainingArguments, encoded: datasets.DatasetDict, max_length: int) -> None:
    train = encoded["train"]
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * PartialState().num_processes
    epoch_steps = math.ceil(args.num_train_epochs * math.ceil(len(train) / batch))
    steps = args.max_steps if args.max_steps > 0 else epoch_steps
    mean_length = float(np.mean(train["length"]))
    dev = ", ".join(f"{split} {len(encoded[split]):,}" for split, _ in TASKS[name].dev_files)
    logger.info(
        f"{name}: {len(train):,} train rows, dev {dev}; {steps:,} steps of {batch} rows at lr {args.learning_rate:g}, "
        f"seed {args.seed}; mean length {mean_length:.1f} tokens (padding every row to {max_length} would spend "
        f"{1 - mean_length / max_length:.0%} of the compute on padding)",
        main_process_only=True,
    )


def glue_run(config: GlueConfig, name: str, encoded: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase):
    """The sweep's `train_and_predict` for one task: train, then predict every dev and test split in row order."""
    task = TASKS[name]
    (dev, _), *_ = task.dev_files

    def train_and_predict(args: TrainingArguments, resume: str | None):
        log_banner(name, args, encoded, config.task.max_seq_length)
        collator = ModelInputCollator(tokenizer)
        trainer = Trainer(
            model=load_classifier(config.model, task, args.seed),
            args=args,
            train_dataset=encoded["train"],
            eval_dataset=encoded[dev],
            compute_metrics=evaluation_metrics(name),
            data_collator=collator,
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        predictor = prediction_trainer(trainer.model, args, collator, tokenizer)
        splits = [s for s, _ in task.dev_files] + [s for s, _, _ in task.test_files if s in encoded]
        predictions = {split: predict(predictor, encoded[split], task) for split in splits}
        metrics: dict[str, float] = {}
        for split, _ in task.dev_files:
            metrics.update(compute_metrics(name, split, predictions[split], encoded[split]["label"]))
        return trainer, metrics, {split: values.tolist() for split, values in predictions.items()}

    return train_and_predict


# ---- tasks and entry points --------------------------------------------------------------------------------------


def run_task(config: GlueConfig, name: str, tokenizer: PreTrainedTokenizerBase) -> TaskResult:
    """Every learning rate and seed of one task; keeps the median seed's model of the best learning rate."""
    rates, seeds = runs_wanted(config)
    task_dir = Path(config.training.output_dir) / name
    # runs are ranked as the leaderboard scores a task: the mean of its metrics
    sweep = Sweep(name, task_dir, config.training, rates, seeds, TASKS[name].main_metric, score=mean_score)
    finished = sweep.finished()
    if finished:
        return finished
    state = PartialState()
    with state.main_process_first():
        encoded = tokenize(load_task_data(config.task, name), tokenizer, config.task.max_seq_length)
    result = sweep.run_all(glue_run(config, name, encoded, tokenizer))
    if state.is_main_process:
        write_task_outputs(config, sweep, encoded, result)
    state.wait_for_everyone()
    return result


def run_glue(config: GlueConfig) -> dict[str, TaskResult]:
    """Fine-tune and evaluate the requested tasks; writes every output; returns each task's result."""
    state = PartialState(cpu=config.training.use_cpu)  # as TrainingArguments will set it up
    check_settings(config)
    names = tasks_to_run(config.task)
    tokenizer = load_checked_tokenizer(config.model, config.task.max_seq_length)
    results = {name: run_task(config, name, tokenizer) for name in names}
    if len(names) > 1 and state.is_main_process:
        write_glue_results(Path(config.training.output_dir), results)
    return results


def majority_baseline(config: GlueConfig, task: str) -> dict[str, float]:
    """The dev metrics of always predicting the most frequent training label (STS-B: the mean score, whose
    correlation with anything is 0)."""
    if task not in TASKS:
        raise UsageError(f"majority_baseline takes one task of {', '.join(TASKS)}, not '{task}'")
    spec = TASKS[task]
    data = load_task_data(config.task, task)
    labels = np.asarray(data["train"]["label"])
    constant = labels.mean() if spec.is_regression else np.bincount(labels, minlength=spec.num_labels).argmax()
    metrics: dict[str, float] = {}
    for split, _ in spec.dev_files:
        references = data[split]["label"]
        metrics.update(compute_metrics(task, split, np.full(len(references), constant), references))
    return metrics
