"""SQuAD questions from the Hub or from files in the official JSON format, as rows of id, title, context,
question and answers ({text: [...], answer_start: [...]}, both empty for a v2.0 question without answer); and the
windows BERT reads: the question with a part of the context, long contexts cut into overlapping windows."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from bert_recipes.errors import UsageError
from bert_recipes.qa.config import QaDataConfig, hub_dataset

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.Sequence(datasets.Value("string")),
            "answer_start": datasets.Sequence(datasets.Value("int32")),
        },
    }
)


def read_squad_json(path: str, flag: str) -> datasets.Dataset:
    """A file in the official format ({"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}) as rows;
    an answer whose offset does not point at its text in the context is an error, not a silent wrong label."""
    try:
        articles = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
        rows = [
            (article.get("title", ""), paragraph["context"], question)
            for article in articles
            for paragraph in article["paragraphs"]
            for question in paragraph["qas"]
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UsageError(
            f"{flag} '{path}' is not in the official SQuAD JSON format ({type(err).__name__}: {err}): "
            'it needs {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers"}]}]}]}'
        ) from None
    out: dict[str, list] = {name: [] for name in FEATURES}
    for title, context, question in rows:
        answers = [] if question.get("is_impossible") else question.get("answers", [])
        for answer in answers:
            start = answer["answer_start"]
            if context[start : start + len(answer["text"])] != answer["text"]:
                raise UsageError(
                    f"{flag} '{path}' question {question['id']}: answer '{answer['text']}' is not at character "
                    f"{start} of its context: fix answer_start"
                )
        out["id"].append(question["id"])
        out["title"].append(title)
        out["context"].append(context)
        out["question"].append(question["question"])
        out["answers"].append(
            {"text": [a["text"] for a in answers], "answer_start": [a["answer_start"] for a in answers]}
        )
    if not out["id"]:
        raise UsageError(f"{flag} '{path}' holds no questions")
    return datasets.Dataset.from_dict(out, features=FEATURES)


def load_squad(data: QaDataConfig) -> datasets.DatasetDict:
    """Train and validation questions, from --train_file/--validation_file or the Hub."""
    if data.train_file:
        splits = datasets.DatasetDict(
            train=read_squad_json(data.train_file, "--train_file"),
            validation=read_squad_json(data.validation_file, "--validation_file"),
        )
    else:
        name = hub_dataset(data)
        try:
            splits = datasets.load_dataset(name)
        except OSError as err:
            raise UsageError(
                f"SQuAD could not be loaded from the Hub ({name}: {str(err)[:160]}): offline, pass --train_file and "
                "--validation_file in the official JSON format"
            ) from None
    for split, limit in (("train", data.max_train_samples), ("validation", data.max_eval_samples)):
        if limit:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    for split in ("train", "validation"):
        if not data.version_2_with_negative and any(not a["text"] for a in splits[split]["answers"]):
            raise UsageError(
                f"the {split} data has questions without an answer (SQuAD v2.0): pass --version_2_with_negative true"
            )
    return splits


def windows(rows: dict[str, list], tokenizer: PreTrainedTokenizerBase, data: QaDataConfig):
    """The question with each window of its context: a context longer than one window is cut into windows that
    overlap by --doc_stride tokens, so every answer lies whole in at least one of them. Unpadded: the collator pads
    each batch to its longest window."""
    try:
        return tokenizer(
            [question.lstrip() for question in rows["question"]],  # some SQuAD questions start with spaces
            rows["context"],
            truncation="only_second",
            max_length=data.max_seq_length,
            stride=data.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
    except Exception as err:  # tokenizers raises a bare Exception when a question leaves no room for context
        raise UsageError(
            f"a question does not leave room for context in --max_seq_length {data.max_seq_length} with "
            f"--doc_stride {data.doc_stride} ({str(err)[:120]}): raise --max_seq_length or lower --doc_stride"
        ) from None


def answer_tokens(offsets: list, sequence_ids: list, first: int, end: int, cls: int) -> tuple[int, int]:
    """The window's first and last token of the answer at characters [first, end) of the context; the [CLS]
    token for both when the answer is not whole in the window (as BERT trains it), or there is none."""
    context = [k for k, sequence in enumerate(sequence_ids) if sequence == 1]
    if first == end or offsets[context[0]][0] > first or offsets[context[-1]][1] < end:
        return cls, cls
    start_token = max(k for k in context if offsets[k][0] <= first)
    end_token = min(k for k in context if offsets[k][1] >= end)
    return start_token, end_token


def training_windows(rows: dict[str, list], tokenizer: PreTrainedTokenizerBase, data: QaDataConfig) -> dict:
    """Windows with the first answer's start and end token (the training sets have one answer per question)."""
    encoded = windows(rows, tokenizer, data)
    encoded["start_positions"], encoded["end_positions"] = [], []
    for i, row in enumerate(encoded.pop("overflow_to_sample_mapping")):
        answers = rows["answers"][row]
        first = answers["answer_start"][0] if answers["text"] else 0
        end = first + len(answers["text"][0]) if answers["text"] else 0
        cls = encoded["input_ids"][i].index(tokenizer.cls_token_id)
        start, stop = answer_tokens(encoded["offset_mapping"][i], encoded.sequence_ids(i), first, end, cls)
        encoded["start_positions"].append(start)
        encoded["end_positions"].append(stop)
    encoded.pop("offset_mapping")
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return encoded


def prediction_windows(rows: dict[str, list], tokenizer: PreTrainedTokenizerBase, data: QaDataConfig) -> dict:
    """Windows with their question's id and the character span of each context token (None elsewhere), which
    turn a predicted start and end token back into text."""
    encoded = windows(rows, tokenizer, data)
    encoded["example_id"] = []
    for i, row in enumerate(encoded.pop("overflow_to_sample_mapping")):
        encoded["example_id"].append(rows["id"][row])
        sequence_ids = encoded.sequence_ids(i)
        encoded["offset_mapping"][i] = [
            span if sequence_ids[k] == 1 else None for k, span in enumerate(encoded["offset_mapping"][i])
        ]
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return encoded


def tokenize_squad(
    splits: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, data: QaDataConfig
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Training windows and dev windows (map in batches: one question becomes one or several rows)."""
    train = splits["train"].map(
        training_windows, batched=True, remove_columns=splits["train"].column_names,
        fn_kwargs={"tokenizer": tokenizer, "data": data}, desc="training windows",
    )  # fmt: skip
    dev = splits["validation"].map(
        prediction_windows, batched=True, remove_columns=splits["validation"].column_names,
        fn_kwargs={"tokenizer": tokenizer, "data": data}, desc="dev windows",
    )  # fmt: skip
    return train, dev
