"""Examples from a group of documents: sentences (blingfire), one batched call of the fast tokenizer, then
google-research/bert's next-sentence pairs (`PairBuilder`) or packed MLM-only sequences, seeded by the group
alone so a replayed group gives the same examples."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import blingfire
import datasets
from transformers import PreTrainedTokenizerFast

from bert_recipes.data.config import COLUMNS, DOCUMENT_FEATURES, PIECE_FEATURES, DataConfig, example_features
from bert_recipes.data.documents import document_pieces


def split_sentences(document: str) -> list[str]:
    sentences = []
    for paragraph in document.split("\n"):
        if paragraph.strip():
            sentences.extend(s for s in blingfire.text_to_sentences(paragraph).split("\n") if s.strip())
    return sentences


@dataclass
class Segment:
    """Token ids of consecutive text, with a 1 where a token starts a word (for whole-word masking)."""

    ids: list[int]
    starts: list[int]

    def __len__(self) -> int:
        return len(self.ids)


def word_starts(word_ids: list[int | None]) -> list[int]:
    return [int(k == 0 or w != word_ids[k - 1]) for k, w in enumerate(word_ids)]


def encode_sentences(tokenizer: PreTrainedTokenizerFast, sentences: list[str]) -> list:
    backend = tokenizer.backend_tokenizer
    if backend.truncation is None and backend.padding is None:
        # straight to the Rust tokenizer: transformers' conversion of every encoding to Python costs 40% more
        return backend.encode_batch(sentences, add_special_tokens=False)
    return tokenizer(sentences, add_special_tokens=False).encodings


def tokenize_documents(
    documents: list[list[str]], tokenizer: PreTrainedTokenizerFast, max_tokens: int
) -> list[list[Segment]]:
    """Sentences of many documents in one batched tokenizer call (where the speed comes from).

    A sentence longer than a whole example is cut into example-sized segments, as it could never fit otherwise.
    """
    flat = [sentence for sentences in documents for sentence in sentences]
    encodings = encode_sentences(tokenizer, flat) if flat else []
    tokenized: list[list[Segment]] = []
    at = 0
    for sentences in documents:
        segments = []
        for encoding in encodings[at : at + len(sentences)]:
            ids, starts = encoding.ids, word_starts(encoding.word_ids)
            segments.extend(
                Segment(ids[k : k + max_tokens], starts[k : k + max_tokens]) for k in range(0, len(ids), max_tokens)
            )
        tokenized.append(segments)
        at += len(sentences)
    return tokenized


def concat(segments: list[Segment]) -> Segment:
    return Segment([t for s in segments for t in s.ids], [w for s in segments for w in s.starts])


def truncate_pair(a: Segment, b: Segment, max_tokens: int, rng: random.Random) -> tuple[Segment, Segment]:
    """Remove one token at a time from the longer segment, at a random end, until the pair fits."""
    front, back = [0, 0], [0, 0]  # tokens removed from each end of A (index 0) and B (index 1)
    lengths = [len(a), len(b)]
    while sum(lengths) > max_tokens:
        longer = 0 if lengths[0] > lengths[1] else 1
        (front if rng.random() < 0.5 else back)[longer] += 1
        lengths[longer] -= 1
    a, b = (
        Segment(s.ids[f : len(s) - k], s.starts[f : len(s) - k]) for s, f, k in zip((a, b), front, back, strict=True)
    )
    return a, b


def starting_a_word(starts: list[int]) -> list[int]:
    # a segment cut inside a word (truncation, a split long sentence) begins with a word fragment of its own
    return [1, *starts[1:]]


def pair_example(a: Segment, b: Segment, is_random: bool, cls_id: int, sep_id: int) -> dict[str, Any]:
    ids = [cls_id, *a.ids, sep_id, *b.ids, sep_id]
    return {
        "input_ids": ids,
        "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
        "attention_mask": [1] * len(ids),
        "word_starts": [1, *starting_a_word(a.starts), 1, *starting_a_word(b.starts), 1],
        "next_sentence_label": int(is_random),
    }


@dataclass
class PairBuilder:
    """google-research/bert's pairing over one group of tokenized documents; `keys` tell pieces of one document."""

    max_tokens: int
    short_seq_prob: float
    nsp_probability: float
    cls_id: int
    sep_id: int

    def other_document(self, docs: list[list[Segment]], keys: list[int], own: int, rng: random.Random) -> int | None:
        # the reference makes 10 tries; a scan settles the rare group where they all hit the same document
        for _ in range(10):
            pick = rng.randrange(len(docs))
            if keys[pick] != keys[own] and docs[pick]:
                return pick
        others = [d for d in range(len(docs)) if keys[d] != keys[own] and docs[d]]
        return rng.choice(others) if others else None

    def random_segment(
        self, docs: list[list[Segment]], keys: list[int], own: int, target: int, rng: random.Random
    ) -> Segment | None:
        pick = self.other_document(docs, keys, own, rng)
        if pick is None:
            return None
        other = docs[pick]
        picked, length = [], 0
        for segment in other[rng.randrange(len(other)) :]:
            picked.append(segment)
            length += len(segment)
            if length >= target:
                break
        return concat(picked)

    def document_pairs(
        self, docs: list[list[Segment]], keys: list[int], index: int, rng: random.Random
    ) -> Iterator[dict[str, Any]]:
        doc = docs[index]
        # drawn once per document, as the reference does
        target = self.max_tokens if rng.random() >= self.short_seq_prob else rng.randint(2, self.max_tokens)
        chunk: list[Segment] = []
        length = i = 0
        while i < len(doc):
            chunk.append(doc[i])
            length += len(doc[i])
            if i == len(doc) - 1 or length >= target:
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
                b = self.random_segment(docs, keys, index, max(1, target - len(a)), rng) if is_random else None
                if b is not None:
                    # the sentences not used for A are read again for the next pair
                    i -= len(chunk) - a_end
                elif len(chunk) > a_end:
                    # no other document in the group (its last, short one): the true next segment keeps the pair
                    b, is_random = concat(chunk[a_end:]), False
                if b is not None:
                    a, b = truncate_pair(a, b, self.max_tokens, rng)
                    yield pair_example(a, b, is_random, self.cls_id, self.sep_id)
                chunk, length = [], 0
            i += 1

    def group_examples(
        self, docs: list[list[Segment]], rng: random.Random, keys: list[int] | None = None
    ) -> list[dict[str, Any]]:
        keys = list(range(len(docs))) if keys is None else keys
        examples = [
            {**e, "document": index} for index in range(len(docs)) for e in self.document_pairs(docs, keys, index, rng)
        ]
        # consecutive pairs of one document would otherwise share a batch
        rng.shuffle(examples)
        return examples


