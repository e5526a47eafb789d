"""GLUE data from the Hub (`nyu-mll/glue`), the original GLUE file layout under --data_dir, or custom csv/tsv/json
files, as the same columns: text_a, text_b (None for single sentences), label (-1 on test sets), idx; then
tokenized without padding, with each row's length for length-grouped batches."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import datasets
from accelerate.logging import get_logger
from transformers import PreTrainedTokenizerBase

from bert_recipes.errors import UsageError
from bert_recipes.glue.config import TaskConfig, check_task_name
from bert_recipes.glue.tasks import TASKS, Task

logger = get_logger(__name__)
csv.field_size_limit(2**30)

HUB_DATASET = "nyu-mll/glue"
CUSTOM_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl")


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


def tasks_to_run(config: TaskConfig) -> list[str]:
    """The requested tasks; with `all` and --data_dir, tasks whose folder is absent are reported and skipped."""
    names = check_task_name(config.task_name)
    if config.data_dir:
        data_dir = Path(config.data_dir)
        if config.task_name == "all":
            absent = [n for n in names if not (data_dir / TASKS[n].folder).is_dir()]
            for name in absent:
                logger.warning(f"skipping {name}: --data_dir '{data_dir}' has no {TASKS[name].folder}/ folder")
            names = [n for n in names if n not in absent]
            if not names:
                raise UsageError(f"--data_dir '{data_dir}' holds none of the GLUE task folders (CoLA/, SST-2/ ...)")
        for name in names:
            check_glue_files(name, data_dir)
    return names


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


def load_custom(config: TaskConfig, name: str) -> datasets.DatasetDict:
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


def load_task_data(config: TaskConfig, name: str) -> datasets.DatasetDict:
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


def tokenize(data: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.DatasetDict:
    """Token ids without padding (the collator pads each batch) plus each row's length for grouping."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch["text_b"] if batch["text_b"][0] is not None else None
        encoded = tokenizer(batch["text_a"], pairs, truncation=True, max_length=max_length)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return data.map(encode, batched=True, remove_columns=["text_a", "text_b"], desc="tokenizing")
