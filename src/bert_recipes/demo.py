"""The `make demo` pipeline after the tokenizer: pretrain the demo BERT, show what it learned, fine-tune it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from transformers import pipeline

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.glue import GlueConfig, majority_baseline, run_glue
from bert_recipes.modeling import ModelConfig
from bert_recipes.pretraining_data import DataConfig
from bert_recipes.trainer import Pretrainer, TrainConfig

FILL_MASK_PROMPTS = [
    "The old man walked slowly down the [MASK].",
    "She opened the [MASK] and looked outside.",
    "It was a dark and stormy [MASK].",
]


def most_frequent_token_accuracy(batches: list[dict[str, torch.Tensor]]) -> float:
    """MLM accuracy of always predicting the most frequent masked token: the bar the model must clear."""
    counts = Counter(t for b in batches for t in b["labels"][b["labels"] != -100].tolist())
    return counts.most_common(1)[0][1] / max(sum(counts.values()), 1)


def fill_mask_examples(model_dir: Path) -> list[str]:
    fill = pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    return [f"{prompt} -> {', '.join(p['token_str'] for p in fill(prompt, top_k=3))}" for prompt in FILL_MASK_PROMPTS]


def pretrain_demo(config_path: str, tokenizer_dir: str, output_dir: Path) -> tuple[dict[str, float], float]:
    overrides = ["--tokenizer_name_or_path", tokenizer_dir, "--output_dir", str(output_dir)]
    corpus, data, model, train = parse_config(
        [CorpusConfig, DataConfig, ModelConfig, TrainConfig], ["--config", config_path, *overrides]
    )
    train.overwrite_output_dir = True
    trainer = Pretrainer(corpus, data, model, train)
    metrics = trainer.run()
    return metrics, most_frequent_token_accuracy(trainer.eval_batches)


def finetune_demo(model_dir: Path, glue_data: str, output_dir: Path) -> tuple[dict[str, float], dict[str, float]]:
    # the paper's 2e-5 for 3 epochs suits bert-base on 67k rows; a 2-layer model on 400 rows needs more and larger
    # steps (measured: 0.52, the majority class, at 5e-5 for 3 epochs; 0.615 at 3e-4 for 10, mean of 3 seeds)
    config = GlueConfig.from_values(
        model_name_or_path=str(model_dir),
        task_name="sst2",
        data_dir=glue_data,
        output_dir=str(output_dir),
        max_seq_length=64,
        num_train_epochs=10.0,
        learning_rate=3.0e-4,
        per_device_train_batch_size=16,
    )
    return run_glue(config)["sst2"].median, majority_baseline(config, "sst2")


def results_table(rows: list[tuple[str, float, float]]) -> str:
    lines = ["| metric | demo BERT | baseline |", "|---|---|---|"]
    lines += [f"| {name} | {value:.4f} | {baseline:.4f} |" for name, value, baseline in rows]
    return "\n".join(lines)
