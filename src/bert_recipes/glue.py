"""Fine-tune and evaluate a BERT checkpoint on the nine GLUE tasks with transformers' Trainer.

Every data source (the Hub's `nyu-mll/glue`, the original GLUE file layout under --data_dir, custom csv/tsv/json
files) becomes the same columns: text_a, text_b (None for single sentences), label (-1 on test sets), idx.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
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
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)

from bert_recipes.config import save_config
from bert_recipes.errors import UsageError
from bert_recipes.metrics import GLUE_METRIC

logger = get_logger(__name__)
csv.field_size_limit(2**30)

HUB_DATASET = "nyu-mll/glue"
CUSTOM_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


@dataclass(frozen=True)
class Task:
    folder: str  # the task's folder in the GLUE release, also its name on the leaderboard
    text_columns: tuple[str, ...]  # in the GLUE tsv files
    hub_columns: tuple[str, ...]  # in the Hub dataset
    label_column: str  # in the GLUE train/dev tsv files
    labels: tuple[str, ...]  # labels as the GLUE files write them, in Hub id order; () for regression
    label_names: tuple[str, ...]  # the Hub's names for the same ids, shown in the model's config
    metrics: tuple[str, ...]
    dev_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)  # (split, file)
    test_files: tuple[tuple[str, str, str], ...] = ()  # (split, file, leaderboard submission file)
    headerless_columns: tuple[str, ...] = ()  # column names of train/dev files written without a header
    test_id_column: str = "index"

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    @property
    def is_regression(self) -> bool:
        return not self.labels


def _test(folder: str) -> tuple[tuple[str, str, str], ...]:
    return (("test", "test.tsv", f"{folder}.tsv"),)


ACCURACY = ("accuracy",)
ACCURACY_F1 = ("accuracy", "f1")
BINARY = ("0", "1")
NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    "cola": Task(
        "CoLA", ("sentence",), ("sentence",), "label", BINARY, ("unacceptable", "acceptable"),
        ("matthews_correlation",), test_files=_test("CoLA"),
        headerless_columns=("source", "label", "author_label", "sentence"),
    ),
    "sst2": Task(
        "SST-2", ("sentence",), ("sentence",), "label", BINARY, ("negative", "positive"), ACCURACY,
        test_files=_test("SST-2"),
    ),
    "mrpc": Task(
        "MRPC", ("#1 String", "#2 String"), ("sentence1", "sentence2"), "Quality", BINARY,
        ("not_equivalent", "equivalent"), ACCURACY_F1, test_files=_test("MRPC"),
    ),
    "stsb": Task(
        "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", (), (), ("pearson", "spearmanr"),
        test_files=_test("STS-B"),
    ),
    "qqp": Task(
        "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate", BINARY,
        ("not_duplicate", "duplicate"), ACCURACY_F1, test_files=_test("QQP"), test_id_column="id",
    ),
    "mnli": Task(
        "MNLI", ("sentence1", "sentence2"), ("premise", "hypothesis"), "gold_label",
        ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"), ACCURACY,
        dev_files=(("validation_matched", "dev_matched.tsv"), ("validation_mismatched", "dev_mismatched.tsv")),
        # the diagnostic set AX is predicted by the MNLI model; its file sits in the release's diagnostic/ folder
        test_files=(
            ("test_matched", "test_matched.tsv", "MNLI-m.tsv"),
            ("test_mismatched", "test_mismatched.tsv", "MNLI-mm.tsv"),
            ("ax", "../diagnostic/diagnostic.tsv", "AX.tsv"),
        ),
    ),
    "qnli": Task(
        "QNLI", ("question", "sentence"), ("question", "sentence"), "label", NLI, NLI, ACCURACY,
        test_files=_test("QNLI"),
    ),
    "rte": Task(
        "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", NLI, NLI, ACCURACY,
        test_files=_test("RTE"),
    ),
    "wnli": Task(
        "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", BINARY,
        ("not_entailment", "entailment"), ACCURACY, test_files=_test("WNLI"),
    ),
}  # fmt: skip
# MNLI's two dev sets report their metrics as accuracy_m and accuracy_mm, as the leaderboard's MNLI-m and MNLI-mm
SPLIT_SUFFIX = {"validation_matched": "_m", "validation_mismatched": "_mm"}


@dataclass
class GlueConfig:
    model_name_or_path: str = field(
        default="runs/demo/bert", metadata={"help": "Pretraining output dir, a checkpoint-STEP dir or a Hub id."}
    )
    task_name: str = field(default="sst2", metadata={"help": f"One of {', '.join(TASKS)}, or 'all'."})
    data_dir: str | None = field(
        default=None, metadata={"help": "Original GLUE layout (DIR/SST-2/train.tsv ...); default: the Hub's GLUE."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Custom csv/tsv/json training file: text_a[, text_b], label columns."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Custom dev file (with --train_file)."})
    test_file: str | None = field(default=None, metadata={"help": "Custom test file, labels not needed."})
    output_dir: str = field(default="runs/glue", metadata={"help": "One folder per task, plus submission/."})
    max_seq_length: int = field(default=128, metadata={"help": "Longest tokenized input; longer pairs are cut."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Prediction batch per process."})
    learning_rate: float = field(default=2.0e-5, metadata={"help": "Peak learning rate."})
    learning_rates: str | None = field(
        default=None, metadata={"help": "Comma list (2e-5,3e-5,5e-5): train with each, keep the best on dev."}
    )
    num_train_epochs: float = field(default=3.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Linear warmup, as a fraction of training steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=42, metadata={"help": "Seed for the classifier head's initialisation and data order."})
    bf16: bool = field(default=False, metadata={"help": "bf16 autocast (CPUs with bf16, GPUs from Ampere on)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows of each dev set."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with the checkpoint."})
    report_to: str = field(default="none", metadata={"help": "Trainer integrations: none, tensorboard, wandb."})
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N steps."})


# ---- checking the request before any heavy work ----------------------------------------------------------------


def check_task_name(name: str) -> list[str]:
    """The tasks `--task_name` asks for, in leaderboard order."""
    if name == "all":
        return list(TASKS)
    if name not in TASKS:
        close = difflib.get_close_matches(name.lower(), [*TASKS, "all"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"unknown --task_name '{name}'{hint}: use one of {', '.join(TASKS)}, or all")
    return [name]


def parse_learning_rates(config: GlueConfig) -> list[float]:
    if not config.learning_rates:
        return [config.learning_rate]
    try:
        rates = [float(rate) for rate in config.learning_rates.split(",")]
    except ValueError:
        raise UsageError(
            f"--learning_rates '{config.learning_rates}' is not a comma list of numbers: write e.g. 2e-5,3e-5,5e-5"
        ) from None
    if any(rate <= 0 for rate in rates):
        raise UsageError(f"--learning_rates '{config.learning_rates}' must hold positive numbers only")
    return rates


def check_settings(config: GlueConfig) -> None:
    if not 0 <= config.warmup_ratio < 1:
        raise UsageError(f"--warmup_ratio {config.warmup_ratio} must be in [0, 1): it is a fraction of training")
    if config.max_seq_length < 8:
        raise UsageError(f"--max_seq_length {config.max_seq_length} is too short: use 128 (the BERT paper's value)")
    if config.train_file and config.data_dir:
        raise UsageError("--train_file and --data_dir both given: use the GLUE layout or custom files, not both")
    if config.train_file and config.task_name == "all":
        raise UsageError("custom --train_file data is one task: name it with --task_name (its labels and metric)")
    if bool(config.train_file) != bool(config.validation_file):
        raise UsageError("custom data needs both --train_file and --validation_file (the dev set picks the metric)")
    if config.data_dir and not Path(config.data_dir).is_dir():
        raise UsageError(f"--data_dir '{config.data_dir}' is not a directory: point it at the unpacked GLUE data")


def check_glue_files(name: str, data_dir: Path) -> None:
    """Every file the task needs exists and names the task's columns; test files are optional."""
    task = TASKS[name]
    folder = data_dir / task.folder
    needed = [(folder / "train.tsv", True), *((folder / file, True) for _, file in task.dev_files)]
    needed += [(folder / file, False) for _, file, _ in task.test_files if (folder / file).is_file()]
    for path, labelled in needed:
        header = task.headerless_columns if labelled and task.headerless_columns else read_header(path)
        for column in [*task.text_columns, task.label_column if labelled else task.test_id_column]:
            column_index(header, column, path)


