"""Which speed levers pay on this CPU: one pretraining step of BERT sizes, timed with one lever changed at a time.

The step is the recipe's own (SparsePretrainingLoss, AdamW with the recipe's parameter groups, gradient clipping) on
random full-length batches, so the numbers isolate compute; `pretrain_throughput.py` measures the whole recipe.
Levers: bf16 autocast, torch's own CPU dropout instead of bert_recipes.dropout, eager attention, AdamW variants,
torch.compile with the masked count varying per batch and with a fixed number of predicted positions
(`--max_predictions_per_seq`), intra-op threads; and gradient checkpointing at length 512 (first size only), with
the activation memory it saves (bytes autograd keeps for backward).

    python benchmarks/pretrain_levers.py --sizes small,mini --steps 5
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import torch
from bench_setup import SIZES, VOCAB
from reporting import save_result
from transformers import BertConfig

from bert_recipes.config import parse_config
from bert_recipes.dropout import use_cpu_dropout
from bert_recipes.modeling import SparsePretrainingLoss, build_model
from bert_recipes.train_config import TrainConfig, build_optimizer


@dataclass
class BenchConfig:
    sizes: str = field(default="small,mini", metadata={"help": "Comma list of BERT sizes to time."})
    steps: int = field(default=6, metadata={"help": "Timed steps per lever (after 3 warm-up steps)."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    max_predictions: int = field(default=20, metadata={"help": "Fixed predicted positions per sequence (static)."})
    checkpointing_batch_size: int = field(default=8, metadata={"help": "Sequences per step at length 512."})


@dataclass
class Lever:
    name: str
    attn: str = "sdpa"
    optimizer: dict = field(default_factory=dict)
    compile: bool = False
    threads: int = 0
    bf16: bool = False
    static: bool = False
    checkpointing: bool = False
    fast_dropout: bool = True


TORCH_ADAMW = {"fused": False, "foreach": False}  # what torch.optim.AdamW runs on CPU tensors by default
LEVERS = [
    Lever("recipe fp32 (SDPA, bert_recipes.dropout, AdamW fused)"),
    Lever("bf16 autocast", bf16=True),
    Lever("torch's dropout (--fast_cpu_dropout false)", fast_dropout=False),
    Lever("bf16 + torch's dropout", bf16=True, fast_dropout=False),
    Lever("eager attention", attn="eager"),
    Lever("AdamW single-tensor loop (torch's CPU default)", optimizer=TORCH_ADAMW),
    Lever("AdamW foreach", optimizer={"fused": False, "foreach": True}),
    Lever("torch.compile, masked count varies", compile=True),
    Lever("fixed predicted positions", static=True),
    Lever("fixed predicted positions + torch.compile", static=True, compile=True),
    Lever("bf16 + fixed predicted positions", bf16=True, static=True),
    Lever("bf16 + fixed predicted positions + torch.compile", bf16=True, static=True, compile=True),
    Lever("1 intra-op thread", threads=1),
]
CHECKPOINTING = [
    Lever("length 512, bf16", bf16=True),
    Lever("length 512, bf16, gradient checkpointing", bf16=True, checkpointing=True),
]


def random_batch(
    batch_size: int, seq_length: int, max_predictions: int, static: bool, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Full-length random sequences with 15% of positions predicted; with `static`, at most `max_predictions` per
    row, given as fixed-width positions as the collator does."""
    shape = (batch_size, seq_length)
    input_ids = torch.randint(1000, VOCAB, shape, generator=generator)
    scores = torch.rand(shape, generator=generator)
    scores[:, 0] = 1.0  # [CLS] is never predicted
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "token_type_ids": (torch.arange(seq_length) >= seq_length // 2).long().expand(shape),
        "labels": torch.where(scores < 0.15, input_ids, -100),
        "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=generator),
    }
    if static:
        top, positions = (-scores).topk(max_predictions, dim=1)
        chosen = -top < 0.15
        batch["masked_positions"] = positions.masked_fill(~chosen, 0)
        kept = torch.zeros(shape, dtype=torch.bool).scatter_(1, positions, chosen)
        batch["labels"] = batch["labels"].masked_fill(~kept, -100)
    return batch


