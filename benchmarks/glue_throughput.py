"""GLUE fine-tuning throughput of this recipe against transformers' `run_glue.py`, on the same rows, in one run.

(a) bert-recipes: `GlueTrainingArguments`' Trainer (rows of similar length batched together, each batch padded to
    its longest row, a multiple of 8);
(b) run_glue.py's default (`--pad_to_max_length True`): every row padded to max_seq_length (128),
    `default_data_collator`, random batches;
(c) run_glue.py `--pad_to_max_length False`, its fast setting: random batches, each padded to its longest row by
    `DataCollatorWithPadding`.
All fine-tune the same fresh BERT (30,522-row vocabulary) on SST-2 sample rows for the same number of steps.
Prints training rows/s, real (non-padding) tokens/s and the ratios, and writes JSON.

    python benchmarks/glue_throughput.py --sizes small,base --steps 10 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from bench_setup import SIZES, VOCAB, StepTimer
from reporting import save_result
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from bert_recipes.config import parse_config
from bert_recipes.finetuning import ModelInputCollator
from bert_recipes.glue import GlueTrainingArguments, TaskConfig
from bert_recipes.glue.data import load_task_data, tokenize


@dataclass
class BenchConfig:
    sizes: str = field(default="small,base", metadata={"help": "Comma list of BERT sizes to measure."})
    steps: int = field(default=10, metadata={"help": "Timed optimizer steps per run (after 2 warm-up steps)."})
    batch_size: int = field(default=32, metadata={"help": "Rows per step, the BERT paper's GLUE batch."})
    max_seq_length: int = field(default=128, metadata={"help": "run_glue.py's default, and the paper's."})
    data_dir: str = field(default="data/glue", metadata={"help": "GLUE samples in the original layout."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})


def fresh_model(size: str) -> BertForSequenceClassification:
    layers, hidden = SIZES[size]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden, num_labels=2)  # fmt: skip
    return BertForSequenceClassification(config)


def rows_per_second(size: str, bench: BenchConfig, args: TrainingArguments, rows: datasets.Dataset, collator) -> float:
    """Training rows per second over the timed steps."""
    timer = StepTimer()
    trainer = Trainer(model=fresh_model(size), args=args, train_dataset=rows, data_collator=collator, callbacks=[timer])
    trainer.train()
    return bench.steps * bench.batch_size / sum(timer.seconds[2:])


def recipe_arguments(bench: BenchConfig, out: Path) -> GlueTrainingArguments:
    return GlueTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=bench.batch_size, max_steps=bench.steps + 2,
        logging_steps=1000, save_strategy="no", disable_tqdm=True, mixed_precision="no",  # like for like: fp32
    )  # fmt: skip


def run_glue_arguments(bench: BenchConfig, out: Path) -> TrainingArguments:
    """run_glue.py's: TrainingArguments' own defaults (random batches), the paper's batch and learning rate."""
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=bench.batch_size, max_steps=bench.steps + 2,
        learning_rate=2e-5, report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip


def padded_to_max_length(rows: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """What run_glue.py's default `--pad_to_max_length True` feeds the model."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text_a"], padding="max_length", max_length=max_length, truncation=True)

    return rows.map(encode, batched=True, remove_columns=["text_a", "text_b", "idx"])


def measure(size: str, bench: BenchConfig, data: datasets.DatasetDict, encoded, tokenizer, tmp: Path) -> dict:
    padded = padded_to_max_length(data["train"], tokenizer, bench.max_seq_length)
    default = rows_per_second(size, bench, run_glue_arguments(bench, tmp / "a"), padded, default_data_collator)
    # run_glue.py pads to a multiple of 8 only under fp16; these runs are fp32
    dynamic = DataCollatorWithPadding(tokenizer)
    fast = rows_per_second(size, bench, run_glue_arguments(bench, tmp / "b"), encoded["train"], dynamic)
    ours = rows_per_second(
        size, bench, recipe_arguments(bench, tmp / "c"), encoded["train"], ModelInputCollator(tokenizer)
    )
    return {
        "size": size,
        "run_glue_rows_per_second": round(default, 1),
        "run_glue_dynamic_padding_rows_per_second": round(fast, 1),
        "recipe_rows_per_second": round(ours, 1),
        "speedup": round(ours / default, 2),
        "speedup_over_dynamic_padding": round(ours / fast, 2),
    }


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    data = load_task_data(TaskConfig(task_name="sst2", data_dir=bench.data_dir), "sst2")
    encoded = tokenize(data, tokenizer, bench.max_seq_length)
    lengths = encoded["train"]["length"]
    mean_length = sum(lengths) / len(lengths)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(size, bench, data, encoded, tokenizer, Path(tmp) / size) for size in bench.sizes.split(",")]
    for row in rows:
        row["recipe_real_tokens_per_second"] = round(row["recipe_rows_per_second"] * mean_length)
    result = {
        "train_rows": len(lengths),
        "mean_tokens_per_row": round(mean_length, 1),
        "config": asdict(bench),
        "rows": rows,
    }
    print(f"SST-2 sample: {len(lengths)} train rows, {mean_length:.1f} tokens per row on average")
    save_result(
        "glue_throughput",
        result,
        ["size", "run_glue.py rows/s (pad to max)", "run_glue.py --pad_to_max_length False", "recipe rows/s",
         "speedup (vs pad to max / vs dynamic)", "recipe real tokens/s"],
        [
            [r["size"], r["run_glue_rows_per_second"], r["run_glue_dynamic_padding_rows_per_second"],
             r["recipe_rows_per_second"], f"{r['speedup']}x / {r['speedup_over_dynamic_padding']}x",
             f"{r['recipe_real_tokens_per_second']:,}"]
            for r in rows
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
