"""Does the training stream stay in flat memory on a large corpus, with and without DataLoader workers?

Streams at least --megabytes of text (the first books of the corpus) through the trainer's TrainingStream (corpus ->
sentences -> NSP pairs -> masked, padded batches) for one epoch per worker count, sampling the resident memory of
this process plus its workers as it goes. Flat means the samples after the first tenth of the text stay near the
one taken there. Resident sizes are summed over processes, so pages the workers share with this process count twice:
an upper bound.

    python benchmarks/streaming_memory.py --corpus ../shared/data/gutenberg-large.jsonl.gz --megabytes 300
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from accelerate import PartialState
from bench_setup import first_megabytes
from reporting import save_result
from tqdm import tqdm
from transformers import AutoTokenizer

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig, TrainingStream


@dataclass
class BenchConfig:
    corpus: str = field(
        default="../shared/data/gutenberg-large.jsonl.gz", metadata={"help": "jsonl(.gz) corpus with a text column."}
    )
    megabytes: float = field(default=300.0, metadata={"help": "Text to stream (MB), from the corpus's first books."})
    workers: str = field(default="0,2", metadata={"help": "--dataloader_num_workers values to measure."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per batch."})
    samples: int = field(default=60, metadata={"help": "Memory samples per run, spread over the text."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})


def resident_mb() -> float:
    """This process and its DataLoader workers."""
    process = psutil.Process()
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 1e6


def memory_while_streaming(corpus: str, chars: int, workers: int, bench: BenchConfig, tokenizer) -> dict:
    data = DataConfig(max_seq_length=128, eval_every_nth_document=0)
    stream = TrainingStream(
        CorpusConfig(train_files=[corpus]), data, tokenizer, seed=0, batch_size=bench.batch_size, max_epochs=1,
        num_workers=workers,
    )  # fmt: skip
    # ~4.5 characters per token; the estimate only paces the samples
    every = max(1, int(chars / 4.5 / (bench.batch_size * 128) / bench.samples))
    samples, tokens, batches, start = [], 0, 0, time.perf_counter()
    with tqdm(unit="batch", mininterval=10) as progress:
        while (batch := stream.next_batch()) is not None:
            tokens += int(batch["attention_mask"].sum())
            if batches % every == 0:
                samples.append((tokens, resident_mb()))
            batches += 1
            progress.update()
    seconds = time.perf_counter() - start
    after_first_tenth = [mb for t, mb in samples if t >= tokens / 10]
    return {
        "workers": workers,
        "tokens": tokens,
        "documents_seen": stream.documents_seen,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / seconds),
        "rss_mb_at_10_percent": round(after_first_tenth[0], 1),
        "rss_mb_peak_after_10_percent": round(max(after_first_tenth), 1),
        "rss_mb_last_sample": round(samples[-1][1], 1),
        "rss_samples": [(t, round(mb, 1)) for t, mb in samples],
    }


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    if not Path(bench.corpus).is_file():
        raise SystemExit(f"error: --corpus {bench.corpus} not found: pass a large jsonl(.gz) corpus with a text field")
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        corpus, chars, documents = first_megabytes(bench.corpus, bench.megabytes, Path(tmp))
        runs = [memory_while_streaming(corpus, chars, int(w), bench, tokenizer) for w in bench.workers.split(",")]
    text = f"{chars / 1e6:.0f} M characters ({documents:,} documents)"
    result = {"corpus": f"first {text} of {bench.corpus}", "config": asdict(bench), "runs": runs}
    header = ["workers", "text streamed", "tokens", "tokens/s", "resident MB after 10% of the text",
              "peak after that", "last sample"]  # fmt: skip
    rows = [
        [r["workers"], text, f"{r['tokens']:,}", f"{r['tokens_per_second']:,}", f"{r['rss_mb_at_10_percent']:,.0f}",
         f"{r['rss_mb_peak_after_10_percent']:,.0f}", f"{r['rss_mb_last_sample']:,.0f}"]
        for r in runs
    ]  # fmt: skip
    save_result("streaming_memory", result, header, rows)


if __name__ == "__main__":
    main()
