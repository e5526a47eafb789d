"""Fine-tuning on GLUE with transformers' Trainer: the checkpoint under a task head, one run per learning rate and
seed, evaluation and checkpoints as TrainingArguments ask, a killed run resumed, and the median seed's model kept.

Each run trains in OUTPUT/TASK/runs/lr<rate>-seed<seed>/; run_results.json there marks it finished.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from accelerate import PartialState
from accelerate.logging import get_logger
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

from bert_recipes.dropout import use_cpu_dropout
from bert_recipes.errors import UsageError
from bert_recipes.glue.config import (
    MAIN_METRIC,
    CheckpointConfig,
    GlueConfig,
    GlueTrainingArguments,
    check_settings,
    learning_rates,
    seeds,
)
from bert_recipes.glue.data import ModelInputCollator, load_task_data, tasks_to_run, tokenize
from bert_recipes.glue.report import (
    RUN_RESULTS,
    TASK_RUNS,
    RunRecord,
    TaskResult,
    format_metrics,
    read_run,
    read_task_result,
    save_run,
    summarize_runs,
    write_glue_results,
    write_task_outputs,
)
from bert_recipes.glue.tasks import SPLIT_SUFFIX, TASKS, Task
from bert_recipes.metrics import GLUE_METRIC

logger = get_logger(__name__)
CHECKPOINT_STATE = "trainer_state.json"  # the last file the Trainer writes into a checkpoint


# ---- the checkpoint ----------------------------------------------------------------------------------------------


def load_checked_tokenizer(config: GlueConfig) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, checked against its model config before any weights are read."""
    source, remote = config.model.model_name_or_path, config.model.trust_remote_code
    if not Path(source).exists() and source.count("/") > 1:
        raise UsageError(f"--model_name_or_path '{source}' is neither a directory nor a Hub id: check the path")
    try:
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
    except (OSError, ValueError) as err:
        raise UsageError(
            f"--model_name_or_path '{source}' could not be loaded ({type(err).__name__}: {str(err)[:200]}): "
            "give a directory with config.json, the weights and the tokenizer files, or a Hub id"
        ) from None
    if model_config.vocab_size < len(tokenizer):
        raise UsageError(
            f"checkpoint '{source}' has vocab_size {model_config.vocab_size} but its tokenizer has {len(tokenizer)} "
            "tokens: use the tokenizer the model was pretrained with"
        )
    positions = getattr(model_config, "max_position_embeddings", None)
    length = config.task.max_seq_length
    if positions is not None and length > positions:
        raise UsageError(f"--max_seq_length {length} exceeds the checkpoint's {positions} positions: lower it")
    return tokenizer


