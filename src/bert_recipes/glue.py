"""Fine-tune and evaluate a BERT checkpoint on the nine GLUE tasks with transformers' Trainer.

Data comes from the Hub (`nyu-mll/glue`), from the original GLUE file layout (`--data_dir`), or from custom
csv/tsv/json files. Every source is turned into the same columns: text_a, text_b (pairs), label, idx.
"""

from __future__ import annotations

import csv
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
from accelerate.logging import get_logger
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from bert_recipes.errors import UsageError
from bert_recipes.metrics import GLUE_METRIC

logger = get_logger(__name__)
csv.field_size_limit(2**30)


@dataclass(frozen=True)
class Task:
    folder: str  # the task's folder in the GLUE release
    columns: tuple[str, str | None]  # text columns in the GLUE tsv files (CoLA: column positions)
    hub_columns: tuple[str, str | None]
    label_column: str | int
    labels: tuple[str, ...]  # label names in Hub id order; () for regression
    dev_files: tuple[str, ...] = ("dev.tsv",)
    test_files: tuple[str, ...] = ("test.tsv",)
    submission: tuple[str, ...] = ()
    header: bool = True
    index_column: str = "index"

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return ("validation_matched", "validation_mismatched") if len(self.dev_files) == 2 else ("validation",)


NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    "cola": Task("CoLA", (3, None), ("sentence", None), 1, ("0", "1"), submission=("CoLA.tsv",), header=False),
    "sst2": Task("SST-2", ("sentence", None), ("sentence", None), "label", ("0", "1"), submission=("SST-2.tsv",)),
    "mrpc": Task(
        "MRPC", ("#1 String", "#2 String"), ("sentence1", "sentence2"), "Quality", ("0", "1"), submission=("MRPC.tsv",)
    ),
    "stsb": Task(
        "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", (), submission=("STS-B.tsv",)
    ),
    "qqp": Task(
        "QQP",
        ("question1", "question2"),
        ("question1", "question2"),
        "is_duplicate",
        ("0", "1"),
        submission=("QQP.tsv",),
        index_column="id",
    ),
    "mnli": Task(
        "MNLI",
        ("sentence1", "sentence2"),
        ("premise", "hypothesis"),
        "gold_label",
        ("entailment", "neutral", "contradiction"),
        dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
        test_files=("test_matched.tsv", "test_mismatched.tsv"),
        submission=("MNLI-m.tsv", "MNLI-mm.tsv"),
    ),
    "qnli": Task("QNLI", ("question", "sentence"), ("question", "sentence"), "label", NLI, submission=("QNLI.tsv",)),
    "rte": Task("RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", NLI, submission=("RTE.tsv",)),
    "wnli": Task(
        "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", ("0", "1"), submission=("WNLI.tsv",)
    ),
}
# label names the leaderboard expects in submission files (the others take the label id)
NAMED_LABELS = {"mnli", "qnli", "rte"}