def tasks_to_run(config: GlueConfig) -> list[str]:
    """The requested tasks; with `all` and --data_dir, tasks whose folder is absent are reported and skipped."""
    names = check_task_name(config.task_name)
    if config.data_dir:
        data_dir = Path(config.data_dir)
        if len(names) > 1:
            absent = [n for n in names if not (data_dir / TASKS[n].folder).is_dir()]
            for name in absent:
                logger.warning(f"skipping {name}: --data_dir '{data_dir}' has no {TASKS[name].folder}/ folder")
            names = [n for n in names if n not in absent]
            if not names:
                raise UsageError(f"--data_dir '{data_dir}' holds none of the GLUE task folders (CoLA/, SST-2/ ...)")
        for name in names:
            check_glue_files(name, data_dir)
    return names


# ---- reading the original GLUE layout --------------------------------------------------------------------------


def read_tsv(
    path: Path, names: tuple[str, ...] = (), max_rows: int | None = None
) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) rows of a GLUE tsv file; `names` for files without a header."""
    if not path.is_file():
        raise UsageError(f"GLUE file '{path}' is missing: put the task's files there as the GLUE release lays them out")
    with path.open(encoding="utf-8", newline="") as handle:
        # GLUE text holds bare quotes: a quote is a character, never a field delimiter
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        rows = [(reader.line_num, row) for row in itertools.islice(filter(None, reader), max_rows)]
    if names:
        return list(names), rows
    if not rows:
        raise UsageError(f"GLUE file '{path}' is empty: it needs a header line and rows")
    return rows[0][1], rows[1:]


def read_header(path: Path) -> list[str]:
    header, _ = read_tsv(path, max_rows=1)
    return header


def column_index(header: list[str], column: str, path: Path) -> int:
    if column not in header:
        raise UsageError(
            f"'{path}' has no column '{column}' (its columns: {', '.join(header)}): use the task's original GLUE file"
        )
    return header.index(column)


def parse_label(task: Task, value: str, where: str) -> int | float:
    """A label as the GLUE files, the Hub's names or a class id write it; a float score for STS-B."""
    try:
        if task.is_regression:
            return float(value)
        if value in task.labels:
            return task.labels.index(value)
        if value in task.label_names:
            return task.label_names.index(value)
        if 0 <= int(value) < task.num_labels:
            return int(value)
    except ValueError:
        pass
    expected = "a number" if task.is_regression else " or ".join(task.labels)
    raise UsageError(f"{where}: label '{value}' is not {expected}: fix the row or pick the right --task_name")


