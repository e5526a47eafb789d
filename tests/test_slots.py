"""Work split into (rank, DataLoader worker) slots: every document or example read by one slot, and no slot opening
shards it does not keep, at shard counts that do and do not divide by the slots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets.distributed import split_dataset_by_node

import bert_recipes.corpus
import bert_recipes.data.prepared as prepared
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import (
    DataConfig,
    batches_of,
    epoch_documents,
    load_prepared,
    slot_shards,
    train_shard_count,
)


@pytest.mark.parametrize(("shards", "slots"), [(3, 2), (5, 4), (41, 16), (1, 2), (2, 8), (64, 16), (7, 3)])
def test_each_shard_is_read_whole_by_one_slot_or_split_by_the_fewest(shards, slots):
    plans = [slot_shards(list(range(shards)), slot, slots) for slot in range(slots)]
    whole = [s for p in plans for s in p.whole]
    assert len(whole) == len(set(whole)) == shards // slots * slots
    assert all(len(p.whole) == shards // slots for p in plans)
    shared = [p for p in plans if p.shared is not None]
    # a slot opens at most one shard it does not keep whole, and only when the shards do not divide
    assert len(shared) == (slots if shards % slots else 0)
    for shard in {p.shared for p in shared}:
        turns = sorted((p.reader, p.readers) for p in shared if p.shared == shard)
        assert [reader for reader, _ in turns] == list(range(len(turns)))
        assert all(readers == len(turns) for _, readers in turns)
    assert set(whole) | {p.shared for p in shared} == set(range(shards))
    opened = sum(len(p.whole) + (p.shared is not None) for p in plans)
    # against every slot reading every shard, which splitting all of them by document did
    assert opened == shards // slots * slots + (slots if shards % slots else 0) <= shards + slots


def write_text_files(folder: Path, files: int, per_file: int) -> list[str]:
    paths = []
    for f in range(files):
        path = folder / f"part{f}.txt"
        docs = [f"Document {d} of file {f} says one thing. Then it says another thing." for d in range(per_file)]
        path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        paths.append(str(path))
    return paths


class FileReads:
    """Wraps the text reader datasets calls for each shard: the files each slot opens and the documents read."""

    def __init__(self, monkeypatch) -> None:
        self.files: list[str] = []
        self.documents = 0
        reader = bert_recipes.corpus.read_text_documents

        def counting(files: list[str]):
            self.files.extend(Path(f).name for f in files)
            for document in reader(files):
                self.documents += 1
                yield document

        monkeypatch.setattr(bert_recipes.corpus, "read_text_documents", counting)

    def take(self) -> tuple[list[str], int]:
        read = (sorted(self.files), self.documents)
        self.files, self.documents = [], 0
        return read


@pytest.mark.parametrize(("files", "slots"), [(3, 2), (5, 4)])
def test_a_slot_opens_its_whole_files_and_one_shared_file(tmp_path, monkeypatch, files, slots):
    per_file = 30
    paths = write_text_files(tmp_path, files, per_file)
    reads = FileReads(monkeypatch)
    config = DataConfig(eval_every_nth_document=0, shuffle_buffer_size=1)
    documents = epoch_documents(CorpusConfig(train_files=paths), config, seed=3, epoch=0, slots=slots)
    kept, opened = [], []
    for slot in range(slots):
        kept.extend(row["text"] for row in split_dataset_by_node(documents, slot, slots))
        opened.append(reads.take())
    # each document kept by exactly one slot
    corpus = [doc for p in paths for doc in Path(p).read_text(encoding="utf-8").strip().split("\n\n")]
    assert len(corpus) == files * per_file and sorted(kept) == sorted(corpus)
    shared = Counter(name for names, _ in opened for name in names)
    assert all(len(names) == 2 for names, _ in opened), f"one whole file and one shared, got {opened}"
    assert sorted(shared.values()) == [1] * (files - 1) + [slots], "the file left over is read by every slot"
    # documents decoded: the whole files once, the shared one by each slot (before: every file by every slot)
    assert sum(read for _, read in opened) == (files - 1) * per_file + slots * per_file < files * per_file * slots


def write_prepared(folder: Path, files: int, per_file: int) -> DataConfig:
    (folder / "train").mkdir(parents=True)
    (folder / "eval").mkdir()
    for f in range(files):
        ids = [[2, 1000 * f + r, 3] for r in range(per_file)]
        table = pa.table({"input_ids": ids, "source": [0] * per_file, "documents": [1] * per_file})
        pq.write_table(table, folder / "train" / f"train-{f:05d}.parquet")
    pq.write_table(table.slice(0, 4), folder / "eval" / "eval-00000.parquet")
    (folder / "data_config.json").write_text(json.dumps({"max_seq_length": 3, "no_nsp": True}), encoding="utf-8")
    return DataConfig(max_seq_length=3, no_nsp=True, prepared_data_dir=str(folder), eval_examples=3)


@pytest.mark.parametrize(("files", "slots"), [(3, 2), (5, 4), (64, 16)])
def test_prepared_shards_are_read_whole_by_one_slot(tmp_path, monkeypatch, files, slots):
    per_file = 40
    config = write_prepared(tmp_path, files, per_file)
    opened: list[str] = []
    read_table = pq.read_table
    monkeypatch.setattr(prepared.pq, "read_table", lambda path, **kw: opened.append(path) or read_table(path))
    kept, per_slot = [], []
    for epoch in (0, 1):
        train, held_out = load_prepared(config, seed=3, epoch=epoch, slots=slots)
        for slot in range(slots):
            rows = [row["input_ids"][1] for row in split_dataset_by_node(train, slot, slots)]
            per_slot.append((len(rows), len(opened)))
            kept.append(rows)
            opened.clear()
    all_rows = sorted(1000 * f + r for f in range(files) for r in range(per_file))
    for epoch in (0, 1):
        assert sorted(r for rows in kept[epoch * slots : (epoch + 1) * slots] for r in rows) == all_rows
    # whole files, and one shared file when they do not divide
    assert all(count == files // slots + bool(files % slots) for _, count in per_slot)
    assert kept[0] != kept[slots], "another order in the next epoch"
    assert len(list(held_out)) == 3


def test_prepared_data_is_written_in_a_multiple_of_64_shards():
    assert train_shard_count(10_000_000, 100_000) == 128
    assert train_shard_count(6_400_000, 100_000) == 64
    assert train_shard_count(500, 100_000) == 64
    assert train_shard_count(20, 100_000) == 20  # no empty shards


@pytest.mark.parametrize("workers", [0, 2])
def test_prepared_examples_read_once_by_two_ranks_and_their_workers(tmp_path, workers):
    """The composition TrainingStream.open_epoch makes: slots = ranks x workers, split by rank, then by worker."""
    config = write_prepared(tmp_path, files=5, per_file=24)
    ranks, slots = 2, 2 * max(1, workers)
    seen = []
    for rank in range(ranks):
        train, _ = load_prepared(config, seed=3, epoch=0, slots=slots)
        for batch in batches_of(split_dataset_by_node(train, rank, ranks), batch_size=4, num_workers=workers):
            seen.extend(row["input_ids"][1] for row in batch)
    assert sorted(seen) == sorted(1000 * f + r for f in range(5) for r in range(24))
