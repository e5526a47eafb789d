"""GLUE fine-tuning throughput of this recipe against the `run_glue.py`-style Trainer setup, on the same rows, in one
run.

(a) bert-recipes: `glue.py`'s Trainer (rows of similar length batched together, each batch padded to its longest row,
    a multiple of 8);
(b) the transformers example's defaults: every row padded to max_seq_length (128), random batches.
Both fine-tune the same fresh BERT (30,522-row vocabulary) on SST-2 sample rows for the same number of steps.
Prints training rows/s, real (non-padding) tokens/s and the ratio, and writes JSON.

    python benchmarks/glue_throughput.py --sizes small,base --steps 10 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from pretrain_throughput import SIZES, VOCAB, StepTimer
from reporting import machine, print_table, save_json
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from bert_recipes.config import parse_config
from bert_recipes.glue import GlueConfig, ModelInputCollator, load_task_data, tokenize, training_arguments


@dataclass
class BenchConfig:
    sizes: str = field(default="small,base", metadata={"help": "Comma list of BERT sizes to measure."})
    steps: int = field(default=10, metadata={"help": "Timed optimizer steps per run (after 2 warm-up steps)."})
    batch_size: int = field(default=32, metadata={"help": "Rows per step, the BERT paper's GLUE batch."})
    max_seq_length: int = field(default=128, metadata={"help": "run_glue.py's default, and the paper's."})
    data_dir: str = field(default="data/glue", metadata={"help": "GLUE samples in the original layout."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    output_json: str = field(default="benchmarks/results/glue_throughput.json", metadata={"help": "Results."})


def fresh_model(size: str) -> BertForSequenceClassification:
    layers, hidden = SIZES[size]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config)


def timed_train(trainer: Trainer, timer: StepTimer, steps: int, batch_size: int) -> float:
    """Training rows per second over the timed steps."""
    trainer.train()
    return steps * batch_size / (timer.end - timer.start)


def ours(size: str, bench: BenchConfig, encoded: datasets.DatasetDict, tokenizer, out: Path) -> float:
    config = GlueConfig(
        output_dir=str(out), max_seq_length=bench.max_seq_length, per_device_train_batch_size=bench.batch_size,
        max_steps=bench.steps + 2, logging_steps=1000,
    )  # fmt: skip
    timer = StepTimer(warmup=2)
    trainer = Trainer(
        model=fresh_model(size),
        args=training_arguments(config, out, config.learning_rate),
        train_dataset=encoded["train"],
        data_collator=ModelInputCollator(tokenizer),
        callbacks=[timer],
    )
    return timed_train(trainer, timer, bench.steps, bench.batch_size)


def run_glue_style(size: str, bench: BenchConfig, rows: datasets.Dataset, tokenizer, out: Path) -> float:
    """What transformers' run_glue.py does by default: pad_to_max_length, default_data_collator, random batches."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text_a"], padding="max_length", max_length=bench.max_seq_length, truncation=True)

    padded = rows.map(encode, batched=True, remove_columns=["text_a", "text_b", "idx"])
    timer = StepTimer(warmup=2)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=bench.batch_size, max_steps=bench.steps + 2,
        learning_rate=2e-5, report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    trainer = Trainer(
        model=fresh_model(size),
        args=args,
        train_dataset=padded,
        data_collator=default_data_collator,
        callbacks=[timer],
    )
    return timed_train(trainer, timer, bench.steps, bench.batch_size)


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    data = load_task_data(GlueConfig(task_name="sst2", data_dir=bench.data_dir), "sst2")
    encoded = tokenize(data, tokenizer, bench.max_seq_length)
    lengths = encoded["train"]["length"]
    mean_length = sum(lengths) / len(lengths)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in bench.sizes.split(","):
            theirs = run_glue_style(size, bench, data["train"], tokenizer, Path(tmp) / f"run_glue-{size}")
            mine = ours(size, bench, encoded, tokenizer, Path(tmp) / f"ours-{size}")
            rows.append(
                {
                    "size": size,
                    "run_glue_rows_per_second": round(theirs, 1),
                    "recipe_rows_per_second": round(mine, 1),
                    "run_glue_real_tokens_per_second": round(theirs * mean_length),
                    "recipe_real_tokens_per_second": round(mine * mean_length),
                    "speedup": round(mine / theirs, 2),
                }
            )
    result = {
        "machine": f"{machine()}, fp32",
        "train_rows": len(lengths),
        "mean_tokens_per_row": round(mean_length, 1),
        "config": asdict(bench),
        "rows": rows,
    }
    save_json(bench.output_json, result)
    print(f"SST-2 sample: {len(lengths)} train rows, {mean_length:.1f} tokens per row on average")
    print_table(
        ["size", "run_glue.py-style rows/s", "recipe rows/s", "speedup", "recipe real tokens/s"],
        [
            [r["size"], r["run_glue_rows_per_second"], r["recipe_rows_per_second"], f"{r['speedup']}x",
             f"{r['recipe_real_tokens_per_second']:,}"]
            for r in rows
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
