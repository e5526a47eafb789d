"""BERT pretraining examples from raw documents: sentence pairs for next-sentence prediction, or packed MLM-only
sequences, streamed or written to disk by the same code.

Documents are processed in groups of `document_buffer_size` (consecutive in the corpus). A group is the bounded
buffer from which "random next" segments are drawn, and every random choice for it comes from a `random.Random`
seeded with (seed, epoch, group index). So a group's examples depend only on its documents, which is what makes
the stream resumable exactly from `state_dict()`, lets processes build groups independently, and makes the
streamed and on-disk examples identical. The reference implementation draws random documents from the whole
corpus held in memory; a group of a few hundred documents gives the same statistics with bounded memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import blingfire
import datasets
from transformers import PreTrainedTokenizerFast

from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.errors import UsageError

COLUMNS = ["input_ids", "token_type_ids", "attention_mask", "word_starts", "next_sentence_label"]


@dataclass
class DataConfig:
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example, [CLS] and [SEP]s included."})
    short_seq_prob: float = field(default=0.1, metadata={"help": "Probability of a shorter random target length."})
    nsp_probability: float = field(default=0.5, metadata={"help": "Probability that segment B is a random one."})
    no_nsp: bool = field(default=False, metadata={"help": "MLM only: pack documents to full length, no NSP."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens (or words) masked."})
    whole_word_mask: bool = field(default=False, metadata={"help": "Mask all pieces of a word together."})
    document_buffer_size: int = field(
        default=128, metadata={"help": "Documents per group: the pool that random segments B are drawn from."}
    )
    eval_every_nth_document: int = field(
        default=100, metadata={"help": "Every Nth document is held out for evaluation (0: none)."}
    )
    eval_examples: int = field(default=256, metadata={"help": "Most held-out examples used per evaluation."})
    prepared_data_dir: str | None = field(
        default=None, metadata={"help": "Read examples written by recipes/prepare_data.py instead of streaming."}
    )


def validate_data_config(config: DataConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    if config.max_seq_length < 8:
        raise UsageError(f"--max_seq_length {config.max_seq_length} is too short: use at least 8 (BERT uses 128/512)")
    if config.max_seq_length > tokenizer.model_max_length:
        raise UsageError(
            f"--max_seq_length {config.max_seq_length} exceeds the tokenizer's model_max_length "
            f"{tokenizer.model_max_length}: lower it or retrain the tokenizer with a larger --model_max_length"
        )
    if tokenizer.mask_token_id is None or tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise UsageError("the tokenizer lacks [MASK], [CLS] or [SEP]: train one with tokenizer/train_tokenizer.py")
    for name in ("short_seq_prob", "nsp_probability", "mlm_probability"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise UsageError(f"--{name} must be between 0 and 1, got {getattr(config, name)}")
    if config.document_buffer_size < 2:
        raise UsageError("--document_buffer_size must be at least 2: random segments need another document")
    if config.prepared_data_dir and not Path(config.prepared_data_dir, "train").is_dir():
        raise UsageError(
            f"--prepared_data_dir '{config.prepared_data_dir}' has no train/ folder: "
            "write it with recipes/prepare_data.py"
        )


# ---- sentences and segments ----------------------------------------------------------------------------------


@dataclass
class Segment:
    """Token ids of consecutive text, with a 1 where a token starts a word (for whole-word masking)."""

    ids: list[int]
    starts: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def split_sentences(document: str) -> list[str]:
    sentences = []
    for paragraph in document.split("\n"):
        if paragraph.strip():
            sentences.extend(s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip())
    return sentences


def tokenize_sentences(sentences: list[str], tokenizer: PreTrainedTokenizerFast, max_tokens: int) -> list[Segment]:
    """Batch-encode sentences; a sentence longer than a whole example is cut into example-sized pieces."""
    if not sentences:
        return []
    encoded = tokenizer(sentences, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    segments = []
    for i, ids in enumerate(encoded["input_ids"]):
        if not ids:
            continue
        words = encoded.word_ids(i)
        starts = [int(k == 0 or words[k] != words[k - 1]) for k in range(len(ids))]
        for at in range(0, len(ids), max_tokens):
            segments.append(Segment(ids[at : at + max_tokens], starts[at : at + max_tokens]))
    return segments


def concat(segments: list[Segment]) -> Segment:
    return Segment([t for s in segments for t in s.ids], [w for s in segments for w in s.starts])


def truncate_pair(a: Segment, b: Segment, max_tokens: int, rng: random.Random) -> None:
    """Remove one token at a time from the longer segment, at a random end, until the pair fits."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        at = 0 if rng.random() < 0.5 else -1
        del longer.ids[at], longer.starts[at]


