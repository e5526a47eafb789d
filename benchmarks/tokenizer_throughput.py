"""Tokenizer training time on the embedded corpus (or --corpus), and batch-encode speed of the reloaded fast tokenizer
against transformers' slow (Python) BERT tokenizer on the same text.

    python benchmarks/tokenizer_throughput.py [--corpus FILE] [--vocab_size 30522] [--encode_documents 200]
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import PartialState
from reporting import DEMO_CORPUS
from transformers import AutoTokenizer, BertTokenizerLegacy

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig, iter_texts, load_corpus
from bert_recipes.tokenization import TokenizerConfig, save_tokenizer, train_tokenizer


@dataclass
class BenchConfig:
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus to train on and encode."})
    vocab_size: int = field(default=30522, metadata={"help": "Vocabulary size to train."})
    encode_documents: int = field(default=200, metadata={"help": "Documents to encode with both tokenizers."})
    output_json: str = field(default="benchmarks/results/tokenizer_throughput.json", metadata={"help": "Results."})


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    corpus = CorpusConfig(train_files=[bench.corpus])
    tokenizer, train_seconds = timed(
        lambda: train_tokenizer(iter_texts(load_corpus(corpus)), TokenizerConfig(vocab_size=bench.vocab_size))
    )
    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(tokenizer, tmp)
        # benchmark the reloaded tokenizer: a reload that is slower than the trained one is a known trap
        fast, slow = AutoTokenizer.from_pretrained(tmp), BertTokenizerLegacy.from_pretrained(tmp)
        texts = list(itertools.chain.from_iterable(iter_texts(load_corpus(corpus), 100)))[: bench.encode_documents]
        fast_ids, fast_seconds = timed(lambda: fast(texts)["input_ids"])
        slow_ids, slow_seconds = timed(lambda: [slow(t)["input_ids"] for t in texts])
    tokens = sum(len(ids) for ids in fast_ids)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "corpus_characters": sum(len(t) for t in texts),
        "train_seconds": round(train_seconds, 2),
        "vocab_size": len(tokenizer),
        "encoded_tokens": tokens,
        "fast_tokens_per_second": round(tokens / fast_seconds),
        "slow_tokens_per_second": round(tokens / slow_seconds),
        "fast_over_slow": round(slow_seconds / fast_seconds, 1),
        "identical_ids": fast_ids == slow_ids,
        "config": asdict(bench),
    }
    Path(bench.output_json).parent.mkdir(parents=True, exist_ok=True)
    Path(bench.output_json).write_text(json.dumps(result, indent=2))
    print(
        f"| train {result['vocab_size']:,}-token WordPiece on the demo corpus | {train_seconds:.1f} s |\n"
        f"| batch-encode, reloaded fast tokenizer | {result['fast_tokens_per_second']:,} tokens/s |\n"
        f"| encode one text at a time, slow BertTokenizer | {result['slow_tokens_per_second']:,} tokens/s |\n"
        f"| fast / slow | {result['fast_over_slow']}x (identical ids: {result['identical_ids']}) |"
    )


if __name__ == "__main__":
    main()
