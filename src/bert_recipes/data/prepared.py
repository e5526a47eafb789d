"""Examples written once to Parquet (`recipes/prepare_data.py`) and read back per slot: whole shards in a new
order each epoch, each shard's rows permuted, one shard in memory at a time."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
from accelerate.logging import get_logger
from transformers import PreTrainedTokenizerFast

from bert_recipes.corpus import CorpusConfig, source_labels
from bert_recipes.data.config import PREPARED_METADATA, DataConfig, check_prepared_data
from bert_recipes.data.documents import epoch_documents, held_out_documents, slot_shards
from bert_recipes.data.pairs import examples_from_documents
from bert_recipes.errors import UsageError

logger = get_logger(__name__)


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
