"""Does the streaming data pipeline keep up with training, in flat memory, on a large corpus?

1. Memory: stream at least --megabytes of text (the first books of the corpus) through the training pipeline
   (corpus -> sentences -> NSP pairs -> masked, padded batches), sampling this process's resident memory as it goes.
   Flat means the last samples are no higher than those taken after the first tenth of the text.
2. Starvation: pretrain for --steps steps on the same streamed corpus with each of --workers DataLoader worker
   counts and read the trainer's own `data_wait_fraction` (time blocked waiting for the next batch, over step time)
   and tokens/s from metrics.jsonl.

    python benchmarks/streaming_pipeline.py --corpus ../shared/data/gutenberg-large.jsonl.gz --megabytes 100
"""

from __future__ import annotations

import gzip
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from accelerate import PartialState
from pretrain_throughput import pretrain_records
from reporting import save_result
from tqdm import tqdm
from transformers import AutoTokenizer

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.pretraining_data import DataConfig, batches_of, build_pretraining_datasets, masking_collator


@dataclass
class BenchConfig:
    corpus: str = field(
        default="../shared/data/gutenberg-large.jsonl.gz", metadata={"help": "jsonl(.gz) corpus with a text column."}
    )
    megabytes: float = field(default=100.0, metadata={"help": "Text to stream for the memory measurement (MB)."})
    sizes: str = field(default="mini,small", metadata={"help": "BERT sizes to train for the starvation measurement."})
    steps: int = field(default=40, metadata={"help": "Training steps per size."})
    workers: str = field(default="0,1,2", metadata={"help": "--dataloader_num_workers values to compare."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per batch."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})


def first_megabytes(source: str, megabytes: float, folder: Path) -> tuple[str, int, int]:
    """The first documents of `source` holding at least `megabytes` of text, as an uncompressed jsonl file."""
    path, chars, documents = folder / "corpus.jsonl", 0, 0
    with gzip.open(source, "rt", encoding="utf-8") as src, path.open("w", encoding="utf-8") as out:
        for line in src:
            out.write(line)
            chars += len(json.loads(line)["text"])
            documents += 1
            if chars >= megabytes * 1e6:
                break
    return str(path), chars, documents


def resident_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def memory_while_streaming(corpus: str, chars: int, bench: BenchConfig, tokenizer) -> dict:
    data = DataConfig(max_seq_length=128, eval_every_nth_document=0)
    stream = build_pretraining_datasets(CorpusConfig(train_files=[corpus]), data, tokenizer, seed=0)[0]
    collator = masking_collator(tokenizer, data, seed=0)
    batches = (collator(examples) for examples in batches_of(stream, bench.batch_size))
    # the tokens this much text yields, estimated at ~4.5 characters per token, only paces the samples
    expected_batches = chars / 4.5 / (bench.batch_size * 128)
    samples, tokens, start = [], 0, time.perf_counter()
    for i, batch in enumerate(tqdm(batches, unit="batch", mininterval=5)):
        tokens += int(batch["attention_mask"].sum())
        if i % max(1, int(expected_batches / 50)) == 0:
            samples.append((tokens, resident_mb()))
    seconds = time.perf_counter() - start
    samples.append((tokens, resident_mb()))
    after_first_tenth = [mb for t, mb in samples if t >= tokens / 10]
    return {
        "characters": chars,
        "tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / seconds),
        "rss_mb_at_10_percent": round(after_first_tenth[0], 1),
        "rss_mb_peak_after_10_percent": round(max(after_first_tenth), 1),
        "rss_mb_at_end": round(samples[-1][1], 1),
        "rss_growth_mb_10_to_100_percent": round(samples[-1][1] - after_first_tenth[0], 1),
        "rss_samples": [(t, round(mb, 1)) for t, mb in samples],
    }


def data_wait(size: str, workers: str, corpus: str, bench: BenchConfig, out: Path) -> dict:
    records = pretrain_records(
        size, out, bench.tokenizer, bench.batch_size, 128, bench.steps,
        "--train_files", corpus, "--dataloader_num_workers", workers,
    )  # fmt: skip
    steady = records[1:]  # the first batch waits for the first documents to be read and paired
    return {
        "size": size,
        "workers": int(workers),
        "first_step_data_wait_fraction": round(records[0]["data_wait_fraction"], 4),
        "data_wait_fraction": round(sum(r["data_wait_fraction"] for r in steady) / len(steady), 4),
        "max_step_data_wait_fraction": round(max(r["data_wait_fraction"] for r in steady), 4),
        "tokens_per_second": round(sum(r["tokens_per_second"] for r in steady) / len(steady)),
    }


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    if not Path(bench.corpus).is_file():
        raise SystemExit(f"error: --corpus {bench.corpus} not found: pass a large jsonl(.gz) corpus with a text field")
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        corpus, chars, documents = first_megabytes(bench.corpus, bench.megabytes, Path(tmp))
        memory = memory_while_streaming(corpus, chars, bench, tokenizer)
        waits = [
            data_wait(size, workers, corpus, bench, Path(tmp) / f"{size}-{workers}")
            for size in bench.sizes.split(",")
            for workers in bench.workers.split(",")
        ]
    result = {
        "corpus": f"first {documents:,} documents ({chars / 1e6:.1f} M characters) of {bench.corpus}",
        "config": asdict(bench),
        "memory": memory,
        "data_wait": waits,
    }
    m = memory
    print(result["corpus"])
    print(
        f"streamed {m['tokens']:,} tokens in {m['seconds']:.0f} s ({m['tokens_per_second']:,} tokens/s); resident "
        f"memory {m['rss_mb_at_10_percent']:.0f} MB after 10% of the text, peak {m['rss_mb_peak_after_10_percent']:.0f}"
        f" MB after that, {m['rss_mb_at_end']:.0f} MB at the end"
    )
    save_result(
        "streaming_pipeline",
        result,
        ["size", "workers", "tokens/s", "time waiting for data (mean over steps 2+)", "worst step", "first step"],
        [
            [w["size"], w["workers"], f"{w['tokens_per_second']:,}", f"{100 * w['data_wait_fraction']:.2f}%",
             f"{100 * w['max_step_data_wait_fraction']:.2f}%", f"{100 * w['first_step_data_wait_fraction']:.1f}%"]
            for w in waits
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
