"""transformers' own way to pretrain a BERT, as examples/pytorch/language-modeling/run_mlm.py does it: tokenize whole
documents, `group_texts` into full-length blocks, `DataCollatorForLanguageModeling`, `BertForMaskedLM` from a fresh
config, `Trainer`; MLM only. Adds what a time-budget comparison needs and run_mlm.py lacks: a wall-clock budget and a
checkpoint every N seconds of training, with the second each was written in OUTPUT_DIR/timeline.json.

    python benchmarks/mlm_trainer_baseline.py --train_file train.jsonl --tokenizer DIR --output_dir OUT \
        --max_steps 1500 --budget_seconds 600 --save_every_seconds 120

Tokenization happens before the clock starts, as run_mlm.py's does before Trainer.train().
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from bert_recipes.config import parse_config

TIMELINE = "timeline.json"


@dataclass
class BaselineConfig:
    train_file: str = field(default="", metadata={"help": "jsonl with a text field, one document per line."})
    tokenizer: str = field(default="", metadata={"help": "Tokenizer directory."})
    output_dir: str = field(default="runs/mlm-baseline", metadata={"help": "Checkpoints and timeline.json."})
    hidden_size: int = field(default=256, metadata={"help": "Encoder width (mini: 256)."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Encoder layers (mini: 4)."})
    max_seq_length: int = field(default=128, metadata={"help": "Block size of group_texts."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Linear warmup as a fraction of max_steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_steps: int = field(default=1000, metadata={"help": "Length of the linear schedule."})
    budget_seconds: float = field(default=0.0, metadata={"help": "Stop after this much training time (0: none)."})
    save_every_seconds: float = field(default=0.0, metadata={"help": "Checkpoint interval in seconds (0: none)."})
    logging_steps: int = field(default=50, metadata={"help": "Trainer logging interval."})
    seed: int = field(default=42, metadata={"help": "Seed of the model, the masking and the data order."})
    bf16: bool = field(default=True, metadata={"help": "Trainer's bf16 flag (faster on this CPU and on GPUs)."})


class WallClock(TrainerCallback):
    """Asks for a checkpoint at the first step past each interval and at the end, stops at the budget, and writes
    every step's and every checkpoint's training seconds to timeline.json."""

    def __init__(self, config: BaselineConfig):
        self.config, self.mark, self.start = config, 0, 0.0
        self.steps: list[list[float]] = []
        self.saves: list[list[float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        seconds, c = time.perf_counter() - self.start, self.config
        self.steps.append([state.global_step, seconds])
        mark = int(seconds // c.save_every_seconds) if c.save_every_seconds > 0 else 0
        out_of_time = 0 < c.budget_seconds <= seconds
        if mark > self.mark or out_of_time or state.global_step >= state.max_steps:
            self.mark = mark
            control.should_save = True
        if out_of_time:
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        # the second the save was asked for, as the recipe records it: earlier saves' time included
        self.saves.append([state.global_step, self.steps[-1][1]])
        timeline = {"steps": self.steps, "checkpoints": self.saves}
        (Path(args.output_dir) / TIMELINE).write_text(json.dumps(timeline), encoding="utf-8")


def grouped_blocks(config: BaselineConfig, tokenizer):
    """run_mlm.py's preprocessing: every document tokenized whole, then concatenated and cut into full blocks."""
    raw = load_dataset("json", data_files=config.train_file, split="train")
    tokenized = raw.map(
        lambda batch: tokenizer(batch["text"], return_special_tokens_mask=True),
        batched=True,
        remove_columns=raw.column_names,
    )
    size = config.max_seq_length

    def group_texts(examples):
        joined = {k: list(itertools.chain(*examples[k])) for k in examples}
        total = len(joined["input_ids"]) // size * size
        return {k: [ids[i : i + size] for i in range(0, total, size)] for k, ids in joined.items()}

    return tokenized.map(group_texts, batched=True)


def main() -> None:
    (config,) = parse_config([BaselineConfig])
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    blocks = grouped_blocks(config, tokenizer)
    bert = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.hidden_size // 64,
        intermediate_size=4 * config.hidden_size,
    )
    torch.manual_seed(config.seed)
    args = TrainingArguments(
        output_dir=config.output_dir, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, weight_decay=config.weight_decay, lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio, max_steps=config.max_steps, bf16=config.bf16, seed=config.seed,
        logging_steps=config.logging_steps, save_strategy="no", report_to="none", dataloader_drop_last=True,
        use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=config.seed)
    trainer = Trainer(
        BertForMaskedLM(bert), args, train_dataset=blocks, data_collator=collator, callbacks=[WallClock(config)]
    )
    trainer.train()


if __name__ == "__main__":
    main()
