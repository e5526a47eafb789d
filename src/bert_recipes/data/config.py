"""The data settings of pretraining (`DataConfig`) and their checks against the tokenizer and a prepared
directory; the columns and features every example has."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerFast

from bert_recipes.errors import UsageError

COLUMNS = ["input_ids", "token_type_ids", "attention_mask", "word_starts", "next_sentence_label", "source", "documents"]


# about 25k tokens: a group of 128 pieces stays in the tens of megabytes even when one document is a whole library
MAX_PIECE_CHARS = 100_000


PREPARED_METADATA = "data_config.json"


DOCUMENT_FEATURES = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("int16")})


PIECE_FEATURES = datasets.Features(
    {**DOCUMENT_FEATURES, "doc_key": datasets.Value("int64"), "document_start": datasets.Value("int8")}
)


def example_features(no_nsp: bool) -> datasets.Features:
    """Declared rather than inferred: an empty split (no held-out document) must still have its columns."""
    small = datasets.List(datasets.Value("int8"))
    features = {
        "input_ids": datasets.List(datasets.Value("int32")),
        "token_type_ids": small,
        "attention_mask": small,
        "word_starts": small,
        # which source the example's first document came from, and on a group's first example the number of
        # documents the group started: the trainer counts tokens per source and documents seen from them
        "source": datasets.Value("int16"),
        "documents": datasets.Value("int32"),
    }
    return datasets.Features(features if no_nsp else {**features, "next_sentence_label": datasets.Value("int8")})


@dataclass
class DataConfig:
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example, [CLS] and [SEP]s included."})
    short_seq_prob: float = field(
        default=0.1, metadata={"help": "Probability that a document's pairs aim at a shorter random length."}
    )
    nsp_probability: float = field(default=0.5, metadata={"help": "Probability that segment B is a random one."})
    no_nsp: bool = field(default=False, metadata={"help": "MLM only: pack documents to full length, no NSP."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens (or words) masked."})
    whole_word_mask: bool = field(default=False, metadata={"help": "Mask all pieces of a word together."})
    max_predictions_per_seq: int = field(
        default=0,
        metadata={
            "help": "Cap on predicted positions per sequence, as google-research/bert (20 at 128, 80 at 512): "
            "gives the MLM head a fixed shape for --torch_compile (0: no cap)."
        },
    )
    document_buffer_size: int = field(
        default=128, metadata={"help": "Documents per group: the pool that random segments B are drawn from."}
    )
    shuffle_buffer_size: int = field(
        default=0,
        metadata={
            "help": "Documents in the shuffle buffer that reorders each epoch (0: ten times --document_buffer_size; "
            "1: no shuffling)."
        },
    )
    eval_every_nth_document: int = field(
        default=100,
        metadata={
            "help": "Hold out about one document in N for evaluation, chosen by a hash of its text so the choice "
            "does not depend on order or sharding (0: none)."
        },
    )
    eval_examples: int = field(default=256, metadata={"help": "Most held-out examples used per evaluation."})
    prepared_data_dir: str | None = field(
        default=None, metadata={"help": "Read examples written by recipes/prepare_data.py instead of streaming."}
    )


def validate_data_config(config: DataConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    """Raise UsageError for any setting the data pipeline cannot honour, before heavy work starts."""
    if config.max_seq_length < 8:
        raise UsageError(f"--max_seq_length {config.max_seq_length} is too short: use at least 8 (BERT uses 128/512)")
    if config.max_seq_length > tokenizer.model_max_length:
        raise UsageError(
            f"--max_seq_length {config.max_seq_length} exceeds the tokenizer's model_max_length "
            f"{tokenizer.model_max_length}: lower it or retrain the tokenizer with a larger --model_max_length"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError("the tokenizer has no fast version (tokenizer.json): whole-word boundaries need one")
    if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise UsageError("the tokenizer lacks [MASK], [CLS] or [SEP]: train one with tokenizer/train_tokenizer.py")
    for name in ("short_seq_prob", "nsp_probability", "mlm_probability"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise UsageError(f"--{name} must be between 0 and 1, got {getattr(config, name)}")
    if config.document_buffer_size < 2:
        raise UsageError("--document_buffer_size must be at least 2: random segments need another document")
    if config.shuffle_buffer_size < 0:
        raise UsageError("--shuffle_buffer_size must be 0 (ten times --document_buffer_size) or more")
    if config.eval_every_nth_document < 0 or config.eval_examples < 0:
        raise UsageError("--eval_every_nth_document and --eval_examples must be 0 or more")
    if config.prepared_data_dir:
        check_prepared_data(config)


def check_prepared_data(config: DataConfig) -> None:
    root = Path(config.prepared_data_dir)
    metadata = root / PREPARED_METADATA
    if not metadata.is_file() or not any((root / "train").glob("*.parquet")):
        raise UsageError(
            f"--prepared_data_dir '{root}' has no {PREPARED_METADATA} and train/*.parquet: "
            "write it with recipes/prepare_data.py"
        )
    written = json.loads(metadata.read_text(encoding="utf-8"))
    for name in ("max_seq_length", "no_nsp"):
        if written[name] != getattr(config, name):
            raise UsageError(
                f"--prepared_data_dir '{root}' was written with {name}={written[name]} but this run has "
                f"--{name} {getattr(config, name)}: use the same value or prepare the data again"
            )
