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

config.py holds the settings, documents.py step 0 and 1, pairs.py step 3, stream.py what the training loop reads,
prepared.py the examples on disk.
"""

from bert_recipes.data.config import MAX_PIECE_CHARS, DataConfig, validate_data_config
from bert_recipes.data.documents import cut_into_pieces, document_key, epoch_documents, is_held_out, slot_shards
from bert_recipes.data.pairs import PairBuilder, Segment, examples_from_documents, split_sentences
from bert_recipes.data.prepared import load_prepared, prepare_to_disk, train_shard_count
from bert_recipes.data.stream import (
    TrainingStream,
    batches_of,
    build_pretraining_datasets,
    held_out_batches,
    loader_workers,
)

__all__ = [
    "MAX_PIECE_CHARS",
    "DataConfig",
    "PairBuilder",
    "Segment",
    "TrainingStream",
    "batches_of",
    "build_pretraining_datasets",
    "cut_into_pieces",
    "document_key",
    "epoch_documents",
    "examples_from_documents",
    "held_out_batches",
    "is_held_out",
    "load_prepared",
    "loader_workers",
    "prepare_to_disk",
    "slot_shards",
    "split_sentences",
    "train_shard_count",
    "validate_data_config",
]
