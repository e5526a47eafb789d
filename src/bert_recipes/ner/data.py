"""Sentences as words and their tags, from CoNLL files (a token per line with its tag in a column, a blank line
between sentences, `-DOCSTART-` lines between documents; IOB1 or IOB2 tags, read as IOB2) or from a Hub dataset
with `tokens` and `ner_tags`; and their word pieces with labels for the model."""

from __future__ import annotations

import datasets
from transformers import PreTrainedTokenizerBase

from bert_recipes.errors import UsageError
from bert_recipes.ner.config import NerDataConfig

IGNORED = -100  # the label of pieces the loss and the metrics skip (the Trainer pads labels with it too)
FEATURES = datasets.Features(
    {"tokens": datasets.Sequence(datasets.Value("string")), "tags": datasets.Sequence(datasets.Value("string"))}
)


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 (I- everywhere, B- only between two entities of one type) as IOB2 (every entity starts with B-); the
    same entities, so a model learns one tag per role whatever the file used."""
    out = []
    for i, tag in enumerate(tags):
        previous = out[i - 1] if i else "O"
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


def read_conll(path: str, flag: str, label_column: int) -> datasets.Dataset:
    """Every sentence of a CoNLL file; fields split on whitespace (CoNLL-2003's spaces, WNUT's tabs); a line of
    whitespace only ends a sentence (WNUT-17's training file writes a tab there)."""
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append((words, iob1_to_iob2(tags)))
                words, tags = [], []
                continue
            try:
                tag = fields[label_column]
            except IndexError:
                raise UsageError(
                    f"{flag} '{path}' line {number} has {len(fields)} fields, no column {label_column}: "
                    "set --label_column to the tag's column"
                ) from None
            if len(fields) < 2 or not (tag == "O" or tag[:2] in ("B-", "I-")):
                raise UsageError(
                    f"{flag} '{path}' line {number}: '{tag}' is not an O, B-TYPE or I-TYPE tag: check --label_column "
                    "(CoNLL-2003: -1, the last of `token POS chunk tag`)"
                )
            words.append(fields[0])
            tags.append(tag)
    if words:
        sentences.append((words, iob1_to_iob2(tags)))
    if not sentences:
        raise UsageError(f"{flag} '{path}' holds no sentences")
    return datasets.Dataset.from_dict(
        {"tokens": [w for w, _ in sentences], "tags": [t for _, t in sentences]}, features=FEATURES
    )


def load_hub(data: NerDataConfig) -> datasets.DatasetDict:
    try:
        raw = datasets.load_dataset(data.dataset_name, data.dataset_config_name)
    except OSError as err:
        raise UsageError(
            f"--dataset_name {data.dataset_name} could not be loaded ({str(err)[:160]}): offline, pass --train_file "
            "and --validation_file in CoNLL format"
        ) from None
    names = raw["train"].features["ner_tags"].feature.names
    return datasets.DatasetDict(
        {
            split: raw[split].map(
                lambda row: {"tokens": row["tokens"], "tags": iob1_to_iob2([names[i] for i in row["ner_tags"]])},
                remove_columns=raw[split].column_names,
                features=FEATURES,
            )
            for split in ("train", "validation")
        }
    )


def load_sentences(data: NerDataConfig) -> datasets.DatasetDict:
    if data.train_file:
        splits = datasets.DatasetDict(
            train=read_conll(data.train_file, "--train_file", data.label_column),
            validation=read_conll(data.validation_file, "--validation_file", data.label_column),
        )
    else:
        splits = load_hub(data)
    for split, limit in (("train", data.max_train_samples), ("validation", data.max_eval_samples)):
        if limit:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    return splits


def label_list(splits: datasets.DatasetDict) -> list[str]:
    """O, then each type's B- and I- tags, types in alphabetical order; from both splits, so a dev tag the training
    sentences lack is still a label (predicted never, scored as missed)."""
    types = sorted({tag[2:] for split in splits.values() for tags in split["tags"] for tag in tags if tag != "O"})
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]


def piece_labels(word_ids: list, tags: list[str], labels: dict[str, int], all_pieces: bool) -> list[int]:
    """A label per word piece: the word's tag on its first piece; on its other pieces IGNORED, or with
    `all_pieces` the word's tag (B- as I-: only the first piece begins the entity)."""
    out, previous = [], None
    for word in word_ids:
        if word is None:
            out.append(IGNORED)
        elif word != previous:
            out.append(labels[tags[word]])
        elif all_pieces:
            tag = tags[word]
            out.append(labels["I-" + tag[2:] if tag.startswith("B-") else tag])
        else:
            out.append(IGNORED)
        previous = word
    return out


def tokenize_sentences(
    splits: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, labels: list[str], data: NerDataConfig
) -> datasets.DatasetDict:
    """Word pieces of each sentence (unpadded), their labels, each piece's word (`word_ids`, -1 for special
    tokens) and the length. Dev sentences label first pieces only, whatever --label_all_tokens: scores are per word."""
    index = {label: i for i, label in enumerate(labels)}

    def encode(batch: dict[str, list], all_pieces: bool) -> dict[str, list]:
        encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=data.max_seq_length)
        words = [encoded.word_ids(i) for i in range(len(batch["tokens"]))]
        encoded["labels"] = [
            piece_labels(ids, tags, index, data.label_all_tokens)
            for ids, tags in zip(words, batch["tags"], strict=True)
        ]
        encoded["word_ids"] = [[-1 if w is None else w for w in ids] for ids in words]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return datasets.DatasetDict(
        {
            split: sentences.map(
                encode,
                batched=True,
                fn_kwargs={"all_pieces": split == "train" and data.label_all_tokens},
                desc=f"{split} word pieces",
            )
            for split, sentences in splits.items()
        }
    )