def load_model(config: CheckpointConfig, task: Task, seed: int) -> PreTrainedModel:
    """The checkpoint under a fresh classification (or, for STS-B, regression) head drawn from `seed`."""
    head = {"num_labels": task.num_labels}
    head["problem_type"] = "regression" if task.is_regression else "single_label_classification"
    if task.labels:
        head["id2label"] = dict(enumerate(task.label_names))
        head["label2id"] = {name: i for i, name in enumerate(task.label_names)}
    set_seed(seed)  # before the head is drawn: the Trainer only seeds after the model exists
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            config.model_name_or_path,
            trust_remote_code=config.trust_remote_code,
            # a checkpoint fine-tuned on another task (MNLI before RTE) brings a head of another size
            ignore_mismatched_sizes=True,
            **head,
        )
    except (OSError, RuntimeError, ValueError) as err:
        raise UsageError(
            f"weights of '{config.model_name_or_path}' could not be loaded ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    if config.fast_cpu_dropout:
        use_cpu_dropout(model)
    return head_in_fp32(model)


def head_in_fp32(model: PreTrainedModel) -> PreTrainedModel:
    """Runs the task head (`model.classifier`) outside autocast, in its weights' precision. Under bf16 autocast an
    STS-B score near 4 comes back in steps of 1/32, which ties Spearman ranks; the head is a sliver of the compute.
    (Weights cast to bf16, as DeepSpeed does, keep running in bf16.)"""
    head = getattr(model, "classifier", None)
    if not isinstance(head, torch.nn.Module):
        return model
    mixed_forward = head.forward

    def forward(hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weights = next(head.parameters()).dtype
        with torch.autocast(hidden.device.type, enabled=False):
            return mixed_forward(hidden.to(weights), *args, **kwargs)

    # an instance attribute, as Accelerate wraps forward: parameter names and saved files stay the same
    head.forward = forward
    return model


# ---- prediction and metrics --------------------------------------------------------------------------------------


def predicted_values(task: Task, outputs: np.ndarray) -> np.ndarray:
    """Class ids, or scores for STS-B, from the model's logits."""
    return np.squeeze(outputs, -1) if task.is_regression else np.argmax(outputs, axis=-1)


def prediction_trainer(model: PreTrainedModel, args: GlueTrainingArguments, tokenizer) -> Trainer:
    """A Trainer that predicts in dataset order: length grouping would shuffle the rows."""
    sequential = dataclasses.replace(
        args, train_sampling_strategy="sequential", eval_strategy="no", load_best_model_at_end=False
    )
    return Trainer(
        model=model, args=sequential, data_collator=ModelInputCollator(tokenizer), processing_class=tokenizer
    )


def predict(predictor: Trainer, split: datasets.Dataset, task: Task) -> np.ndarray:
    """Class ids (scores for STS-B) in the split's row order, computed over batches sorted by length."""
    order = np.argsort(np.asarray(split["length"]), kind="stable")
    # without labels: test sets have none, and the metrics come from the metric module
    values = predicted_values(task, predictor.predict(split.select(order).remove_columns("label")).predictions)
    restored = np.empty_like(values)
    restored[order] = values
    return restored


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


def run_folder(config: GlueConfig, name: str, learning_rate: float, seed: int) -> Path:
    return Path(config.training.output_dir) / name / "runs" / f"lr{learning_rate:g}-seed{seed}"


def resuming(config: GlueConfig) -> bool:
    return (config.training.resume_from_checkpoint or "false").lower() != "false"


def newest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing: a kill during a save leaves one without its state."""
    finished = [path for path in folder.glob("checkpoint-*") if (path / CHECKPOINT_STATE).is_file()]
    return max(finished, key=lambda path: int(path.name.rsplit("-", 1)[1]), default=None)


def resume_point(config: GlueConfig, folder: Path) -> str | None:
    """The checkpoint a run continues from: `true` takes the run's newest, a path (one run only) itself."""
    if not resuming(config):
        return None
    wanted = config.training.resume_from_checkpoint
    if wanted.lower() != "true":
        return wanted
    newest = newest_checkpoint(folder)
    return str(newest) if newest else None


def run_arguments(config: GlueConfig, name: str, learning_rate: float, seed: int) -> GlueTrainingArguments:
    metric = config.training.metric_for_best_model
    return dataclasses.replace(
        config.training,
        output_dir=str(run_folder(config, name, learning_rate, seed)),
        learning_rate=learning_rate,
        seed=seed,
        metric_for_best_model=TASKS[name].main_metric if metric == MAIN_METRIC else metric,
        # the recipe pushes the kept model once, after every run: the Trainer would push each run
        push_to_hub=False,
    )


def log_banner(name: str, args: GlueTrainingArguments, encoded: datasets.DatasetDict, max_length: int) -> None:
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


def finetune_run(
    config: GlueConfig, name: str, encoded: datasets.DatasetDict, tokenizer, learning_rate: float, seed: int
) -> RunRecord:
    """Train, predict and save one run; when resuming, a finished run is read back and a killed one continues."""
    folder = run_folder(config, name, learning_rate, seed)
    if resuming(config) and (folder / RUN_RESULTS).is_file():
        logger.info(f"{name} lr {learning_rate:g} seed {seed}: finished before, not redone", main_process_only=True)
        return read_run(folder)
    state, task = PartialState(), TASKS[name]
    resume = resume_point(config, folder)
    if resume is None and state.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)  # a fresh run: an earlier run's checkpoints must not mix in
    state.wait_for_everyone()
    args = run_arguments(config, name, learning_rate, seed)
    log_banner(name, args, encoded, config.task.max_seq_length)
    (dev, _), *_ = task.dev_files
    trainer = Trainer(
        model=load_model(config.model, task, seed),
        args=args,
        train_dataset=encoded["train"],
        eval_dataset=encoded[dev],
        compute_metrics=evaluation_metrics(name),
        data_collator=ModelInputCollator(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    predictor = prediction_trainer(trainer.model, args, tokenizer)
    splits = [s for s, _ in task.dev_files] + [s for s, _, _ in task.test_files if s in encoded]
    predictions = {split: predict(predictor, encoded[split], task) for split in splits}
    metrics: dict[str, float] = {}
    for split, _ in task.dev_files:
        metrics.update(compute_metrics(name, split, predictions[split], encoded[split]["label"]))
    logger.info(f"{name} lr {learning_rate:g} seed {seed}: {format_metrics(metrics)}", main_process_only=True)
    record = RunRecord(learning_rate, seed, metrics, Path(resume).name if resume else None)
    trainer.save_model(str(folder))
    trainer.save_state()  # trainer_state.json: the evaluations during training and the best checkpoint
    if state.is_main_process:
        save_run(folder, record, predictions)
    state.wait_for_everyone()
    return record


# ---- tasks and entry points --------------------------------------------------------------------------------------


def run_task(config: GlueConfig, name: str, tokenizer: PreTrainedTokenizerBase) -> TaskResult:
    """Every learning rate and seed of one task; keeps the median seed's model of the best learning rate."""
    task_dir = Path(config.training.output_dir) / name
    wanted = [(rate, seed) for rate in learning_rates(config) for seed in seeds(config)]
    if resuming(config) and (task_dir / TASK_RUNS).is_file():
        finished = read_task_result(task_dir)
        # the same runs only: with other seeds or rates, the finished runs among them are read back one by one
        if sorted((run.learning_rate, run.seed) for run in finished.runs) == sorted(wanted):
            logger.info(f"{name}: finished before, not redone", main_process_only=True)
            return finished
    state = PartialState()
    with state.main_process_first():
        encoded = tokenize(load_task_data(config.task, name), tokenizer, config.task.max_seq_length)
    records = [finetune_run(config, name, encoded, tokenizer, rate, seed) for rate, seed in wanted]
    result = summarize_runs(records)
    if state.is_main_process:
        folders = [run_folder(config, name, r.learning_rate, r.seed) for r in records]
        kept = run_folder(config, name, result.learning_rate, result.kept_seed)
        write_task_outputs(config, name, encoded, result, kept, folders)
    state.wait_for_everyone()
    return result


def run_glue(config: GlueConfig) -> dict[str, TaskResult]:
    """Fine-tune and evaluate the requested tasks; writes every output; returns each task's result."""
    state = PartialState(cpu=config.training.use_cpu)  # as TrainingArguments will set it up
    check_settings(config)
    names = tasks_to_run(config.task)
    tokenizer = load_checked_tokenizer(config)
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
