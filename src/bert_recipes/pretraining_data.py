"""BERT pretraining examples from raw documents: sentence pairs for next-sentence prediction, or packed MLM-only
sequences, streamed or written to disk by the same code.

The pipeline is a document source and three transformations, the same on a streamed `IterableDataset` and on an
Arrow `Dataset`:

0. `documents_of_slots`: one epoch's documents for one (rank, DataLoader worker) slot. Each document goes to exactly
   one slot, before any sentence splitting or tokenization: whole shards (files, Hub shards) for as many rounds as
   every slot gets one, and the few shards left over split by a bit range of their documents' keys. Shard order is
   shuffled per epoch, sources are mixed by weight (`interleave_datasets`), and a shuffle buffer of
   `shuffle_buffer_size` documents reorders them. All of it is seeded by (seed, epoch, slot) and cheap to replay,
   so a resumed stream reads its raw documents again up to its position and tokenizes nothing twice.
1. `document_pieces`: each document is tagged with a key (a CRC of its text) and cut into pieces of at most
   `MAX_PIECE_CHARS` characters, so one enormous document cannot blow up the memory of a group. The key decides
   which split the document belongs to (about one in `eval_every_nth_document` is held out); it depends on the text
   only, so the choice is the same whatever the order, sharding or number of processes.
2. `.batch(document_buffer_size)`: a group of consecutive pieces is the bounded buffer of "recent documents" that
   random segments B are drawn from. The reference implementation draws from the whole corpus held in memory; a
   group of a hundred or so documents gives the same statistics with bounded memory.
3. `examples_of_group`: sentences (blingfire), one batched call of the fast tokenizer for the whole group, then
   google-research/bert's pairing, driven by a `random.Random` seeded with (seed, epoch, group index, key of the
   group's first document). A group's examples therefore depend on its documents alone: replaying a group after
   `load_state_dict` gives the same examples (exact resume), and streamed and on-disk examples are identical.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import blingfire
import datasets
import pyarrow.parquet as pq
import torch
from accelerate.logging import get_logger
from datasets.distributed import split_dataset_by_node
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerFast

from bert_recipes.corpus import CorpusConfig, load_sources, mixture_weights, source_labels
from bert_recipes.errors import UsageError
from bert_recipes.masking import PretrainingCollator

logger = get_logger(__name__)

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


# ---- documents, sentences and segments -------------------------------------------------------------------------


def document_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", errors="replace"))


def is_held_out(key: int, every_nth: int) -> bool:
    return every_nth > 0 and key % every_nth == 0


def cut_into_pieces(text: str, limit: int = MAX_PIECE_CHARS) -> list[str]:
    """Pieces of at most `limit` characters, cut at a paragraph break or else at a space where possible."""
    pieces = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut <= 0:
            cut = text.rfind(" ", 0, limit)
        cut = cut if cut > 0 else limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip()
    return [*pieces, text] if text else pieces


def document_pieces(batch: dict[str, list], *, every_nth: int, held_out: bool) -> dict[str, list]:
    """The documents of one split, tagged with their key and cut into bounded pieces (a batched map)."""
    out: dict[str, list] = {name: [] for name in PIECE_FEATURES}
    # a plain document set (only a text column) is one source
    sources = batch.get("source", [0] * len(batch["text"]))
    for text, source in zip(batch["text"], sources, strict=True):
        if not text or not text.strip():
            continue
        key = document_key(text)
        if is_held_out(key, every_nth) == held_out:
            pieces = cut_into_pieces(text)
            out["text"].extend(pieces)
            out["doc_key"].extend([key] * len(pieces))
            out["source"].extend([source] * len(pieces))
            out["document_start"].extend([1] + [0] * (len(pieces) - 1))
    return out


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


# ---- next-sentence pairs ---------------------------------------------------------------------------------------


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


# ---- packed MLM-only sequences ---------------------------------------------------------------------------------


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


# ---- one epoch's documents for one (rank, worker) slot ---------------------------------------------------------


def slot_of(key: int, slots: int) -> int:
    # the key's high bits: its low ones pick the held-out documents (key % eval_every_nth_document), which would
    # otherwise all fall to one slot
    return (key >> 16) % slots


def belongs_to_slot(row: dict[str, Any], slot: int, slots: int) -> bool:
    return slot_of(document_key(row["text"] or ""), slots) == slot


def tag_source(row: dict[str, Any], index: int) -> dict[str, int]:
    return {"source": index}


def tagged_sources(corpus: CorpusConfig, streaming: bool = True) -> list:
    sources = load_sources(corpus, streaming)
    # declared features: a streamed source of unknown features would otherwise be read ahead to infer them
    return [s.map(partial(tag_source, index=i), features=DOCUMENT_FEATURES) for i, s in enumerate(sources)]


@dataclass(frozen=True)
class SlotShards:
    """The shards of one source that one slot reads: `whole` ones it keeps entirely, and at most one `shared` one
    whose documents it splits with the other `readers` slots of that shard (it keeps those of turn `reader`)."""

    whole: list[int]
    shared: int | None = None
    reader: int = 0
    readers: int = 1


def slot_shards(order: list[int], slot: int, slots: int) -> SlotShards:
    """Whole shards, in `order`, for as many rounds as every slot gets one; each of the few left over goes to every
    len(left)-th slot, so a slot reads at most one shard it does not keep entirely (41 shards on 16 slots: 2 whole
    and part of one, where splitting every shard by document would have every slot read all 41)."""
    rounds = len(order) // slots
    left = order[rounds * slots :]
    whole = order[slot : rounds * slots : slots]
    if not left:
        return SlotShards(whole)
    turn = slot % len(left)
    return SlotShards(whole, left[turn], reader=slot // len(left), readers=len(range(turn, slots, len(left))))


def slot_part(source: datasets.IterableDataset, slot: int, slots: int, rng: random.Random) -> datasets.IterableDataset:
    """The part of one source that a slot reads: its whole shards, and its documents of a shared one."""
    shards = source.num_shards
    # the same order on every slot (one rng per epoch), so the slots split one permutation between them
    plan = slot_shards(rng.sample(range(shards), shards), slot, slots)
    parts = [source.shard(shards, i) for i in plan.whole]
    if plan.shared is not None:
        keep = partial(belongs_to_slot, slot=plan.reader, slots=plan.readers)
        parts.append(source.shard(shards, plan.shared).filter(keep))
    return datasets.concatenate_datasets(parts)


def shuffle_buffer(rows: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """Each row out is a random one of the `size` rows read last (datasets' own buffer, but replayable: datasets
    drops its buffer on resume)."""
    buffer: list[dict] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        at = rng.randrange(size)
        yield buffer[at]
        buffer[at] = row
    rng.shuffle(buffer)
    yield from buffer


def documents_of_slots(
    corpus: CorpusConfig, seed: int, epoch: int, slot_ids: list[int], slots: int, buffer_size: int
) -> Iterator[dict[str, Any]]:
    """One epoch's documents of the given slots (a generator shard holds one): shards in this epoch's order,
    sources mixed by weight, shuffled through a buffer."""
    for slot in slot_ids:
        rng = random.Random(f"{seed}/{epoch}/shards")
        parts = [slot_part(source, slot, slots, rng) for source in tagged_sources(corpus)]
        weights = mixture_weights(corpus)
        if weights:
            mix_seed = zlib.crc32(f"{seed}/{epoch}/{slot}/mixture".encode())
            strategy = corpus.mixture_stopping_strategy
            mixed = datasets.interleave_datasets(parts, weights, seed=mix_seed, stopping_strategy=strategy)
        else:
            mixed = datasets.concatenate_datasets(parts)
        # .iter() rather than iteration: in a DataLoader worker, iterating would split the sources between workers
        # once more
        rows = (
            {"text": text, "source": source}
            for batch in mixed.iter(batch_size=256)
            for text, source in zip(batch["text"], batch["source"], strict=True)
        )
        yield from shuffle_buffer(rows, buffer_size, random.Random(f"{seed}/{epoch}/{slot}/buffer"))


def epoch_documents(
    corpus: CorpusConfig, data: DataConfig, seed: int, epoch: int, slots: int = 1, streaming: bool = True
) -> datasets.IterableDataset | datasets.Dataset:
    """One epoch's training documents as `slots` shards (one per rank and worker), streamed or in Arrow."""
    kwargs = {
        "corpus": corpus,
        "seed": seed,
        "epoch": epoch,
        # a list: datasets makes one generator shard per element, one per slot
        "slot_ids": list(range(slots)),
        "slots": slots,
        "buffer_size": data.shuffle_buffer_size or 10 * data.document_buffer_size,
    }
    kind = datasets.IterableDataset if streaming else datasets.Dataset
    return kind.from_generator(documents_of_slots, features=DOCUMENT_FEATURES, gen_kwargs=kwargs)


