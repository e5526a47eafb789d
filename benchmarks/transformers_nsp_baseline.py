"""Baseline (a) of benchmarks/data_throughput.py, run by it inside a throwaway venv holding transformers 4.57.6:
time `TextDatasetForNextSentencePrediction` (the transformers-examples NSP dataset, removed in 5.x) end to end on a
one-sentence-per-line file and print the counts as JSON.

    VENV/bin/python benchmarks/transformers_nsp_baseline.py TOKENIZER_DIR SENTENCES_FILE MAX_SEQ_LENGTH
"""

import json
import resource
import sys
import time

import transformers
from transformers import BertTokenizerFast
from transformers.data.datasets import TextDatasetForNextSentencePrediction


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(tokenizer_dir: str, sentences_file: str, max_seq_length: str) -> None:
    start, cpu = time.perf_counter(), cpu_seconds()
    tokenizer = BertTokenizerFast.from_pretrained(tokenizer_dir)
    dataset = TextDatasetForNextSentencePrediction(
        tokenizer, sentences_file, block_size=int(max_seq_length), overwrite_cache=True
    )
    report = {
        "transformers": transformers.__version__,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu_seconds() - cpu,
        "examples": len(dataset),
        "tokens": sum(len(e["input_ids"]) for e in dataset.examples),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:])