def pair_example(a: Segment, b: Segment, is_random: bool, cls_id: int, sep_id: int) -> dict[str, Any]:
    ids = [cls_id, *a.ids, sep_id, *b.ids, sep_id]
    return {
        "input_ids": ids,
        "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
        "attention_mask": [1] * len(ids),
        "word_starts": [1, *a.starts, 1, *b.starts, 1],
        "next_sentence_label": int(is_random),
    }


# ---- next-sentence pairs ---------------------------------------------------------------------------------------


@dataclass
class PairBuilder:
    """google-research/bert's pairing, over one group of tokenized documents."""

    max_tokens: int
    short_seq_prob: float
    nsp_probability: float
    cls_id: int
    sep_id: int

    def random_segment(self, docs: list[list[Segment]], own: int, target: int, rng: random.Random) -> Segment | None:
        others = [d for d in range(len(docs)) if d != own and docs[d]]
        if not others:
            return None
        other = docs[rng.choice(others)]
        start = rng.randrange(len(other))
        picked: list[Segment] = []
        for segment in other[start:]:
            picked.append(segment)
            if sum(map(len, picked)) >= target:
                break
        return concat(picked)

    def document_pairs(self, docs: list[list[Segment]], index: int, rng: random.Random) -> Iterator[dict[str, Any]]:
        doc = docs[index]
        # drawn once per document, as the reference does
        target = self.max_tokens if rng.random() >= self.short_seq_prob else rng.randint(2, self.max_tokens)
        chunk: list[Segment] = []
        i = 0
        while i < len(doc):
            chunk.append(doc[i])
            if i == len(doc) - 1 or sum(map(len, chunk)) >= target:
                is_random = rng.random() < self.nsp_probability
                if not is_random and len(chunk) == 1:
                    # the reference forces "random" here, which skews the labels past 50%; take the true next
                    # sentence instead, or drop a document's lone last sentence
                    if i + 1 == len(doc):
                        break
                    i += 1
                    chunk.append(doc[i])
                a_end = 1 if len(chunk) < 2 else rng.randint(1, len(chunk) - 1)
                a = concat(chunk[:a_end])
                if is_random:
                    b = self.random_segment(docs, index, max(1, target - len(a)), rng)
                    # the sentences not used for A are read again for the next pair
                    i -= len(chunk) - a_end
                else:
                    b = concat(chunk[a_end:])
                if b is not None:
                    truncate_pair(a, b, self.max_tokens, rng)
                    yield pair_example(a, b, is_random, self.cls_id, self.sep_id)
                chunk = []
            i += 1

    def group_examples(self, docs: list[list[Segment]], rng: random.Random) -> list[dict[str, Any]]:
        examples = [e for index in range(len(docs)) for e in self.document_pairs(docs, index, rng)]
        # consecutive pairs of one document would otherwise share a batch
        rng.shuffle(examples)
        return examples


# ---- packed MLM-only sequences ---------------------------------------------------------------------------------


def packed_examples(docs: list[list[Segment]], max_length: int, cls_id: int, sep_id: int) -> list[dict[str, Any]]:
    """Documents back to back, [SEP] between them, cut into full-length `[CLS] ... [SEP]` sequences."""
    stream = concat([s for doc in docs if doc for s in [*doc, Segment([sep_id], [1])]])
    body = max_length - 2
    examples = []
    for at in range(0, len(stream), body):
        ids, starts = stream.ids[at : at + body], stream.starts[at : at + body]
        if len(ids) < body // 2 and examples:
            break
        ids = [cls_id, *ids, sep_id]
        examples.append(
            {
                "input_ids": ids,
                "token_type_ids": [0] * len(ids),
                "attention_mask": [1] * len(ids),
                "word_starts": [1, *starts, 1],
            }
        )
    return examples


# ---- the dataset pipeline --------------------------------------------------------------------------------------


def group_seed(seed: int, epoch: int, group: int) -> int:
    return (seed * 1_000_003 + epoch) * 1_000_003 + group


def examples_of_group(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerFast,
    config: DataConfig,
    seed: int,
    epoch: int,
) -> dict[str, list]:
    """The datasets.map function: one group of documents (a row of `.batch()`) in, its examples out."""
    out: dict[str, list] = {c: [] for c in COLUMNS}
    max_tokens = config.max_seq_length - (2 if config.no_nsp else 3)
    for group, texts in zip(indices, batch["text"], strict=True):
        segmented = [tokenize_sentences(split_sentences(text), tokenizer, max_tokens) for text in texts]
        rng = random.Random(group_seed(seed, epoch, group))
        if config.no_nsp:
            examples = packed_examples(segmented, config.max_seq_length, tokenizer.cls_token_id, tokenizer.sep_token_id)
        else:
            builder = PairBuilder(
                max_tokens,
                config.short_seq_prob,
                config.nsp_probability,
                tokenizer.cls_token_id,
                tokenizer.sep_token_id,
            )
            examples = builder.group_examples(segmented, rng)
        for example in examples:
            for column in COLUMNS:
                out[column].append(example.get(column, -100))
    if config.no_nsp:
        del out["next_sentence_label"]
    return out


