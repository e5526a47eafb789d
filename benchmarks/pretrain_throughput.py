"""Pretraining throughput of this recipe against the transformers-examples approach, on the same data, in one run.

(a) bert-recipes: `Pretrainer` (sparse MLM head, packed pairs, padding to a multiple of 8, bert_recipes.dropout,
    fused AdamW), fp32 and bf16, and bf16 with its fastest options (`--max_predictions_per_seq 20
    --torch_compile true`);
(b) the usual alternative: `Trainer` + `BertForPreTraining` + `DataCollatorForLanguageModeling` (dense MLM head),
    at its defaults (fp32) and with `bf16=True`, the flag a user would flip.
All use a 30,522-row vocabulary as BERT does, sequence length 128, the same examples and the same seed; each run goes
twice, in alternating order, and its faster round counts (per-step numbers of both are kept). Prints real
(non-padding) tokens/s and model FLOP/s as a share of this machine's fp32 and bf16 matmul FLOP/s measured in the
same run, and writes benchmarks/results/pretrain_throughput.json.

    python benchmarks/pretrain_throughput.py --sizes small,mini,base --steps 6 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import itertools
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from bench_setup import SIZES, VOCAB, StepTimer, model_flops_per_token, pretrain_records
from reporting import DEMO_CORPUS, save_result
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForPreTraining,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
)

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig, build_pretraining_datasets

COMPILED = ("--max_predictions_per_seq", "20", "--torch_compile", "true")


@dataclass
class BenchConfig:
    sizes: str = field(default="small,mini,base", metadata={"help": "Comma list of BERT sizes to measure."})
    steps: int = field(default=6, metadata={"help": "Timed optimizer steps per run (after the warm-up steps)."})
    warmup: int = field(default=3, metadata={"help": "Untimed first steps (the first bf16 steps are slow)."})
    rounds: int = field(default=2, metadata={"help": "Times each run is repeated; the faster round counts."})
    seed: int = field(default=42, metadata={"help": "Seed of the examples, the models and the masking, both sides."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus both trainers read."})


def matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 20) -> float:
    """The machine's best: the fastest of `repeats` single matmuls (a mean let other jobs on this shared machine
    pull the peak down, and MFU over 100% out)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    fastest = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - start)
    return 2 * n**3 / fastest


def ours(size: str, bench: BenchConfig, out: Path, precision: str, *extra: str) -> list[float]:
    """Tokens/s of each timed step of the recipe."""
    records = pretrain_records(
        size, out, bench.tokenizer, bench.batch_size, bench.seq_length, bench.warmup + bench.steps,
        "--train_files", bench.corpus, "--seed", str(bench.seed), "--mixed_precision", precision, *extra,
    )[bench.warmup :]  # fmt: skip
    return [r["tokens_per_second"] for r in records]


def baseline(size: str, bench: BenchConfig, examples: list[dict], out: Path, bf16: bool) -> list[float]:
    """Tokens/s of each timed step of the Trainer (steps hold `batch_size` examples of the mean length)."""
    layers, hidden = SIZES[size]
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)  # fmt: skip
    timer = StepTimer()
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=bench.batch_size, max_steps=bench.warmup + bench.steps,
        learning_rate=1e-4, report_to="none", save_strategy="no", logging_steps=1000, disable_tqdm=True,
        dataloader_drop_last=True, seed=bench.seed, bf16=bf16, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=bench.seed)
    torch.manual_seed(bench.seed)
    model = BertForPreTraining(config)
    Trainer(model, args, train_dataset=examples, data_collator=collator, callbacks=[timer]).train()
    mean_length = sum(len(e["input_ids"]) for e in examples) / len(examples)
    return [bench.batch_size * mean_length / seconds for seconds in timer.seconds[bench.warmup :]]


