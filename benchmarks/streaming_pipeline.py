"""Does the streaming data pipeline keep up with training on a large corpus? Pretrain for --steps steps on the
first --megabytes of the corpus with each of --workers DataLoader worker counts and read the trainer's own
`data_wait_fraction` (time blocked waiting for the next batch, over step time) and tokens/s from metrics.jsonl.
(Memory on a large corpus: benchmarks/streaming_memory.py.)

    python benchmarks/streaming_pipeline.py --corpus ../shared/data/gutenberg-large.jsonl.gz --megabytes 5
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import PartialState
from bench_setup import first_megabytes, pretrain_records
from reporting import save_result

from bert_recipes.config import parse_config


@dataclass
class BenchConfig:
    corpus: str = field(
        default="../shared/data/gutenberg-large.jsonl.gz", metadata={"help": "jsonl(.gz) corpus with a text column."}
    )
    megabytes: float = field(default=5.0, metadata={"help": "Text to train on (MB), from the corpus's first books."})
    sizes: str = field(default="mini,small", metadata={"help": "BERT sizes to train for the starvation measurement."})
    steps: int = field(default=40, metadata={"help": "Training steps per size."})
    workers: str = field(default="0,1,2", metadata={"help": "--dataloader_num_workers values to compare."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per batch."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})


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
    with tempfile.TemporaryDirectory() as tmp:
        corpus, chars, documents = first_megabytes(bench.corpus, bench.megabytes, Path(tmp))
        waits = [
            data_wait(size, workers, corpus, bench, Path(tmp) / f"{size}-{workers}")
            for size in bench.sizes.split(",")
            for workers in bench.workers.split(",")
        ]
    result = {
        "corpus": f"first {documents:,} documents ({chars / 1e6:.1f} M characters) of {bench.corpus}",
        "config": asdict(bench),
        "data_wait": waits,
    }
    print(result["corpus"])
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