def split_features(task: Task) -> datasets.Features:
    return datasets.Features(
        {
            "text_a": datasets.Value("string"),
            "text_b": datasets.Value("string"),
            "label": datasets.Value("float32" if task.is_regression else "int64"),
            "idx": datasets.Value("int64"),
        }
    )


def read_glue_split(task: Task, path: Path, labelled: bool) -> datasets.Dataset:
    """One GLUE file as text_a, text_b, label (-1 when not `labelled`) and idx (the test file's ids, else the row)."""
    header, rows = read_tsv(path, task.headerless_columns if labelled else ())
    text_at = [column_index(header, column, path) for column in task.text_columns]
    label_at = column_index(header, task.label_column, path) if labelled else None
    id_at = None if labelled else column_index(header, task.test_id_column, path)
    out: dict[str, list] = {"text_a": [], "text_b": [], "label": [], "idx": []}
    for line, row in rows:
        if len(row) != len(header):
            raise UsageError(
                f"'{path}' line {line} has {len(row)} tab-separated fields, the header {len(header)}: fix or remove it"
            )
        out["text_a"].append(row[text_at[0]])
        out["text_b"].append(row[text_at[1]] if len(text_at) > 1 else None)
        out["label"].append(-1 if label_at is None else parse_label(task, row[label_at], f"'{path}' line {line}"))
        out["idx"].append(len(out["idx"]) if id_at is None else parse_id(row[id_at], path, line))
    return datasets.Dataset.from_dict(out, features=split_features(task))


