"""One epoch's documents for one (rank, DataLoader worker) slot: each document keyed by a checksum of its text
(which decides whether it is held out), cut into pieces of bounded size, assigned to exactly one slot by whole
shards or key ranges, shuffled per epoch with a replayable buffer, sources mixed by weight."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import datasets

from bert_recipes.corpus import CorpusConfig, load_sources, mixture_weights
from bert_recipes.data.config import DOCUMENT_FEATURES, MAX_PIECE_CHARS, PIECE_FEATURES, DataConfig


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
