"""Launched by tests/test_data_distributed.py under `accelerate launch`: reads one epoch of this rank's
TrainingStream through its DataLoader workers and records which process sentence-split which document piece.

    accelerate launch --config_file accelerate_configs/multi_cpu.yaml tests/data_probe.py CORPUS TOKENIZER OUT WORKERS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from accelerate import PartialState
from transformers import AutoTokenizer

from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig, TrainingStream, document_key, pairs

CONFIG = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=10)


def record_split_pieces(out: Path) -> None:
    """Wrap the pipeline's sentence splitter (the first heavy step) to log each piece's key, per process: the
    DataLoader workers fork after this, so theirs is wrapped too."""
    split = pairs.split_sentences

    def recorded(text: str) -> list[str]:
        with (out / f"pieces-{os.getpid()}.txt").open("a") as log:
            log.write(f"{document_key(text)}\n")
        return split(text)

    pairs.split_sentences = recorded


def main(corpus_file: str, tokenizer_dir: str, output_dir: str, workers: str) -> None:
    state = PartialState(cpu=True)
    out = Path(output_dir)
    record_split_pieces(out)
    stream = TrainingStream(
        CorpusConfig(train_files=[corpus_file]), CONFIG, AutoTokenizer.from_pretrained(tokenizer_dir), seed=3,
        batch_size=8, max_epochs=1, rank=state.process_index, world_size=state.num_processes,
        num_workers=int(workers),
    )  # fmt: skip
    batches = 0
    while stream.next_batch() is not None:
        batches += 1
    report = {
        "pid": os.getpid(),
        "num_processes": state.num_processes,
        "distributed_type": str(state.distributed_type),
        "batches": batches,
        "documents_seen": stream.documents_seen,
    }
    (out / f"rank{state.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
