"""The end-to-end demo behind `make demo`: pretrain a 2-layer BERT on the embedded corpus, show what it learned
with fill-mask, fine-tune it on the SST-2 sample, and print both against their baselines. The tokenizer is
trained by the Makefile's first step.

python recipes/demo.py --tokenizer_dir runs/demo/tokenizer --output_dir runs/demo
"""

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import pipeline

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import run_cli
from bert_recipes.glue import GlueConfig, majority_baseline, run_glue
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig

FILL_MASK_PROMPTS = [
    "The old man walked slowly down the [MASK].",
    "She opened the [MASK] and looked outside.",
    "It was a dark and stormy [MASK].",
]


@dataclass
class DemoConfig:
    tokenizer_dir: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer from the first step."})
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the demo's runs go."})
    pretrain_config: str = field(default="recipes/configs/demo.yaml", metadata={"help": "Pretraining recipe."})
    glue_data_dir: str = field(default="data/glue", metadata={"help": "GLUE samples in the original layout."})


def most_frequent_token_accuracy(batches: list[dict[str, torch.Tensor]]) -> float:
    """MLM accuracy of always predicting the most frequent masked token: the bar the model must clear."""
    counts = Counter(t for b in batches for t in b["labels"][b["labels"] != -100].tolist())
    return counts.most_common(1)[0][1] / max(sum(counts.values()), 1)


def pretrain_demo(config_path: str, tokenizer_dir: str, output_dir: Path) -> tuple[dict[str, float], float]:
    overrides = ["--tokenizer_name_or_path", tokenizer_dir, "--output_dir", str(output_dir)]
    corpus, data, model, train = parse_config(
        [CorpusConfig, DataConfig, ModelConfig, TrainConfig], ["--config", config_path, *overrides]
    )
    train.overwrite_output_dir = True
    trainer = Pretrainer(corpus, data, model, train)
    metrics = trainer.run()
    return metrics, most_frequent_token_accuracy(trainer.eval_batches)


def fill_mask_examples(model_dir: Path) -> list[str]:
    fill = pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    return [f"{prompt} -> {', '.join(p['token_str'] for p in fill(prompt, top_k=3))}" for prompt in FILL_MASK_PROMPTS]


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
        # 128 wide, bf16 autocast is slower than fp32 on CPUs (see recipes/configs/demo.yaml)
        mixed_precision="no",
    )
    return run_glue(config)["sst2"].median, majority_baseline(config, "sst2")


def results_table(rows: list[tuple[str, float, float]]) -> str:
    lines = ["| metric | demo BERT | baseline |", "|---|---|---|"]
    lines += [f"| {name} | {value:.4f} | {baseline:.4f} |" for name, value, baseline in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    (demo,) = parse_config([DemoConfig], argv)
    out = Path(demo.output_dir)
    metrics, frequent = pretrain_demo(demo.pretrain_config, demo.tokenizer_dir, out / "bert")
    print("\nfill-mask with the demo BERT:")
    print("\n".join(f"  {line}" for line in fill_mask_examples(out / "bert")))
    sst2, majority = finetune_demo(out / "bert", demo.glue_data_dir, out / "glue")
    print("\nresults (held-out corpus documents; SST-2 sample dev set):")
    print(
        results_table(
            [
                ("MLM accuracy (baseline: most frequent token)", metrics["eval_mlm_accuracy"], frequent),
                ("SST-2 accuracy (baseline: majority class)", sst2["accuracy"], majority["accuracy"]),
            ]
        )
    )
    print(f"MLM perplexity {metrics['eval_perplexity']:.1f}; NSP accuracy {metrics.get('eval_nsp_accuracy', 0):.4f}")


if __name__ == "__main__":
    run_cli(main, init_state=False)