@dataclass
class GlueConfig:
    model_name_or_path: str = field(default="runs/demo/bert", metadata={"help": "Checkpoint dir or Hub id."})
    task_name: str = field(default="sst2", metadata={"help": f"One of {', '.join(TASKS)}, or 'all'."})
    data_dir: str | None = field(default=None, metadata={"help": "GLUE release layout (DIR/SST-2/train.tsv ...)."})
    train_file: str | None = field(
        default=None, metadata={"help": "Custom train csv/tsv/json (text_a, text_b, label)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Custom validation file."})
    test_file: str | None = field(default=None, metadata={"help": "Custom test file."})
    output_dir: str = field(default="runs/glue", metadata={"help": "Where results and predictions go."})
    max_seq_length: int = field(default=128, metadata={"help": "Longest tokenized input."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch per process."})
    learning_rate: float = field(default=2.0e-5, metadata={"help": "Peak learning rate."})
    learning_rates: str | None = field(
        default=None, metadata={"help": "Comma list (2e-5,3e-5,5e-5): train with each, keep the best on dev."}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warmup as a fraction of training."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=42, metadata={"help": "Seed for head initialisation and data order."})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (GPUs from Ampere on)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev rows."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow code from the checkpoint's repo."})
    report_to: str = field(default="none", metadata={"help": "Trainer integrations: none, tensorboard, wandb."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N steps."})


# ---- reading the GLUE release layout ---------------------------------------------------------------------------


def read_tsv(path: Path, header: bool) -> tuple[list[str] | None, list[list[str]]]:
    if not path.is_file():
        raise UsageError(f"GLUE file '{path}' is missing: put the task's files in the GLUE layout under --data_dir")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    names = rows.pop(0) if header and rows else None
    return names, rows


def column_index(names: list[str] | None, column: str | int, path: Path) -> int:
    if isinstance(column, int):
        return column
    if names is None or column not in names:
        raise UsageError(f"'{path}' has no column '{column}' (columns: {names}): use the original GLUE files")
    return names.index(column)


def tsv_split(task: Task, path: Path, with_labels: bool) -> datasets.Dataset:
    # every test file has a header, even CoLA's, whose train and dev files have none
    names, rows = read_tsv(path, task.header or not with_labels)
    text_cols = [c for c in task.columns if c is not None]
    if not task.header and not with_labels:
        text_cols = ["sentence"]
    indices = [column_index(names, c, path) for c in text_cols]
    label_at = column_index(names, task.label_column, path) if with_labels else None
    id_at = column_index(names, task.index_column, path) if not with_labels and names else None
    width = max([*indices, label_at or 0, id_at or 0]) + 1
    out: dict[str, list] = {"text_a": [], "text_b": [], "label": [], "idx": []}
    for line, row in enumerate(rows, start=2 if names else 1):
        if len(row) < width:
            raise UsageError(
                f"'{path}' line {line} has {len(row)} columns, expected at least {width}: fix or remove it"
            )
        out["text_a"].append(row[indices[0]])
        out["text_b"].append(row[indices[1]] if len(indices) > 1 else None)
        out["label"].append(parse_label(task, row[label_at], path, line) if label_at is not None else -1)
        out["idx"].append(int(row[id_at]) if id_at is not None else len(out["idx"]))
    return datasets.Dataset.from_dict(out, features=split_features(task))


def parse_label(task: Task, value: str, path: Path, line: int) -> float | int:
    if not task.labels:
        return float(value)
    if value not in task.labels:
        raise UsageError(f"'{path}' line {line}: label '{value}' is not one of {', '.join(task.labels)}")
    return task.labels.index(value)


def split_features(task: Task) -> datasets.Features:
    label = datasets.Value("float32") if not task.labels else datasets.Value("int64")
    return datasets.Features(
        {
            "text_a": datasets.Value("string"),
            "text_b": datasets.Value("string"),
            "label": label,
            "idx": datasets.Value("int64"),
        }
    )


def load_glue_dir(task_name: str, data_dir: Path) -> datasets.DatasetDict:
    task = TASKS[task_name]
    folder = data_dir / task.folder
    splits = {"train": tsv_split(task, folder / "train.tsv", with_labels=True)}
    for split, name in zip(task.eval_splits, task.dev_files, strict=True):
        splits[split] = tsv_split(task, folder / name, with_labels=True)
    for split, name in zip(test_split_names(task), task.test_files, strict=True):
        if (folder / name).is_file():
            splits[split] = tsv_split(task, folder / name, with_labels=False)
    return datasets.DatasetDict(splits)


def test_split_names(task: Task) -> tuple[str, ...]:
    return tuple(s.replace("validation", "test") for s in task.eval_splits)


def load_hub(task_name: str) -> datasets.DatasetDict:
    task = TASKS[task_name]
    raw = datasets.load_dataset("nyu-mll/glue", task_name)
    a, b = task.hub_columns
    return datasets.DatasetDict(
        {
            split: data.map(
                lambda row: {"text_a": row[a], "text_b": row[b] if b else None},
                remove_columns=[c for c in data.column_names if c not in ("label", "idx")],
                features=split_features(task),
            )
            for split, data in raw.items()
        }
    )


def load_custom(config: GlueConfig, task_name: str) -> datasets.DatasetDict:
    files = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}
    files = {k: v for k, v in files.items() if v}
    suffix = Path(files["train"]).suffix.lstrip(".")
    kind = {"tsv": "csv", "csv": "csv", "json": "json", "jsonl": "json"}.get(suffix)
    if kind is None:
        raise UsageError(f"--train_file '{files['train']}' must be .csv, .tsv, .json or .jsonl")
    extra = {"delimiter": "\t"} if suffix == "tsv" else {}
    raw = datasets.load_dataset(kind, data_files=files, **extra)
    missing = {"text_a", "label"} - set(raw["train"].column_names)
    if missing:
        raise UsageError(
            f"--train_file '{files['train']}' lacks column(s) {sorted(missing)}: give text_a[, text_b], label"
        )
    return raw


def load_task_data(config: GlueConfig, task_name: str) -> datasets.DatasetDict:
    if config.train_file:
        return load_custom(config, task_name)
    if config.data_dir:
        return load_glue_dir(task_name, Path(config.data_dir))
    return load_hub(task_name)


# ---- training and evaluation -----------------------------------------------------------------------------------


def check_task_name(name: str) -> list[str]:
    if name == "all":
        return list(TASKS)
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"unknown --task_name '{name}'{hint}: use one of {', '.join(TASKS)} or all")
    return [name]


def load_model_and_tokenizer(config: GlueConfig, task: Task):
    source, remote = config.model_name_or_path, config.trust_remote_code
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
        model_config = AutoConfig.from_pretrained(source, num_labels=task.num_labels, trust_remote_code=remote)
    except OSError as err:
        raise UsageError(f"--model_name_or_path '{source}' cannot be loaded: {str(err)[:200]}") from None
    if model_config.vocab_size < len(tokenizer):
        raise UsageError(
            f"checkpoint '{source}' has vocab_size {model_config.vocab_size} but its tokenizer has "
            f"{len(tokenizer)} tokens: they do not belong together"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source, config=model_config, trust_remote_code=remote
        )
    except (OSError, RuntimeError) as err:
        raise UsageError(f"checkpoint '{source}' cannot be loaded: {str(err)[:200]}") from None
    if task.labels:
        model.config.id2label = dict(enumerate(task.labels))
        model.config.label2id = {name: i for i, name in enumerate(task.labels)}
    return model, tokenizer


def tokenize(data: datasets.DatasetDict, tokenizer, max_length: int) -> datasets.DatasetDict:
    def encode(batch):
        pairs = batch["text_b"] if any(b is not None for b in batch["text_b"]) else None
        enc = tokenizer(batch["text_a"], pairs, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    return data.map(encode, batched=True, remove_columns=["text_a", "text_b"], desc="tokenizing")


def training_arguments(config: GlueConfig, output_dir: Path, learning_rate: float) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        learning_rate=learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        seed=config.seed,
        bf16=config.bf16,
        report_to=config.report_to,
        logging_steps=config.logging_steps,
        # batches of similar lengths, padded to the longest in the batch: almost no compute spent on padding
        train_sampling_strategy="group_by_length",
        eval_strategy="no",
        save_strategy="no",
        disable_tqdm=False,
    )


def predictions_of(trainer: Trainer, split: datasets.Dataset, task: Task) -> np.ndarray:
    logits = trainer.predict(split.remove_columns(["label"])).predictions
    return np.squeeze(logits, -1) if not task.labels else np.argmax(logits, axis=-1)


def compute_metrics(task_name: str, split: str, predictions: np.ndarray, references: list) -> dict[str, float]:
    metric = evaluate.load(GLUE_METRIC, task_name)
    scores = metric.compute(predictions=predictions, references=references)
    suffix = {"validation_matched": "_m", "validation_mismatched": "_mm"}.get(split, "")
    return {f"{name}{suffix}": float(value) for name, value in scores.items()}


def finetune_once(config: GlueConfig, task_name: str, data, learning_rate: float, output_dir: Path):
    task = TASKS[task_name]
    model, tokenizer = load_model_and_tokenizer(config, task)
    encoded = tokenize(data, tokenizer, config.max_seq_length)
    train = encoded["train"]
    if config.max_train_samples:
        train = train.select(range(min(config.max_train_samples, len(train))))
    trainer = Trainer(
        model=model,
        args=training_arguments(config, output_dir, learning_rate),
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8),
        processing_class=tokenizer,
    )
    trainer.train()
    metrics: dict[str, float] = {}
    for split in task.eval_splits:
        dev = encoded[split]
        if config.max_eval_samples:
            dev = dev.select(range(min(config.max_eval_samples, len(dev))))
        metrics.update(compute_metrics(task_name, split, predictions_of(trainer, dev, task), dev["label"]))
    return trainer, encoded, metrics


def main_score(metrics: dict[str, float]) -> float:
    return float(np.mean(list(metrics.values())))


def run_task(config: GlueConfig, task_name: str) -> dict[str, float]:
    task = TASKS[task_name]
    data = load_task_data(config, task_name)
    output_dir = Path(config.output_dir) / task_name
    rates = [float(r) for r in config.learning_rates.split(",")] if config.learning_rates else [config.learning_rate]
    best = None
    for rate in rates:
        trainer, encoded, metrics = finetune_once(config, task_name, data, rate, output_dir)
        logger.info(f"{task_name} lr {rate:g}: {metrics}")
        if best is None or main_score(metrics) > main_score(best[2]):
            best = (trainer, encoded, {**metrics, "learning_rate": rate})
    trainer, encoded, metrics = best
    trainer.save_model(str(output_dir))
    write_outputs(trainer, encoded, task_name, task, metrics, output_dir)
    return metrics


def write_outputs(trainer, encoded, task_name: str, task: Task, metrics: dict, output_dir: Path) -> None:
    (output_dir / "eval_results.json").write_text(json.dumps(metrics, indent=2))
    for split in task.eval_splits:
        write_predictions(
            output_dir / f"dev_predictions_{split}.tsv",
            encoded[split],
            predictions_of(trainer, encoded[split], task),
            task_name,
            task,
        )
    for split, name in zip(test_split_names(task), task.submission, strict=True):
        if split in encoded:
            predictions = predictions_of(trainer, encoded[split], task)
            write_predictions(output_dir / "submission" / name, encoded[split], predictions, task_name, task)


def write_predictions(path: Path, split: datasets.Dataset, predictions: np.ndarray, task_name: str, task: Task) -> None:
    """The leaderboard's format: `index<TAB>prediction`, label names for MNLI/QNLI/RTE, ids otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction"]
    for idx, value in zip(split["idx"], predictions, strict=True):
        if not task.labels:
            shown = f"{min(5.0, max(0.0, float(value))):.3f}"
        elif task_name in NAMED_LABELS:
            shown = task.labels[int(value)]
        else:
            shown = str(int(value))
        lines.append(f"{idx}\t{shown}")
    path.write_text("\n".join(lines) + "\n")


def majority_baseline(config: GlueConfig, task: str) -> dict[str, float]:
    """The dev metrics of always predicting the most frequent training label (mean label for STS-B)."""
    data = load_task_data(config, task)
    labels = np.array(data["train"]["label"])
    guess = labels.mean() if not TASKS[task].labels else np.bincount(labels).argmax()
    metrics: dict[str, float] = {}
    for split in TASKS[task].eval_splits:
        references = data[split]["label"]
        predictions = np.full(len(references), guess)
        if not TASKS[task].labels:
            predictions = predictions + np.linspace(
                -1e-6, 1e-6, len(references)
            )  # correlation of a constant is undefined
        metrics.update(compute_metrics(task, split, predictions, references))
    return metrics


def glue_score(results: dict[str, dict[str, float]]) -> float:
    """The leaderboard's average: each task's metrics averaged, MNLI-m and MNLI-mm counted as separate tasks."""
    scores = []
    for task, metrics in results.items():
        values = {k: v for k, v in metrics.items() if k != "learning_rate"}
        if task == "mnli":
            scores += [v for k, v in values.items() if k.startswith("accuracy")]
        else:
            scores.append(float(np.mean(list(values.values()))))
    return 100 * float(np.mean(scores))


def results_markdown(results: dict[str, dict[str, float]]) -> str:
    lines = ["| task | metrics |", "|---|---|"]
    for task, metrics in results.items():
        shown = ", ".join(f"{k} {100 * v:.2f}" for k, v in metrics.items() if k != "learning_rate")
        lines.append(f"| {task} | {shown} |")
    lines.append(f"| **GLUE score** | {glue_score(results):.2f} |")
    return "\n".join(lines) + "\n"


def available_tasks(config: GlueConfig, names: list[str]) -> list[str]:
    """With --data_dir and `all`, tasks whose files are absent are skipped with a warning."""
    if len(names) == 1 or not config.data_dir:
        return names
    present = [n for n in names if (Path(config.data_dir) / TASKS[n].folder / "train.tsv").is_file()]
    for missing in sorted(set(names) - set(present)):
        logger.warning(f"skipping {missing}: no {TASKS[missing].folder}/train.tsv under {config.data_dir}")
    return present


def run_glue(config: GlueConfig) -> dict[str, dict[str, float]]:
    names = available_tasks(config, check_task_name(config.task_name))
    results = {name: run_task(config, name) for name in names}
    if config.task_name == "all":
        out = Path(config.output_dir)
        (out / "glue_results.json").write_text(
            json.dumps({"tasks": results, "glue_score": glue_score(results)}, indent=2)
        )
        (out / "glue_results.md").write_text(results_markdown(results))
    return results