def parse_id(value: str, path: Path, line: int) -> int:
    if not value.isdigit():
        raise UsageError(f"'{path}' line {line}: id '{value}' is not a whole number: use the original test file")
    return int(value)


def load_glue_dir(name: str, data_dir: str | Path) -> datasets.DatasetDict:
    task = TASKS[name]
    folder = Path(data_dir) / task.folder
    splits = {"train": read_glue_split(task, folder / "train.tsv", labelled=True)}
    for split, file in task.dev_files:
        splits[split] = read_glue_split(task, folder / file, labelled=True)
    for split, file, _ in task.test_files:
        if (folder / file).is_file():
            splits[split] = read_glue_split(task, folder / file, labelled=False)
    return datasets.DatasetDict(splits)


# ---- the Hub and custom files ----------------------------------------------------------------------------------


def load_hub(name: str) -> datasets.DatasetDict:
    task = TASKS[name]
    try:
        raw = datasets.load_dataset(HUB_DATASET, name)
        if any(split == "ax" for split, _, _ in task.test_files):
            raw["ax"] = datasets.load_dataset(HUB_DATASET, "ax", split="test")
    except OSError as err:
        raise UsageError(
            f"GLUE {name} could not be loaded from the Hub ({HUB_DATASET}: {str(err)[:160]}): "
            "offline, pass --data_dir with the GLUE files"
        ) from None
    first, second = (*task.hub_columns, None)[:2]
    return datasets.DatasetDict(
        {
            split: data.map(
                lambda row: {"text_a": row[first], "text_b": row[second] if second else None},
                remove_columns=[c for c in data.column_names if c not in ("label", "idx")],
                features=split_features(task),
            )
            for split, data in raw.items()
        }
    )