def held_out_documents(corpus: CorpusConfig, streaming: bool = True) -> datasets.IterableDataset | datasets.Dataset:
    """Every source in its own order: the held-out set does not depend on the epoch, the seed or the mixture."""
    return datasets.concatenate_datasets(tagged_sources(corpus, streaming))


# ---- the dataset pipeline --------------------------------------------------------------------------------------


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


def build_pretraining_datasets(
    corpus_config: CorpusConfig,
    data_config: DataConfig,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    epoch: int = 0,
    slots: int = 1,
) -> tuple[datasets.IterableDataset, datasets.IterableDataset]:
    """(train, eval) example streams of one epoch, with the training documents split into `slots` shards. Train is
    resumable with state_dict(); eval is the held-out documents."""
    if data_config.prepared_data_dir:
        return load_prepared(data_config, seed, epoch, slots)
    documents = epoch_documents(corpus_config, data_config, seed, epoch, slots)
    train = examples_from_documents(documents, tokenizer, data_config, seed, epoch)
    evaluation = examples_from_documents(held_out_documents(corpus_config), tokenizer, data_config, seed, 0, True)
    return train, evaluation.take(data_config.eval_examples)


# ---- batches for the training loop ----------------------------------------------------------------------------


def batches_of(stream, batch_size: int, num_workers: int = 0) -> StatefulDataLoader:
    """Lists of examples; workers only read, split and tokenize, masking stays in the training process so that its
    generator, saved with the checkpoint, is the one that ran."""
    # its own generator: a DataLoader iterator otherwise draws a seed from the global RNG, so a resumed run
    # (which opens its loaders after restoring that RNG) would get different dropout masks
    return StatefulDataLoader(
        stream, batch_size=batch_size, collate_fn=list, num_workers=num_workers, generator=torch.Generator()
    )


