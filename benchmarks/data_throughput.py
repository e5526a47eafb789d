"""Examples/s and tokens/s of the pretraining data pipeline, side by side in one run:
the streamed pipeline, prepare_data with 1 and 2 processes, and a straightforward port of the reference approach
(google-research/bert: the slow tokenizer, one sentence at a time).

    python benchmarks/data_throughput.py [--documents 200] [--tokenizer runs/demo/tokenizer]
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from accelerate import PartialState
from transformers import AutoTokenizer, BertTokenizerLegacy

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.pretraining_data import (
    DataConfig,
    PairBuilder,
    Segment,
    examples_from_documents,
    split_sentences,
)


@dataclass
class BenchConfig:
    documents: int = field(default=200, metadata={"help": "Documents of the demo corpus to process."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    output_json: str = field(default="benchmarks/results/data_throughput.json", metadata={"help": "Results."})


def reference_port(texts: list[str], tokenizer_dir: str, config: DataConfig) -> list[dict]:
    """The reference's way: slow WordPiece, one sentence at a time, then the same pairing."""
    slow = BertTokenizerLegacy.from_pretrained(tokenizer_dir)
    docs = []
    for text in texts:
        segments = []
        for sentence in split_sentences(text):
            ids = slow.convert_tokens_to_ids(slow.tokenize(sentence))[: config.max_seq_length - 3]
            if ids:
                segments.append(Segment(ids, [1] * len(ids)))
        docs.append(segments)
    builder = PairBuilder(config.max_seq_length - 3, 0.1, 0.5, slow.cls_token_id, slow.sep_token_id)
    return builder.group_examples(docs, random.Random(0))


def timed(fn) -> tuple[list, float]:
    start = time.perf_counter()
    rows = fn()
    return rows, time.perf_counter() - start


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    config = DataConfig(eval_every_nth_document=0, document_buffer_size=32)
    texts = [row["text"] for row in itertools.islice(load_corpus(CorpusConfig()), bench.documents)]
    in_memory = datasets.Dataset.from_dict({"text": texts})
    streamed = datasets.IterableDataset.from_generator(lambda: ({"text": t} for t in texts))
    runs = {
        "reference port (slow tokenizer, one sentence at a time)": lambda: reference_port(
            texts, bench.tokenizer, config
        ),
        "streamed pipeline": lambda: list(examples_from_documents(streamed, tokenizer, config, 0, 0)),
        "prepare_data, 1 process": lambda: examples_from_documents(in_memory, tokenizer, config, 0, 0).to_list(),
        "prepare_data, 2 processes": lambda: examples_from_documents(
            in_memory, tokenizer, config, 0, 0, num_proc=2
        ).to_list(),
    }
    rows = []
    for name, fn in runs.items():
        examples, seconds = timed(fn)
        tokens = sum(len(e["input_ids"]) for e in examples)
        rows.append(
            {"pipeline": name, "examples_per_second": len(examples) / seconds, "tokens_per_second": tokens / seconds}
        )
    base = rows[0]["tokens_per_second"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "documents": bench.documents,
        "characters": sum(map(len, texts)),
        "config": asdict(bench),
        "rows": rows,
    }
    Path(bench.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(bench.output_json).write_text(json.dumps(result, indent=2))
    print("| pipeline | examples/s | tokens/s | vs reference |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pipeline']} | {r['examples_per_second']:,.0f} | {r['tokens_per_second']:,.0f} | "
            f"{r['tokens_per_second'] / base:.1f}x |"
        )


if __name__ == "__main__":
    main()