def read_custom_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line or record number, row) pairs of a csv, tsv, json-lines or json-list file."""
    if path.suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            quoting = csv.QUOTE_NONE if path.suffix == ".tsv" else csv.QUOTE_MINIMAL
            reader = csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ",", quoting=quoting)
            for row in reader:
                if None in row or None in row.values():
                    raise UsageError(f"'{path}' line {reader.line_num} has a different field count from its header")
                yield reader.line_num, row
        return
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else None
        if records is None:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise UsageError(f"'{path}' is not valid JSON (line {err.lineno}): write one object per line") from None
    yield from enumerate(records, start=1)


def read_custom_split(task: Task, path_arg: str, flag: str, labelled: bool) -> datasets.Dataset:
    """Texts from text_a[, text_b] (or the task's Hub column names), labels from `label`, ids from `idx` if any."""
    path = Path(path_arg)
    if not path.is_file() or path.suffix not in CUSTOM_SUFFIXES:
        raise UsageError(f"{flag} '{path_arg}' must be an existing {', '.join(CUSTOM_SUFFIXES)} file")
    columns = list(zip(("text_a", "text_b"), task.hub_columns, strict=False))
    out: dict[str, list] = {"text_a": [], "text_b": [], "label": [], "idx": []}
    for number, row in read_custom_rows(path):
        texts = [row.get(generic, row.get(hub)) for generic, hub in columns]
        if None in texts or (labelled and "label" not in row):
            wanted = [f"{generic} (or {hub})" for generic, hub in columns] + (["label"] if labelled else [])
            raise UsageError(f"{flag} '{path_arg}' row {number} lacks {', '.join(wanted)}: its columns are {list(row)}")
        out["text_a"].append(str(texts[0]))
        out["text_b"].append(str(texts[1]) if len(texts) > 1 else None)
        where = f"{flag} '{path_arg}' row {number}"
        out["label"].append(parse_label(task, str(row["label"]), where) if labelled else -1)
        out["idx"].append(int(row.get("idx", len(out["idx"]))))
    if not out["idx"]:
        raise UsageError(f"{flag} '{path_arg}' has no rows")
    return datasets.Dataset.from_dict(out, features=split_features(task))


def load_custom(config: GlueConfig, name: str) -> datasets.DatasetDict:
    task = TASKS[name]
    (dev_split, _), *_ = task.dev_files
    splits = {
        "train": read_custom_split(task, config.train_file, "--train_file", labelled=True),
        dev_split: read_custom_split(task, config.validation_file, "--validation_file", labelled=True),
    }
    if config.test_file:
        (test_split, _, _), *_ = task.test_files
        splits[test_split] = read_custom_split(task, config.test_file, "--test_file", labelled=False)
    return datasets.DatasetDict(splits)


def load_task_data(config: GlueConfig, name: str) -> datasets.DatasetDict:
    """The task's train, dev and (when there is one) test splits from the source the config names."""
    if config.train_file:
        data = load_custom(config, name)
    elif config.data_dir:
        data = load_glue_dir(name, config.data_dir)
    else:
        data = load_hub(name)
    if config.max_train_samples:
        data["train"] = data["train"].select(range(min(config.max_train_samples, len(data["train"]))))
    if config.max_eval_samples:
        for split, _ in TASKS[name].dev_files:
            if split in data:
                data[split] = data[split].select(range(min(config.max_eval_samples, len(data[split]))))
    return data


# ---- model, tokenizer and features ----------------------------------------------------------------------------


def load_checked_tokenizer(config: GlueConfig) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, checked against its model config before any weights are read."""
    source, remote = config.model_name_or_path, config.trust_remote_code
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
    if positions is not None and config.max_seq_length > positions:
        raise UsageError(
            f"--max_seq_length {config.max_seq_length} exceeds the checkpoint's {positions} positions: lower it"
        )
    return tokenizer


def load_model(config: GlueConfig, task: Task) -> PreTrainedModel:
    """The checkpoint under a fresh classification (or, for STS-B, regression) head seeded from the config."""
    head = {"num_labels": task.num_labels}
    head["problem_type"] = "regression" if task.is_regression else "single_label_classification"
    if task.labels:
        head["id2label"] = dict(enumerate(task.label_names))
        head["label2id"] = {name: i for i, name in enumerate(task.label_names)}
    set_seed(config.seed)  # before the head is drawn: the Trainer only seeds after the model exists
    try:
        return AutoModelForSequenceClassification.from_pretrained(
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


def tokenize(data: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.DatasetDict:
    """Token ids without padding (the collator pads each batch) plus each row's length for grouping."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch["text_b"] if batch["text_b"][0] is not None else None
        encoded = tokenizer(batch["text_a"], pairs, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return data.map(encode, batched=True, remove_columns=["text_a", "text_b"], desc="tokenizing")


class ModelInputCollator:
    """Pads a batch to its longest row (a multiple of 8), passing the model only what its forward takes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.keep = {*tokenizer.model_input_names, "label"}
        self.pad = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.pad([{k: v for k, v in row.items() if k in self.keep} for row in rows])


# ---- training and prediction -----------------------------------------------------------------------------------


def training_arguments(
    config: GlueConfig, output_dir: Path, learning_rate: float, sampling: str = "group_by_length"
) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        learning_rate=learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # transformers 5 reads a value below 1 as a fraction of all steps
        weight_decay=config.weight_decay,
        seed=config.seed,
        bf16=config.bf16,
        report_to=config.report_to,
        logging_steps=config.logging_steps,
        # rows of similar length share a batch, so dynamic padding leaves almost nothing to pad
        train_sampling_strategy=sampling,
        # keeps the `length` column for the sampler; ModelInputCollator drops it before the model
        remove_unused_columns=False,
        eval_strategy="no",
        save_strategy="no",
        # without a GPU, launched processes must be CPU ranks (gloo), or each would train alone as rank 0
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,  # the classifier uses every weight: skip DDP's extra graph walk
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def prediction_trainer(model: PreTrainedModel, config: GlueConfig, tokenizer: PreTrainedTokenizerBase) -> Trainer:
    """A Trainer that predicts in dataset order: the training one's length-grouped sampler would shuffle the rows."""
    return Trainer(
        model=model,
        args=training_arguments(config, Path(config.output_dir), config.learning_rate, sampling="sequential"),
        data_collator=ModelInputCollator(tokenizer),
        processing_class=tokenizer,
    )


def predict(predictor: Trainer, split: datasets.Dataset, task: Task) -> np.ndarray:
    """Class ids (scores for STS-B) in the split's row order, computed over batches sorted by length."""
    order = np.argsort(np.asarray(split["length"]), kind="stable")
    # without labels: test sets have none, and the metrics come from the metric module
    outputs = predictor.predict(split.select(order).remove_columns("label")).predictions
    values = np.squeeze(outputs, -1) if task.is_regression else np.argmax(outputs, axis=-1)
    restored = np.empty_like(values)
    restored[order] = values
    return restored


def compute_metrics(name: str, split: str, predictions: np.ndarray, references: list) -> dict[str, float]:
    metric = evaluate.load(GLUE_METRIC, config_name=name, keep_in_memory=True)
    scores = metric.compute(predictions=predictions, references=references)
    return {f"{metric_name}{SPLIT_SUFFIX.get(split, '')}": float(v) for metric_name, v in scores.items()}


@dataclass
class FineTuneRun:
    learning_rate: float
    metrics: dict[str, float]
    predictions: dict[str, np.ndarray]  # per dev and test split


def log_banner(name: str, config: GlueConfig, encoded: datasets.DatasetDict, learning_rate: float) -> None:
    train = encoded["train"]
    batch = config.per_device_train_batch_size * PartialState().num_processes
    steps = (
        config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * math.ceil(len(train) / batch))
    )
    mean_length = float(np.mean(train["length"]))
    dev = ", ".join(f"{split} {len(encoded[split]):,}" for split, _ in TASKS[name].dev_files)
    logger.info(
        f"{name}: {len(train):,} train rows, dev {dev}; {steps:,} steps of {batch} rows at lr {learning_rate:g}; "
        f"mean length {mean_length:.1f} tokens (padding every row to {config.max_seq_length} would spend "
        f"{1 - mean_length / config.max_seq_length:.0%} of the compute on padding)",
        main_process_only=True,
    )


def finetune_once(
    config: GlueConfig, name: str, encoded: datasets.DatasetDict, tokenizer, learning_rate: float
) -> tuple[FineTuneRun, Trainer]:
    task = TASKS[name]
    output_dir = Path(config.output_dir) / name
    log_banner(name, config, encoded, learning_rate)
    collator = ModelInputCollator(tokenizer)
    trainer = Trainer(
        model=load_model(config, task),
        args=training_arguments(config, output_dir, learning_rate),
        train_dataset=encoded["train"],
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.train()
    predictor = prediction_trainer(trainer.model, config, tokenizer)
    splits = [s for s, _ in task.dev_files] + [s for s, _, _ in task.test_files if s in encoded]
    predictions = {split: predict(predictor, encoded[split], task) for split in splits}
    metrics: dict[str, float] = {}
    for split, _ in task.dev_files:
        metrics.update(compute_metrics(name, split, predictions[split], encoded[split]["label"]))
    logger.info(f"{name} lr {learning_rate:g}: {format_metrics(metrics)}", main_process_only=True)
    return FineTuneRun(learning_rate, metrics, predictions), trainer


def task_score(metrics: dict[str, float]) -> float:
    """The leaderboard's score of one task: the mean of its metrics (MNLI: of matched and mismatched)."""
    return float(np.mean(list(metrics.values())))


def run_task(config: GlueConfig, name: str, rates: list[float], tokenizer) -> dict[str, float]:
    """Fine-tune with each learning rate, keep the run best on dev, and write its model and outputs."""
    state = PartialState()
    with state.main_process_first():
        encoded = tokenize(load_task_data(config, name), tokenizer, config.max_seq_length)
    best: FineTuneRun | None = None
    sweep: dict[str, dict[str, float]] = {}
    for rate in rates:
        run, trainer = finetune_once(config, name, encoded, tokenizer, rate)
        sweep[f"{rate:g}"] = run.metrics
        if best is None or task_score(run.metrics) > task_score(best.metrics):
            best = run
            trainer.save_model(str(Path(config.output_dir) / name))  # only the best model stays on disk
        del trainer  # one model (and its optimizer state) in memory at a time
    if state.is_main_process:
        write_task_outputs(config, name, encoded, best, sweep if len(rates) > 1 else None)
    return best.metrics


# ---- outputs ---------------------------------------------------------------------------------------------------


def shown_prediction(task: Task, value: float) -> str:
    """As the leaderboard wants it: the GLUE files' label (names for MNLI, QNLI, RTE), a 0-5 score for STS-B."""
    if task.is_regression:
        return f"{min(5.0, max(0.0, float(value))):.3f}"
    return task.labels[int(value)]


def write_predictions(path: Path, task: Task, split: datasets.Dataset, predictions: np.ndarray) -> None:
    """`index<TAB>prediction` rows; dev files add the gold `label` column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled = any(label != -1 for label in split["label"])
    lines = ["index\tprediction" + ("\tlabel" if labelled else "")]
    for idx, value, label in zip(split["idx"], predictions, split["label"], strict=True):
        gold = f"\t{shown_prediction(task, label)}" if labelled else ""
        lines.append(f"{idx}\t{shown_prediction(task, value)}{gold}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_task_outputs(
    config: GlueConfig, name: str, encoded: datasets.DatasetDict, best: FineTuneRun, sweep: dict | None
) -> None:
    """eval_results.json, dev predictions and the resolved config in the task folder; test predictions in the
    shared submission/ folder, ready to zip for the leaderboard."""
    task, out = TASKS[name], Path(config.output_dir)
    task_dir = out / name
    task_dir.mkdir(parents=True, exist_ok=True)
    (task_dir / "eval_results.json").write_text(json.dumps(best.metrics, indent=2) + "\n", encoding="utf-8")
    if sweep:
        (task_dir / "learning_rate_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n", encoding="utf-8")
    chosen = dataclasses.replace(config, task_name=name, learning_rate=best.learning_rate)
    save_config(task_dir / "finetune_args.yaml", chosen)
    for split, file in task.dev_files:
        stem = Path(file).stem.replace("dev", "dev_predictions")
        write_predictions(task_dir / f"{stem}.tsv", task, encoded[split], best.predictions[split])
    for split, _, submission in task.test_files:
        if split in best.predictions:
            write_predictions(out / "submission" / submission, task, encoded[split], best.predictions[split])


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {100 * value:.2f}" for name, value in metrics.items())


GLUE_SCORE_CONVENTION = (
    "GLUE score: the leaderboard's macro-average over the tasks run; a task with two metrics (MRPC, QQP, STS-B) "
    "scores their mean, MNLI the mean of matched and mismatched accuracy (shown apart as MNLI-m and MNLI-mm, "
    "scored as one task); AX is not scored. Dev sets, not the hidden test sets."
)


def glue_score(results: dict[str, dict[str, float]]) -> float:
    """The GLUE average in points (0-100), as the leaderboard computes it; see GLUE_SCORE_CONVENTION."""
    if not results:
        raise ValueError("glue_score needs the results of at least one task")
    return 100 * float(np.mean([task_score(metrics) for metrics in results.values()]))


def leaderboard_cells(name: str, metrics: dict[str, float]) -> list[tuple[str, str]]:
    """(column, value) in the leaderboard's style: two metrics as `a/b`, MNLI-m and MNLI-mm in their own columns."""
    if name == "mnli":
        return [(f"MNLI-{s[1:]}", f"{100 * metrics[f'accuracy{s}']:.1f}") for s in ("_m", "_mm")]
    return [(TASKS[name].folder, "/".join(f"{100 * v:.1f}" for v in metrics.values()))]


def results_markdown(results: dict[str, dict[str, float]]) -> str:
    """One row per task with its metrics and score, the leaderboard-style line, and the GLUE score."""
    lines = ["| task | metrics (dev) | score |", "|---|---|---|"]
    for name, metrics in results.items():
        lines.append(f"| {name} | {format_metrics(metrics)} | {100 * task_score(metrics):.2f} |")
    lines.append(f"| **GLUE score** | average of {len(results)} of {len(TASKS)} tasks | {glue_score(results):.2f} |")
    cells = [cell for name, metrics in results.items() for cell in leaderboard_cells(name, metrics)]
    cells.append(("Score", f"{glue_score(results):.1f}"))
    lines += ["", "| " + " | ".join(c for c, _ in cells) + " |", "|" + "---|" * len(cells)]
    lines += ["| " + " | ".join(v for _, v in cells) + " |", "", GLUE_SCORE_CONVENTION]
    return "\n".join(lines) + "\n"


def write_glue_results(output_dir: Path, results: dict[str, dict[str, float]]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = {"tasks": results, "glue_score": glue_score(results), "convention": GLUE_SCORE_CONVENTION}
    (output_dir / "glue_results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (output_dir / "glue_results.md").write_text(results_markdown(results), encoding="utf-8")


# ---- entry points ----------------------------------------------------------------------------------------------


def run_glue(config: GlueConfig) -> dict[str, dict[str, float]]:
    """Fine-tune and evaluate one task or all of them; writes every output; returns {task: dev metrics}."""
    state = PartialState(cpu=not torch.cuda.is_available())  # as TrainingArguments will set it up
    check_settings(config)
    names = tasks_to_run(config)
    rates = parse_learning_rates(config)
    tokenizer = load_checked_tokenizer(config)
    results = {name: run_task(config, name, rates, tokenizer) for name in names}
    if config.task_name == "all" and state.is_main_process:
        write_glue_results(Path(config.output_dir), results)
    return results


def majority_baseline(config: GlueConfig, task: str) -> dict[str, float]:
    """The dev metrics of always predicting the most frequent training label.

    STS-B has no most frequent label, and a constant has no correlation with anything: its baseline is 0.
    """
    if task not in TASKS:
        check_task_name(task)
        raise UsageError("majority_baseline takes one task, not all")
    spec = TASKS[task]
    data = load_task_data(config, task)
    if spec.is_regression:
        return {f"{m}{SPLIT_SUFFIX.get(s, '')}": 0.0 for s, _ in spec.dev_files for m in spec.metrics}
    majority = int(np.bincount(np.asarray(data["train"]["label"]), minlength=spec.num_labels).argmax())
    metrics: dict[str, float] = {}
    for split, _ in spec.dev_files:
        references = data[split]["label"]
        metrics.update(compute_metrics(task, split, np.full(len(references), majority), references))
    return metrics