def packed_examples(
    docs: list[list[Segment]], max_length: int, cls_id: int, sep_id: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Documents back to back, [SEP] between them, cut into full-length `[CLS] ... [SEP]` sequences.

    The document order is shuffled so each epoch cuts the text at other places; a group's short tail is dropped.
    """
    order = [d for d in rng.sample(range(len(docs)), len(docs)) if docs[d]]
    stream = concat([s for d in order for s in [*docs[d], Segment([sep_id], [1])]])
    # where each document starts in the stream: a sequence is credited to the document it starts in
    starts_at = list(itertools.accumulate((sum(map(len, docs[d])) + 1 for d in order), initial=0))
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
                "word_starts": [1, *starting_a_word(starts), 1],
                "document": order[bisect.bisect_right(starts_at, at) - 1],
            }
        )
    rng.shuffle(examples)
    return examples


def group_rng(seed: int, epoch: int, group: int, first_key: int) -> random.Random:
    # the first document's key separates groups that share an index (each rank counts its own shards from 0)
    return random.Random(f"{seed}/{epoch}/{group}/{first_key}")


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
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    rows = zip(indices, batch["text"], batch["doc_key"], batch["source"], batch["document_start"], strict=True)
    for group, texts, keys, sources, starts in rows:
        docs = tokenize_documents([split_sentences(text) for text in texts], tokenizer, max_tokens)
        rng = group_rng(seed, epoch, group, keys[0])
        if config.no_nsp:
            examples = packed_examples(docs, config.max_seq_length, cls_id, sep_id, rng)
        else:
            builder = PairBuilder(max_tokens, config.short_seq_prob, config.nsp_probability, cls_id, sep_id)
            examples = builder.group_examples(docs, rng, keys)
        for number, example in enumerate(examples):
            example = {**example, "source": sources[example["document"]], "documents": 0 if number else sum(starts)}
            for column in COLUMNS:
                out[column].append(example.get(column))
    if config.no_nsp:
        del out["next_sentence_label"]
    return out


def examples_from_documents(
    corpus: datasets.Dataset | datasets.IterableDataset,
    tokenizer: PreTrainedTokenizerFast,
    config: DataConfig,
    seed: int,
    epoch: int,
    held_out: bool = False,
    num_proc: int | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Documents (a `text` column, and a `source` one when mixed) to examples; works the same on a streamed or an
    in-memory dataset.

    Held-out and training documents are separated before grouping, so random segments B of held-out pairs come
    from other held-out documents only.
    """
    in_memory = isinstance(corpus, datasets.Dataset)
    # num_proc and progress bars exist only for in-memory datasets; the streamed path is driven by the consumer
    kwargs: dict[str, Any] = {"num_proc": num_proc} if in_memory and num_proc and num_proc > 1 else {}
    select = partial(document_pieces, every_nth=config.eval_every_nth_document, held_out=held_out)
    # one document per call: a resumed stream replays at most one document's pieces
    columns = corpus.column_names or list(DOCUMENT_FEATURES)
    remove = [c for c in DOCUMENT_FEATURES if c in columns]
    pieces = corpus.map(select, batched=True, batch_size=1, remove_columns=remove, features=PIECE_FEATURES, **kwargs)
    # never batched per process: with num_proc each worker would start its own groups at its shard boundary
    groups = pieces.batch(batch_size=config.document_buffer_size)
    build = partial(examples_of_group, tokenizer=tokenizer, config=config, seed=seed, epoch=epoch)
    return groups.map(
        build,
        batched=True,
        batch_size=1,
        with_indices=True,
        remove_columns=list(PIECE_FEATURES),
        features=example_features(config.no_nsp),
        **({**kwargs, "desc": "building examples"} if in_memory else {}),
    )