class SavedActivations:
    """Bytes of the tensors autograd keeps for backward during one forward pass."""

    def __init__(self) -> None:
        self.bytes = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        def pack(tensor: torch.Tensor) -> torch.Tensor:
            self.bytes += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield


def step_function(lever: Lever, size: str, saved: SavedActivations) -> Callable[[dict[str, torch.Tensor]], None]:
    layers, hidden = SIZES[size]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 64, intermediate_size=4 * hidden)  # fmt: skip
    bert = build_model(config, lever.attn)
    if lever.fast_dropout:
        use_cpu_dropout(bert)
    if lever.checkpointing:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = SparsePretrainingLoss(bert)
    forward = torch.compile(model) if lever.compile else model
    optimizer = build_optimizer(bert, TrainConfig())
    for group in optimizer.param_groups:
        group.update(lever.optimizer)

    def step(batch: dict[str, torch.Tensor]) -> None:
        saved.bytes = 0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lever.bf16), saved.counting():
            loss = forward(**batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bert.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_levers(levers: list[Lever], size: str, bench: BenchConfig, batch_size: int, seq_length: int) -> list[dict]:
    """Median seconds per step of each lever after 3 warm-up steps (compilation, first bf16 kernels), and activation
    bytes. The levers' steps interleave (step i of every lever, then step i + 1), so load from other jobs on this
    shared machine falls on every lever alike instead of on whichever ran during it."""
    threads = torch.get_num_threads()
    saved = [SavedActivations() for _ in levers]
    steps = [step_function(lever, size, counter) for lever, counter in zip(levers, saved, strict=True)]
    seconds: list[list[float]] = [[] for _ in levers]
    for i in range(bench.steps + 3):
        for lever, step, timings in zip(levers, steps, seconds, strict=True):
            generator = torch.Generator().manual_seed(i)
            batch = random_batch(batch_size, seq_length, bench.max_predictions * seq_length // 128, lever.static,
                                 generator)  # fmt: skip
            torch.set_num_threads(lever.threads or threads)
            try:
                start = time.perf_counter()
                step(batch)
                timings.append(time.perf_counter() - start)
            finally:
                torch.set_num_threads(threads)
    rows = []
    for lever, timings, counter in zip(levers, seconds, saved, strict=True):
        median = statistics.median(timings[3:])
        rows.append({
            "size": size, "lever": lever.name, "seconds_per_step": median,
            "tokens_per_second": batch_size * seq_length / median,
            "activation_megabytes": counter.bytes / 1e6, "raw_seconds": timings,
        })  # fmt: skip
    return rows


def relative_to_first(rows: list[dict]) -> list[dict]:
    return [{**row, "vs_recipe": rows[0]["seconds_per_step"] / row["seconds_per_step"]} for row in rows]


def main() -> None:
    (bench,) = parse_config([BenchConfig])
    sizes = bench.sizes.split(",")
    rows = [
        row
        for size in sizes
        for row in relative_to_first(time_levers(LEVERS, size, bench, bench.batch_size, bench.seq_length))
    ]
    long_rows = relative_to_first(time_levers(CHECKPOINTING, sizes[0], bench, bench.checkpointing_batch_size, 512))
    result = {"config": asdict(bench), "rows": rows, "length_512_rows": long_rows}
    print(f"batch {bench.batch_size} x {bench.seq_length}; checkpointing rows: {sizes[0]}, batch "
          f"{bench.checkpointing_batch_size} x 512")  # fmt: skip
    header = ["size", "lever", "s/step", "tokens/s", "speed vs first row of its size and length",
              "activations kept for backward"]  # fmt: skip
    table = [
        [r["size"], r["lever"], f"{r['seconds_per_step']:.3f}", f"{r['tokens_per_second']:,.0f}",
         f"{r['vs_recipe']:.2f}x", f"{r['activation_megabytes']:,.0f} MB"]
        for r in rows + long_rows
    ]  # fmt: skip
    save_result("pretrain_levers", result, header, table)


if __name__ == "__main__":
    main()