def loader_workers(state: dict[str, Any] | None) -> int:
    """The DataLoader workers a saved loader position was read with (for checkpoints that did not record them)."""
    if not state or "_snapshot" not in state:
        return 0
    return state["_snapshot"]["_main_snapshot"]["_num_workers"]


def masking_collator(tokenizer: PreTrainedTokenizerFast, data: DataConfig, seed: int) -> PretrainingCollator:
    return PretrainingCollator(
        tokenizer, data.mlm_probability, data.whole_word_mask, 8, seed=seed,
        max_predictions_per_seq=data.max_predictions_per_seq,
    )  # fmt: skip


class TrainingStream:
    """This rank's masked training batches, epoch after epoch, each epoch shuffled and paired anew, up to
    `max_epochs` (0: no limit), read by `num_workers` DataLoader workers (0: in this process). `state_dict()` holds
    the loader's position, the masking generator and the counts: a stream loaded from it continues with exactly
    the batch that would have come next."""

    def __init__(
        self,
        corpus: CorpusConfig,
        data: DataConfig,
        tokenizer: PreTrainedTokenizerFast,
        seed: int,
        batch_size: int,
        max_epochs: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
    ):
        self.corpus, self.data, self.tokenizer, self.seed = corpus, data, tokenizer, seed
        self.batch_size, self.max_epochs, self.rank, self.world_size = batch_size, max_epochs, rank, world_size
        self.num_workers = num_workers
        self.collator = masking_collator(tokenizer, data, seed=seed * 1000 + rank)
        self.epoch = 0
        # this rank's training documents read and real tokens per source since the start of the run
        self.documents_seen = 0
        self.source_names = prepared_sources(data) if data.prepared_data_dir else source_labels(corpus)
        self.source_tokens = [0] * len(self.source_names)
        self._loader: StatefulDataLoader | None = None
        self._batches: Iterator[list[dict[str, Any]]] | None = None
        self._resume_position: dict[str, Any] | None = None
        self._produced = 0
        self.last_batch_tokens = 0  # real tokens of the batch next_batch() returned last

    def open_epoch(self, epoch: int) -> datasets.IterableDataset:
        """This rank's examples of one epoch: one document shard per worker."""
        slots = self.world_size * max(1, self.num_workers)
        train, _ = build_pretraining_datasets(self.corpus, self.data, self.tokenizer, self.seed, epoch, slots)
        return split_dataset_by_node(train, self.rank, self.world_size)

    def next_batch(self) -> dict[str, torch.Tensor] | None:
        """The next batch, or None once `max_epochs` are done."""
        while self.max_epochs <= 0 or self.epoch < self.max_epochs:
            if self._batches is None:
                self._start_epoch()
            examples = next(self._batches, None)
            if examples is not None:
                self._produced += 1
                self._count(examples)
                return self.collator(examples)
            if self._produced == 0:
                raise UsageError("the corpus produced no training examples: give it more text or a lower batch size")
            self.epoch += 1
            self._loader = self._batches = None
        return None

    def _count(self, examples: list[dict[str, Any]]) -> None:
        # counted on the host from the examples: the batch's tensors may be on their way to a device
        self.last_batch_tokens = 0
        for example in examples:
            tokens = len(example["input_ids"])
            self.last_batch_tokens += tokens
            # examples prepared before these columns existed count as the first source, without documents
            self.documents_seen += example.get("documents", 0)
            self.source_tokens[example.get("source", 0)] += tokens

    def _start_epoch(self) -> None:
        self._loader = batches_of(self.open_epoch(self.epoch), self.batch_size, self.num_workers)
        resumed = self._resume_position is not None
        if resumed:
            self._loader.load_state_dict(self._resume_position)
            self._resume_position = None
        # a stream resumed at the very end of its epoch rightly yields nothing more
        self._produced = int(resumed)
        self._batches = iter(self._loader)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "loader": self._loader.state_dict() if self._loader is not None else None,
            "collator_generator": self.collator.generator.get_state().tolist(),
            "documents_seen": self.documents_seen,
            # a copy: the stream goes on counting into its own list
            "source_tokens": list(self.source_tokens),
        }

    def restart_at(self, epoch: int, positions: list[dict[str, Any]]) -> None:
        """Start from the beginning of `epoch`, counting the documents and tokens that the saved streams
        `positions` had read (for a resume whose slots differ from the saved run's)."""
        self.epoch = epoch
        self.documents_seen = sum(p["documents_seen"] for p in positions)
        self.source_tokens = [sum(p["source_tokens"][i] for p in positions) for i in range(len(self.source_names))]
        self._resume_position = None
        self._loader = self._batches = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self._resume_position = state["loader"]
        self.collator.generator.set_state(torch.tensor(state["collator_generator"], dtype=torch.uint8))
        self.documents_seen, self.source_tokens = state["documents_seen"], state["source_tokens"]
        self._loader = self._batches = None


