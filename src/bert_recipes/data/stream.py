"""The resumable stream the training loop reads: examples of the slot's documents (streamed or prepared),
batched by torchdata's StatefulDataLoader, masked by the collator, with its position saved in checkpoints; and the
held-out batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerFast

from bert_recipes.corpus import CorpusConfig, source_labels
from bert_recipes.data.config import DataConfig
from bert_recipes.data.documents import epoch_documents, held_out_documents
from bert_recipes.data.pairs import examples_from_documents
from bert_recipes.data.prepared import load_prepared, prepared_sources
from bert_recipes.errors import UsageError
from bert_recipes.masking import PretrainingCollator


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