def in_split(row: dict, index: int, every_nth: int, held_out: bool) -> bool:
    """Every Nth document of the corpus (by position) is held out for evaluation; the rest are for training."""
    return (every_nth > 0 and index % every_nth == 0) == held_out


def examples_from_documents(
    corpus: datasets.Dataset | datasets.IterableDataset,
    tokenizer: PreTrainedTokenizerFast,
    config: DataConfig,
    seed: int,
    epoch: int,
    held_out: bool = False,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Documents (a `text` column) to examples; works the same on a streamed or an in-memory dataset.

    Held-out and training documents are separated before grouping, so random segments B of held-out pairs come
    from other held-out documents only.
    """
    every = config.eval_every_nth_document
    if every > 0 or held_out:
        keep = partial(in_split, every_nth=every, held_out=held_out)
        corpus = corpus.filter(keep, with_indices=True, **({"num_proc": num_proc} if num_proc else {}))
    groups = corpus.batch(batch_size=config.document_buffer_size)
    build = partial(examples_of_group, tokenizer=tokenizer, config=config, seed=seed, epoch=epoch)
    kwargs: dict[str, Any] = {"num_proc": num_proc, "desc": "building examples"} if num_proc else {}
    return groups.map(build, batched=True, batch_size=1, with_indices=True, remove_columns=["text"], **kwargs)


def load_prepared(config: DataConfig, seed: int, epoch: int) -> tuple[datasets.IterableDataset, datasets.Dataset]:
    root = Path(config.prepared_data_dir)

    def split(name: str) -> datasets.Dataset:
        files = sorted(str(f) for f in (root / name).glob("*.parquet"))
        return datasets.load_dataset("parquet", data_files={name: files}, split=name) if files else None

    train, evaluation = split("train"), split("eval")
    if train is None:
        raise UsageError(f"--prepared_data_dir '{root}' has no train/*.parquet: write it with recipes/prepare_data.py")
    evaluation = evaluation if evaluation is not None else train.select(range(0))
    # on disk the whole set is known, so each epoch can be a true shuffle
    shuffled = train.shuffle(seed=group_seed(seed, epoch, 0)).to_iterable_dataset(num_shards=max(1, len(train) // 1000))
    return shuffled, evaluation.select(range(min(config.eval_examples, len(evaluation))))


def build_pretraining_datasets(
    corpus_config: CorpusConfig,
    data_config: DataConfig,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    epoch: int = 0,
) -> tuple[datasets.IterableDataset, Any]:
    """(train, eval) examples. The train stream is resumable with state_dict(); eval is the held-out documents."""
    if data_config.prepared_data_dir:
        return load_prepared(data_config, seed, epoch)
    corpus = load_corpus(corpus_config)
    train = examples_from_documents(corpus, tokenizer, data_config, seed, epoch)
    evaluation = examples_from_documents(corpus, tokenizer, data_config, seed, 0, held_out=True)
    return train, evaluation.take(data_config.eval_examples)


def prepare_to_disk(
    corpus_config: CorpusConfig,
    data_config: DataConfig,
    tokenizer: PreTrainedTokenizerFast,
    output_dir: str | Path,
    seed: int,
    dupe_factor: int = 1,
    num_proc: int = 1,
    examples_per_shard: int = 100_000,
) -> dict[str, int]:
    """Write train/ and eval/ Parquet shards; each of `dupe_factor` copies pairs and masks the text anew."""
    corpus = load_corpus(corpus_config, streaming=False)
    epochs = [
        examples_from_documents(corpus, tokenizer, data_config, seed, e, num_proc=num_proc) for e in range(dupe_factor)
    ]
    splits = {
        "train": datasets.concatenate_datasets(epochs),
        "eval": examples_from_documents(corpus, tokenizer, data_config, seed, 0, held_out=True, num_proc=num_proc),
    }
    if len(splits["train"]) == 0:
        raise UsageError("the corpus produced no training examples: it needs documents of two or more sentences")
    for name, split in splits.items():
        folder = Path(output_dir, name)
        folder.mkdir(parents=True, exist_ok=True)
        shards = max(1, -(-len(split) // examples_per_shard))
        for index in range(shards):
            split.shard(shards, index, contiguous=True).to_parquet(str(folder / f"{name}-{index:05d}.parquet"))
    return {name: len(split) for name, split in splits.items()}
