"""Examples/s and tokens/s of the pretraining data pipeline, side by side in one run: the streamed pipeline,
prepare_data (Parquet shards written) with 1 and 2 processes, and a straightforward port of the reference approach
(google-research/bert's create_pretraining_data.py: the slow tokenizer, one sentence at a time, the whole corpus in
memory as the pool of random documents).

    python benchmarks/data_throughput.py [--corpus FILE] [--documents 0] [--tokenizer runs/demo/tokenizer]

The tokenizer is loaded from disk, as a run would (a reloaded tokenizer can be much slower than a fresh one).
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from accelerate import PartialState
from reporting import DEMO_CORPUS
from transformers import AutoTokenizer, BertTokenizerLegacy

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.pretraining_data import (
    DataConfig,
    PairBuilder,
    Segment,
    epoch_documents,
    examples_from_documents,
    prepare_to_disk,
    split_sentences,
)


@dataclass
class BenchConfig:
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "jsonl(.gz) corpus with a text column."})
    documents: int = field(default=0, metadata={"help": "Documents of the corpus to process (0: all)."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example."})
    output_json: str = field(default="benchmarks/results/data_throughput.json", metadata={"help": "Results."})


def reference_port(corpus_file: str, tokenizer_dir: str, config: DataConfig) -> list[dict]:
    """The reference's way: every document read and tokenized sentence by sentence with the slow WordPiece,
    then paired with the whole corpus as the pool of random documents."""
    slow = BertTokenizerLegacy.from_pretrained(tokenizer_dir)
    docs = []
    for row in load_corpus(CorpusConfig(train_files=[corpus_file])):
        segments = []
        for sentence in split_sentences(row["text"]):
            ids = slow.convert_tokens_to_ids(slow.tokenize(sentence))[: config.max_seq_length - 3]
            if ids:
                segments.append(Segment(ids, [1] * len(ids)))
        docs.append(segments)
    builder = PairBuilder(config.max_seq_length - 3, 0.1, 0.5, slow.cls_token_id, slow.sep_token_id)
    return builder.group_examples(docs, random.Random(0))


def streamed(corpus_file: str, tokenizer, config: DataConfig) -> list[dict]:
    documents = epoch_documents(CorpusConfig(train_files=[corpus_file]), config, 0, 0)
    return list(examples_from_documents(documents, tokenizer, config, 0, 0))


def prepared(corpus_file: str, tokenizer, config: DataConfig, num_proc: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        counts = prepare_to_disk(CorpusConfig(train_files=[corpus_file]), config, tokenizer, out, 0, num_proc=num_proc)
    return counts["train"]


def corpus_file(corpus: str, documents: int, folder: str) -> str:
    if documents <= 0:
        return corpus
    path = Path(folder) / "corpus.jsonl.gz"
    with gzip.open(corpus, "rt", encoding="utf-8") as src, gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(itertools.islice(src, documents))
    return str(path)


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    PartialState()
    # a cache hit would time a file copy: every run must build its examples
    datasets.disable_caching()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    config = DataConfig(max_seq_length=bench.max_seq_length, eval_every_nth_document=0)
    with tempfile.TemporaryDirectory() as folder:
        source = corpus_file(bench.corpus, bench.documents, folder)
        reference, reference_seconds = timed(lambda: reference_port(source, bench.tokenizer, config))
        examples, streamed_seconds = timed(lambda: streamed(source, tokenizer, config))
        tokens = sum(len(e["input_ids"]) for e in examples)
        runs = [
            ("reference port (slow tokenizer, one sentence at a time)", reference_seconds, reference),
            ("streamed pipeline", streamed_seconds, examples),
        ]
        for num_proc in (1, 2):
            count, seconds = timed(lambda n=num_proc: prepared(source, tokenizer, config, n))
            # prepare_data writes the streamed examples (a test checks they are identical), so their tokens too
            assert count == len(examples), (count, len(examples))
            runs.append((f"prepare_data.py, {num_proc} process{'es' if num_proc > 1 else ''}", seconds, examples))
    rows = []
    for name, seconds, produced in runs:
        produced_tokens = tokens if produced is examples else sum(len(e["input_ids"]) for e in produced)
        rows.append(
            {
                "pipeline": name,
                "seconds": seconds,
                "examples": len(produced),
                "examples_per_second": len(produced) / seconds,
                "tokens_per_second": produced_tokens / seconds,
            }
        )
    base = rows[0]["tokens_per_second"]
    for row in rows:
        row["tokens_per_second_vs_reference"] = row["tokens_per_second"] / base
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "corpus": source if bench.documents <= 0 else f"first {bench.documents} documents of {bench.corpus}",
        "config": asdict(bench),
        "rows": rows,
    }
    Path(bench.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(bench.output_json).write_text(json.dumps(result, indent=2))
    print("| pipeline | seconds | examples | examples/s | tokens/s | vs reference |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pipeline']} | {r['seconds']:.1f} | {r['examples']:,} | {r['examples_per_second']:,.0f} | "
            f"{r['tokens_per_second']:,.0f} | {r['tokens_per_second_vs_reference']:.1f}x |"
        )


if __name__ == "__main__":
    main()
