"""Which speed levers pay on this CPU: one pretraining step of a BERT size, timed with one lever changed at a time.

The step is the recipe's own (SparsePretrainingLoss, AdamW with the recipe's parameter groups, gradient clipping) on
random full-length batches, so the numbers isolate compute; `pretrain_throughput.py` measures the whole recipe.

    python benchmarks/pretrain_levers.py --size small --steps 6
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from pretrain_throughput import SIZES, VOCAB
from reporting import machine, print_table, save_json
from transformers import BertConfig

from bert_recipes.config import parse_config
from bert_recipes.modeling import SparsePretrainingLoss, build_model
from bert_recipes.trainer import TrainConfig, build_optimizer


@dataclass
class BenchConfig:
    size: str = field(default="small", metadata={"help": "BERT size to time."})
    steps: int = field(default=6, metadata={"help": "Timed steps per lever (after 2 warm-up steps)."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    output_json: str = field(default="benchmarks/results/pretrain_levers.json", metadata={"help": "Results."})


@dataclass
class Lever:
    name: str
    attn: str = "sdpa"
    optimizer: dict = field(default_factory=dict)
    compile: bool = False
    threads: int = 0


LEVERS = [
    Lever("recipe (sdpa, AdamW default: foreach)"),
    Lever("eager attention", attn="eager"),
    Lever("AdamW fused", optimizer={"fused": True}),
    Lever("AdamW single-tensor loop", optimizer={"foreach": False}),
    Lever("torch.compile", compile=True),
    Lever("1 intra-op thread", threads=1),
]


def random_batch(bench: BenchConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    shape = (bench.batch_size, bench.seq_length)
    labels = torch.randint(1000, VOCAB, shape, generator=generator)
    labels[torch.rand(shape, generator=generator) >= 0.15] = -100
    return {
        "input_ids": torch.randint(1000, VOCAB, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "token_type_ids": (torch.arange(bench.seq_length) >= bench.seq_length // 2).long().expand(shape),
        "labels": labels,
        "next_sentence_label": torch.randint(0, 2, (bench.batch_size,), generator=generator),
    }


def step_function(lever: Lever, bench: BenchConfig) -> Callable[[dict[str, torch.Tensor]], None]:
    layers, hidden = SIZES[bench.size]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)  # fmt: skip
    bert = build_model(config, lever.attn)
    model = SparsePretrainingLoss(bert)
    forward = torch.compile(model) if lever.compile else model
    optimizer = build_optimizer(bert, TrainConfig())
    for group in optimizer.param_groups:
        group.update(lever.optimizer)

    def step(batch: dict[str, torch.Tensor]) -> None:
        forward(**batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(bert.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def seconds_per_step(lever: Lever, bench: BenchConfig) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(lever.threads or threads)
    try:
        step = step_function(lever, bench)
        batches = [random_batch(bench, torch.Generator().manual_seed(i)) for i in range(bench.steps + 2)]
        for batch in batches[:2]:
            step(batch)
        start = time.perf_counter()
        for batch in batches[2:]:
            step(batch)
        return (time.perf_counter() - start) / bench.steps
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    (bench,) = parse_config([BenchConfig])
    tokens = bench.batch_size * bench.seq_length
    rows = []
    for lever in LEVERS:
        seconds = seconds_per_step(lever, bench)
        rows.append(
            {"lever": lever.name, "seconds_per_step": round(seconds, 3), "tokens_per_second": round(tokens / seconds)}
        )
    for row in rows:
        row["vs_recipe"] = round(rows[0]["seconds_per_step"] / row["seconds_per_step"], 2)
    result = {
        "machine": f"{machine()}, fp32",
        "config": asdict(bench),
        "rows": rows,
    }
    save_json(bench.output_json, result)
    print(f"{bench.size}, batch {bench.batch_size} x {bench.seq_length}, {result['machine']}")
    print_table(
        ["lever", "s/step", "tokens/s", "speed vs recipe"],
        [[r["lever"], r["seconds_per_step"], f"{r['tokens_per_second']:,}", f"{r['vs_recipe']}x"] for r in rows],
    )


if __name__ == "__main__":
    main()
