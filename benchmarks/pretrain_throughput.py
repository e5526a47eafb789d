"""Pretraining throughput of this recipe against the transformers-examples approach, on the same data, in one run.

(a) bert-recipes: `Pretrainer` (sparse MLM head, packed pairs, padding to a multiple of 8);
(b) the usual alternative: `Trainer` + `BertForPreTraining` + `DataCollatorForLanguageModeling` (dense MLM head).
Both use a 30,522-row vocabulary as BERT does, sequence length 128 and the same examples. Prints real
(non-padding) tokens/s, model FLOP/s and their fraction of this machine's fp32 matmul FLOP/s, and writes JSON.

    python benchmarks/pretrain_throughput.py --sizes small,mini --steps 12 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from accelerate.state import AcceleratorState, GradientState
from reporting import DEMO_CORPUS, machine, print_table, save_json
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForPreTraining,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.modeling import ModelConfig
from bert_recipes.pretraining_data import DataConfig, build_pretraining_datasets
from bert_recipes.trainer import Pretrainer, TrainConfig

SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
VOCAB = 30522


@dataclass
class BenchConfig:
    sizes: str = field(default="small,mini", metadata={"help": "Comma list of BERT sizes to measure."})
    steps: int = field(default=12, metadata={"help": "Timed optimizer steps per run (after 2 warm-up steps)."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus both trainers read."})
    output_json: str = field(default="benchmarks/results/pretrain_throughput.json", metadata={"help": "Results."})


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def model_flops_per_token(layers: int, hidden: int, seq: int, mlm_fraction: float = 0.15) -> float:
    """Training FLOPs (3x forward) per real token of the work the model must do: the encoder (dense layers and
    attention), the pooler and NSP head per sequence, and the MLM head on the masked positions only."""
    encoder = layers * (2 * 12 * hidden * hidden + 2 * 2 * seq * hidden)
    pooler_nsp = (2 * hidden * hidden + 2 * 2 * hidden) / seq
    mlm_head = mlm_fraction * (2 * hidden * hidden + 2 * hidden * VOCAB)
    return 3 * (encoder + pooler_nsp + mlm_head)


def pretrain_records(
    size: str, out: Path, tokenizer: str, batch_size: int, seq_length: int, steps: int, *extra: str
) -> list[dict]:
    """Run the recipe's Pretrainer for `steps` steps of one BERT size and return its metrics.jsonl records."""
    layers, hidden = SIZES[size]
    args = [
        "--tokenizer_name_or_path", tokenizer, "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--hidden_size", str(hidden), "--num_hidden_layers", str(layers), "--vocab_size", str(VOCAB),
        "--max_seq_length", str(seq_length), "--per_device_train_batch_size", str(batch_size),
        "--max_steps", str(steps), "--logging_steps", "1", "--eval_steps", "0", "--save_steps", "0",
        "--report_to", "none", "--eval_every_nth_document", "0", *extra,
    ]  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    Pretrainer(*parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args)).run()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def ours(size: str, bench: BenchConfig, out: Path) -> float:
    records = pretrain_records(
        size, out, bench.tokenizer, bench.batch_size, bench.seq_length, bench.steps + 2, "--train_files", bench.corpus
    )[2:]
    return sum(r["tokens_per_second"] for r in records) / len(records)


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def baseline(size: str, bench: BenchConfig, examples: list[dict], out: Path) -> float:
    layers, hidden = SIZES[size]
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)  # fmt: skip
    timer = StepTimer(warmup=2)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=bench.batch_size, max_steps=bench.steps + 2,
        learning_rate=1e-4, report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True,
        dataloader_drop_last=True,
    )  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    Trainer(BertForPreTraining(config), args, train_dataset=examples, data_collator=collator, callbacks=[timer]).train()
    mean_length = sum(len(e["input_ids"]) for e in examples) / len(examples)
    return bench.steps * bench.batch_size * mean_length / (timer.end - timer.start)


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    data = DataConfig(max_seq_length=bench.seq_length, eval_every_nth_document=0)
    stream = build_pretraining_datasets(CorpusConfig(train_files=[bench.corpus]), data, tokenizer, seed=0)[0]
    needed = (bench.steps + 2) * bench.batch_size
    examples = [
        {
            "input_ids": r["input_ids"],
            "token_type_ids": r["token_type_ids"],
            "next_sentence_label": r["next_sentence_label"],
        }
        for r in itertools.islice(stream, needed)
    ]
    peak = matmul_flops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in bench.sizes.split(","):
            layers, hidden = SIZES[size]
            flops = model_flops_per_token(layers, hidden, bench.seq_length)
            theirs = baseline(size, bench, examples, Path(tmp) / f"trainer-{size}")
            mine = ours(size, bench, Path(tmp) / f"ours-{size}")
            rows.append(
                {
                    "size": size,
                    "trainer_tokens_per_second": round(theirs),
                    "recipe_tokens_per_second": round(mine),
                    "speedup": round(mine / theirs, 2),
                    "recipe_model_tflops": round(mine * flops / 1e12, 4),
                    "recipe_mfu_of_matmul": round(mine * flops / peak, 3),
                    "trainer_mfu_of_matmul": round(theirs * flops / peak, 3),
                }
            )
    result = {
        "machine": f"{machine()}, fp32",
        "matmul_2048_gflops": round(peak / 1e9, 1),
        "config": asdict(bench),
        "rows": rows,
    }
    save_json(bench.output_json, result)
    print(f"fp32 2048x2048 matmul: {peak / 1e9:.1f} GFLOP/s")
    print_table(
        ["size", "Trainer tokens/s", "recipe tokens/s", "speedup", "recipe model GFLOP/s",
         "recipe share of matmul FLOP/s", "Trainer share"],
        [
            [r["size"], f"{r['trainer_tokens_per_second']:,}", f"{r['recipe_tokens_per_second']:,}",
             f"{r['speedup']}x", f"{1000 * r['recipe_model_tflops']:.1f}", f"{100 * r['recipe_mfu_of_matmul']:.0f}%",
             f"{100 * r['trainer_mfu_of_matmul']:.0f}%"]
            for r in rows
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