def measure_size(size: str, bench: BenchConfig, examples: list[dict], peaks: dict[str, float], tmp: Path) -> dict:
    """Each run's median tokens/s, from the faster of `bench.rounds` rounds (run in alternating order, so a burst
    of load on this shared machine slows one round of a run rather than one side of a ratio)."""
    layers, hidden = SIZES[size]
    flops = model_flops_per_token(layers, hidden, bench.seq_length)
    runs = {
        "trainer_fp32": lambda out: baseline(size, bench, examples, out, bf16=False),
        "trainer_bf16": lambda out: baseline(size, bench, examples, out, bf16=True),
        "recipe_fp32": lambda out: ours(size, bench, out, "no"),
        "recipe_bf16": lambda out: ours(size, bench, out, "bf16"),
        # the fastest flags of benchmarks/pretrain_levers.py (compiled in the untimed warm-up steps)
        "recipe_bf16_compiled": lambda out: ours(size, bench, out, "bf16", *COMPILED),
    }
    steps: dict[str, list[list[float]]] = {name: [] for name in runs}
    for round_ in range(bench.rounds):
        for name in list(runs) if round_ % 2 == 0 else reversed(runs):
            steps[name].append(runs[name](tmp / f"{name}-{size}-{round_}"))
    row = {"size": size, **{name: max(map(statistics.median, rounds)) for name, rounds in steps.items()}}
    row.update(
        {
            "recipe_bf16_over_recipe_fp32": row["recipe_bf16"] / row["recipe_fp32"],
            "recipe_bf16_over_trainer_fp32": row["recipe_bf16"] / row["trainer_fp32"],
            "recipe_bf16_over_trainer_bf16": row["recipe_bf16"] / row["trainer_bf16"],
            "recipe_bf16_compiled_over_trainer_fp32": row["recipe_bf16_compiled"] / row["trainer_fp32"],
            "recipe_fp32_over_trainer_fp32": row["recipe_fp32"] / row["trainer_fp32"],
            "recipe_bf16_mfu_of_bf16_matmul": row["recipe_bf16"] * flops / peaks["bf16"],
            "recipe_bf16_mfu_of_fp32_matmul": row["recipe_bf16"] * flops / peaks["fp32"],
            "recipe_fp32_mfu_of_fp32_matmul": row["recipe_fp32"] * flops / peaks["fp32"],
            "tokens_per_second_per_step_by_round": steps,
        }
    )
    return row


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    data = DataConfig(max_seq_length=bench.seq_length, eval_every_nth_document=0)
    stream = build_pretraining_datasets(CorpusConfig(train_files=[bench.corpus]), data, tokenizer, seed=bench.seed)[0]
    needed = (bench.warmup + bench.steps) * bench.batch_size
    columns = ("input_ids", "token_type_ids", "next_sentence_label")
    examples = [{c: r[c] for c in columns} for r in itertools.islice(stream, needed)]
    peaks = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure_size(size, bench, examples, peaks, Path(tmp)) for size in bench.sizes.split(",")]
    result = {
        "matmul_2048_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "config": asdict(bench),
        "rows": rows,
    }
    header = [
        "size", "Trainer fp32", "Trainer bf16", "recipe fp32", "recipe bf16", "recipe bf16 / recipe fp32",
        "recipe bf16 / Trainer fp32", "recipe bf16 / Trainer bf16", "recipe bf16 MFU (bf16 peak / fp32 peak)",
        "recipe bf16 + fixed positions + compile", "that / Trainer fp32",
    ]  # fmt: skip
    table = [
        [r["size"], *(f"{r[k]:,.0f}" for k in ("trainer_fp32", "trainer_bf16", "recipe_fp32", "recipe_bf16")),
         *(f"{r[k]:.2f}x" for k in ("recipe_bf16_over_recipe_fp32", "recipe_bf16_over_trainer_fp32",
                                    "recipe_bf16_over_trainer_bf16")),
         f"{r['recipe_bf16_mfu_of_bf16_matmul']:.0%} / {r['recipe_bf16_mfu_of_fp32_matmul']:.0%}",
         f"{r['recipe_bf16_compiled']:,.0f}", f"{r['recipe_bf16_compiled_over_trainer_fp32']:.2f}x"]
        for r in rows
    ]  # fmt: skip
    print(f"2048x2048 matmul: fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")
    save_result("pretrain_throughput", result, header, table)


if __name__ == "__main__":
    main()