def held_out_batches(
    corpus: CorpusConfig, data: DataConfig, tokenizer: PreTrainedTokenizerFast, seed: int, batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """The held-out examples, masked once with a fixed seed so every evaluation scores the same positions."""
    _, held_out = build_pretraining_datasets(corpus, data, tokenizer, seed=seed, epoch=0)
    collator = masking_collator(tokenizer, data, seed)
    return [collator(examples) for examples in batches_of(held_out, batch_size)]


# ---- examples on disk ------------------------------------------------------------------------------------------


def prepared_sources(config: DataConfig) -> list[str]:
    written = json.loads((Path(config.prepared_data_dir) / PREPARED_METADATA).read_text(encoding="utf-8"))
    return written.get("sources", ["corpus"])


def prepared_files(config: DataConfig, split: str) -> tuple[str, ...]:
    # a tuple: datasets would split a list given to from_generator into shards
    return tuple(sorted(str(f) for f in (Path(config.prepared_data_dir) / split).glob("*.parquet")))


def shuffled_rows(path: str, rng: random.Random, reader: int = 0, readers: int = 1) -> Iterator[dict[str, Any]]:
    """The rows of one Parquet shard (those of turn `reader` in `readers`) in a random order: the shard is read once
    into memory and permuted, which no datasets or pyarrow call does without writing the shuffled copy to disk."""
    table = pq.read_table(path)
    keep = range(reader, table.num_rows, readers)
    order = rng.sample(keep, len(keep))
    for at in range(0, len(order), 1024):
        yield from table.take(order[at : at + 1024]).to_pylist()


def prepared_examples_of_slots(
    files: tuple[str, ...], seed: int, epoch: int, slot_ids: list[int], slots: int
) -> Iterator[dict[str, Any]]:
    """One epoch's prepared examples of the given slots: whole shards in this epoch's order, each shuffled."""
    for slot in slot_ids:
        plan = slot_shards(random.Random(f"{seed}/{epoch}/prepared").sample(range(len(files)), len(files)), slot, slots)
        rng = random.Random(f"{seed}/{epoch}/{slot}/rows")
        for index in plan.whole:
            yield from shuffled_rows(files[index], rng)
        if plan.shared is not None:
            yield from shuffled_rows(files[plan.shared], rng, plan.reader, plan.readers)


def rows_in_order(files: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    for path in files:
        yield from pq.read_table(path).to_pylist()


def load_prepared(
    config: DataConfig, seed: int, epoch: int, slots: int = 1
) -> tuple[datasets.IterableDataset, datasets.IterableDataset]:
    """Examples written by prepare_to_disk, streamed from the Parquet shards as they are (no copy in the HF cache):
    the training ones as `slots` shards, in another order each epoch; the held-out ones in their order."""
    check_prepared_data(config)
    train = prepared_files(config, "train")
    # the written columns (examples prepared before `source` and `documents` existed lack them)
    features = datasets.Features.from_arrow_schema(pq.read_schema(train[0]))
    kwargs = {"files": train, "seed": seed, "epoch": epoch, "slot_ids": list(range(slots)), "slots": slots}
    shuffled = datasets.IterableDataset.from_generator(prepared_examples_of_slots, features=features, gen_kwargs=kwargs)
    held_out = datasets.IterableDataset.from_generator(
        rows_in_order, features=features, gen_kwargs={"files": prepared_files(config, "eval")}
    )
    return shuffled, held_out.take(config.eval_examples)


def train_shard_count(examples: int, examples_per_shard: int) -> int:
    """A multiple of 64 (it divides every power-of-two count of ranks times workers up to 64, and so splits into whole
    shards), at most `examples_per_shard` in each, but no shard left empty."""
    needed = -(-examples // examples_per_shard)
    return max(1, min(examples, 64 * -(-needed // 64)))


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
    """Write train/ and eval/ Parquet shards and their settings; each of `dupe_factor` copies is paired anew."""
    output = Path(output_dir)
    if any(output.glob("*/*.parquet")):
        raise UsageError(f"--output_dir '{output}' already holds prepared shards: pass a new directory or delete it")
    if dupe_factor < 1 or num_proc < 1:
        raise UsageError("--dupe_factor and --num_proc must be 1 or more")
    # first: reading the sources in Arrow form also refuses an empty corpus
    held_out = held_out_documents(corpus_config, streaming=False)
    copies = [
        examples_from_documents(
            epoch_documents(corpus_config, data_config, seed, e, streaming=False), tokenizer, data_config, seed, e,
            num_proc=num_proc,
        )
        for e in range(dupe_factor)
    ]  # fmt: skip
    splits = {
        "train": datasets.concatenate_datasets(copies),
        "eval": examples_from_documents(held_out, tokenizer, data_config, seed, 0, held_out=True, num_proc=num_proc),
    }
    if len(splits["train"]) == 0:
        raise UsageError("the corpus produced no training examples: it needs documents of two or more sentences")
    for name, split in splits.items():
        folder = output / name
        folder.mkdir(parents=True, exist_ok=True)
        # held-out examples are read from the start by every rank: only the training ones are split into slots
        needed = max(1, -(-len(split) // examples_per_shard))
        shards = train_shard_count(len(split), examples_per_shard) if name == "train" else needed
        for index in range(shards):
            split.shard(shards, index, contiguous=True).to_parquet(str(folder / f"{name}-{index:05d}.parquet"))
    counts = {name: len(split) for name, split in splits.items()}
    metadata = {
        **asdict(data_config),
        "seed": seed,
        "dupe_factor": dupe_factor,
        "examples": counts,
        "sources": source_labels(corpus_config),
    }
    (output / PREPARED_METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    logger.info(f"wrote {counts['train']:,} training and {counts['eval']:,} held-out examples to {output}")
    return counts
