"""Model cards filled in from a run's files (config.json, training_args.yaml, metrics.jsonl), via ModelCard."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from bert_recipes.corpus import REPO_ROOT

TEMPLATES = REPO_ROOT / "model_cards"
GLUE_DATASET = "nyu-mll/glue"


def read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_curve(records: list[dict[str, Any]], output: Path) -> str | None:
    """Plot training loss (and eval MLM loss) against steps; returns the image's file name."""
    steps = [r for r in records if "loss" in r]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="training loss (MLM + NSP)")
    evals = [r for r in records if "eval_mlm_loss" in r]
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_mlm_loss"] for r in evals], "o-", label="held-out MLM loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output / "training_curve.png", dpi=100)
    plt.close(fig)
    return "training_curve.png"


def glue_table(results: dict[str, dict[str, float]] | None) -> str:
    if not results:
        return ""
    lines = ["| task | metric | value |", "|---|---|---|"]
    for task, metrics in results.items():
        lines += [
            f"| {task} | {name} | {100 * value:.2f} |" for name, value in metrics.items() if name != "learning_rate"
        ]
    return "\n".join(lines)


def glue_eval_results(results: dict[str, dict[str, float]] | None) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="text-classification",
            dataset_type=GLUE_DATASET,
            dataset_name=f"GLUE {task.upper()}",
            dataset_config=task,
            dataset_split="validation",
            metric_type=name,
            metric_value=value,
        )
        for task, metrics in (results or {}).items()
        for name, value in metrics.items()
        if name != "learning_rate"
    ]


def compute_used(args: dict[str, Any], records: list[dict[str, Any]]) -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    tokens = records[-1].get("tokens_seen", 0) if records else 0
    return f"{device}; {len(records) and records[-1]['step']} steps, {tokens:,} tokens seen"


def pretraining_card(
    output_dir: str | Path, repo_id: str = "your-name/bert", glue_results: dict | None = None
) -> ModelCard:
    out = Path(output_dir)
    config = json.loads((out / "config.json").read_text())
    args = read_yaml(out / "training_args.yaml")
    records = read_metrics(out / "metrics.jsonl")
    final = {k: v for r in records for k, v in r.items() if k.startswith("eval_")}
    datasets_used = [args["dataset_name"]] if args.get("dataset_name") else None
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["bert", "fill-mask", "pretraining", "bert-recipes"],
        datasets=datasets_used,
        model_name=repo_id,
        eval_results=glue_eval_results(glue_results) or None,
    )
    files = ", ".join(Path(f).name for f in args.get("train_files", [])) or "local files"
    data = args.get("dataset_name") or files
    keys = ["max_seq_length", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate"]
    keys += ["lr_scheduler_type", "warmup_ratio", "weight_decay", "max_steps", "mlm_probability", "whole_word_mask"]
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "pretrained_bert.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        nsp=not args.get("no_nsp", False),
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        heads=config["num_attention_heads"],
        intermediate=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        max_positions=config["max_position_embeddings"],
        parameters=f"{parameter_count(config) / 1e6:.1f}M",
        lowercase=json.loads((out / "tokenizer_config.json").read_text()).get("do_lower_case", True)
        if (out / "tokenizer_config.json").is_file()
        else True,
        training_data=f"{data}, split into sentence pairs for next sentence prediction, masked dynamically.",
        training_data_short=data,
        hyperparameters={k: args[k] for k in keys if k in args},
        compute=compute_used(args, records),
        results=", ".join(f"{k} {v:.4f}" for k, v in final.items()) or "no evaluation recorded",
        curve=training_curve(records, out),
        glue_table=glue_table(glue_results),
    )


def parameter_count(config: dict[str, Any]) -> int:
    h, layers, v, ff = (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["vocab_size"],
        config["intermediate_size"],
    )
    embeddings = (v + config["max_position_embeddings"] + config.get("type_vocab_size", 2)) * h
    return embeddings + layers * (4 * h * h + 2 * h * ff) + h * h


def finetuning_card(output_dir: str | Path, glue_results: dict, base_model: str, repo_id: str) -> ModelCard:
    args = read_yaml(Path(output_dir) / "finetune_args.yaml")
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["bert", "glue", "bert-recipes"],
        datasets=[GLUE_DATASET],
        base_model=base_model,
        model_name=repo_id,
        eval_results=glue_eval_results(glue_results) or None,
    )
    keys = ["max_seq_length", "per_device_train_batch_size", "learning_rate", "num_train_epochs", "warmup_ratio"]
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "finetuned_bert.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base_model,
        tasks=", ".join(glue_results),
        glue_table=glue_table(glue_results),
        hyperparameters={k: args[k] for k in keys if k in args},
    )


def tokenizer_card(tokenizer_dir: str | Path, repo_id: str) -> ModelCard:
    out = Path(tokenizer_dir)
    args = read_yaml(out / "training_args.yaml")
    card_data = ModelCardData(language="en", license="apache-2.0", library_name="transformers", tags=["tokenizer"])
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "tokenizer.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        vocab_size=sum(1 for _ in (out / "vocab.txt").open(encoding="utf-8")),
        lowercase=args.get("lowercase", True),
        model_max_length=args.get("model_max_length", 512),
        training_data=args.get("dataset_name") or ", ".join(Path(f).name for f in args.get("train_files", [])),
    )
