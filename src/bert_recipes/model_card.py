"""Model cards filled in from a run's own files (config.json, training_args.yaml, metrics.jsonl, trainer state).

Each card is rendered from a Jinja template in the package's model_cards/ by huggingface_hub's
`ModelCard.from_template`, with its front matter built by `ModelCardData` (GLUE results become a model-index).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelCardData

from bert_recipes.card_files import (
    newest_trainer_state,
    read_metrics,
    read_run_args,
    read_template,
)
from bert_recipes.errors import UsageError
from bert_recipes.finetuning import TaskResult, points_range
from bert_recipes.finetuning_card import finetuning_card, glue_eval_results

CURVE_FILE = "training_curve.png"
PRETRAINING_HYPERPARAMETERS = (
    "max_seq_length", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2",
    "max_grad_norm", "max_steps", "max_train_time", "mlm_probability", "whole_word_mask", "no_nsp",
    "mixed_precision", "seed",
)  # fmt: skip
FINAL_METRICS = (
    ("loss", "training loss (MLM + NSP)"), ("mlm_loss", "training MLM loss"), ("nsp_loss", "training NSP loss"),
    ("eval_mlm_loss", "held-out MLM loss"), ("eval_perplexity", "held-out MLM perplexity"),
    ("eval_mlm_accuracy", "held-out MLM accuracy"), ("eval_nsp_accuracy", "held-out NSP accuracy"),
)  # fmt: skip


def final_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """The last value logged of each MLM/NSP metric, under a readable name."""
    found = {}
    for key, label in FINAL_METRICS:
        values = [r[key] for r in records if isinstance(r.get(key), int | float)]
        if values:
            found[label] = values[-1]
    return found


def training_curve(records: list[dict[str, Any]], output_dir: Path) -> str | None:
    """Plot the training losses and the held-out MLM loss against steps into training_curve.png."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = [(key, label) for key, label in FINAL_METRICS if key in ("loss", "mlm_loss", "nsp_loss", "eval_mlm_loss")]
    plotted = [(key, label) for key, label in series if any(key in r for r in records)]
    if not plotted:
        return None
    # pyplot's global backend state is avoided: the card may be made inside a training process
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key, label in plotted:
        points = [(r["step"], r[key]) for r in records if key in r]
        axes.plot(*zip(*points, strict=True), "o-" if key.startswith("eval") else "-", label=label, markersize=3)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(output_dir / CURVE_FILE, dpi=100)
    return CURVE_FILE


def glue_summary_rows(summary: dict[str, Any] | None) -> list[dict[str, str]]:
    """glue_results.json's numbers (recipes/finetune_glue.py): each metric's median over the seeds of the chosen
    learning rate, their min-max and how many seeds there were."""
    rows = []
    for task, saved in (summary or {}).get("runs", {}).items():
        result = TaskResult.from_dict(saved)
        for name, value in result.median.items():
            spread = points_range(result.low[name], result.high[name]) if result.seeds > 1 else "-"
            rows.append(
                {
                    "task": task,
                    "metric": name,
                    "value": f"{100 * value:.2f}",
                    "range": spread,
                    "seeds": str(result.seeds),
                }
            )
    return rows


def held_out_mlm(mlm_eval: dict[str, Any] | None, output_dir: Path) -> dict[str, str] | None:
    """This model's row of an evaluate_mlm.py JSON file, with the held-out text and masking it was scored on."""
    if not mlm_eval:
        return None
    records = mlm_eval["results"]
    mine = [r for r in records if Path(r["model_name_or_path"]).resolve() == output_dir.resolve()]
    if not mine and len(records) > 1:
        raise UsageError(
            f"the MLM evaluation scores {len(records)} other models, not '{output_dir}': run "
            f"recipes/evaluate_mlm.py --model_name_or_path {output_dir} and pass its output file"
        )
    record, settings = (mine or records)[0], mlm_eval["settings"]
    row = {
        "held-out text": ", ".join(f"`{Path(f).name}`" for f in settings["validation_files"]),
        "sequences x length": f"{record['eval_sequences']:,} x {settings['max_seq_length']}",
        "masked tokens": f"{record['eval_masked_tokens']:,} ({settings['mlm_probability']:.0%}, "
        f"seed {settings['seed']})",
        "MLM loss": f"{record['eval_mlm_loss']:.4f}",
        "perplexity": f"{record['eval_perplexity']:.2f}",
        "MLM accuracy": f"{record['eval_mlm_accuracy']:.4f}",
    }
    if "eval_nsp_accuracy" in record:
        row["NSP accuracy"] = f"{record['eval_nsp_accuracy']:.4f}"
    return row


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def compute_used(state: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, str]:
    seconds = state.get("elapsed_seconds", 0.0)
    tokens = state.get("tokens_seen") or max((r.get("tokens_seen", 0) for r in records), default=0)
    steps = state.get("step") or max((r["step"] for r in records), default=0)
    return {
        "hardware": hardware(),
        "processes": str(state.get("world_size", 1)),
        "training time": f"{seconds / 3600:.3g} hours" if seconds else "not recorded",
        "optimizer steps": f"{steps:,}",
        "tokens seen": f"{tokens:,}",
    }


def training_data(args: dict[str, Any]) -> tuple[str, list[str] | None]:
    """A description of the corpus, and the Hub dataset ids for the card's metadata."""
    if args.get("dataset_name"):
        config = f" ({args['dataset_config_name']})" if args.get("dataset_config_name") else ""
        return f"[{args['dataset_name']}](https://huggingface.co/datasets/{args['dataset_name']}){config}", [
            args["dataset_name"]
        ]
    files = ", ".join(f"`{Path(f).name}`" for f in args.get("train_files") or [])
    return (f"local text files: {files}" if files else "a corpus that was not recorded"), None


def tokenizer_facts(folder: Path) -> dict[str, Any]:
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    vocab = folder / "vocab.txt"
    size = sum(1 for _ in vocab.open(encoding="utf-8")) if vocab.is_file() else None
    if size is None and (folder / "tokenizer.json").is_file():
        size = len(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"])
    return {
        "vocab_size": size,
        "lowercase": config.get("do_lower_case", True),
        "model_max_length": config.get("model_max_length", "not set"),
    }


def parameter_count(config: dict[str, Any]) -> int:
    """Encoder parameters of a BertModel (embeddings, layers, pooler), without the pretraining heads."""
    h, ff, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    positions, types = config["max_position_embeddings"], config.get("type_vocab_size", 2)
    embeddings = (config["vocab_size"] + positions + types) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * ff + ff) + (ff * h + h) + 2 * h
    return embeddings + layers * layer + h * h + h


def pretraining_card(
    output_dir: str | Path,
    repo_id: str | None = None,
    glue: dict[str, Any] | None = None,
    mlm_eval: dict[str, Any] | None = None,
    language: str = "en",
    license: str = "apache-2.0",
) -> ModelCard:
    """The card of a pretrained model; also writes training_curve.png into output_dir when there are metrics.

    `glue` is a glue_results.json of recipes/finetune_glue.py run on this model, `mlm_eval` the JSON file of
    recipes/evaluate_mlm.py scoring it; each adds its section.
    """
    out = Path(output_dir)
    repo_id = repo_id or out.resolve().name
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    args = read_run_args(out)
    records = read_metrics(out / "metrics.jsonl")
    data, datasets_used = training_data(args)
    nsp = not args.get("no_nsp", False)
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["bert", "fill-mask", "masked-lm", *(["next-sentence-prediction"] if nsp else []), "bert-recipes"],
        datasets=datasets_used,
        model_name=repo_id,
        eval_results=glue_eval_results((glue or {}).get("tasks")),
    )
    return ModelCard.from_template(
        card_data,
        template_str=read_template("pretrained_bert.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        nsp=nsp,
        architecture={
            "layers": config["num_hidden_layers"],
            "hidden size": config["hidden_size"],
            "attention heads": config["num_attention_heads"],
            "feed-forward size": config["intermediate_size"],
            "vocabulary": config["vocab_size"],
            "max positions": config["max_position_embeddings"],
            "parameters (encoder)": f"{parameter_count(config) / 1e6:.1f}M",
        },
        tokenizer=tokenizer_facts(out),
        training_data=data,
        hyperparameters={k: args[k] for k in PRETRAINING_HYPERPARAMETERS if k in args},
        compute=compute_used(newest_trainer_state(out), records),
        metrics={name: f"{value:.4f}" for name, value in final_metrics(records).items()},
        curve=training_curve(records, out),
        held_out=held_out_mlm(mlm_eval, out),
        glue=glue_summary_rows(glue),
    )


def tokenizer_card(
    tokenizer_dir: str | Path, repo_id: str | None = None, language: str = "en", license: str = "apache-2.0"
) -> ModelCard:
    """The card of a tokenizer-only repo."""
    out = Path(tokenizer_dir)
    repo_id = repo_id or out.resolve().name
    args = read_run_args(out)
    data, datasets_used = training_data(args)
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers",
        tags=["tokenizer", "wordpiece", "bert", "bert-recipes"],
        datasets=datasets_used,
    )
    return ModelCard.from_template(
        card_data,
        template_str=read_template("tokenizer.md"),
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        tokenizer=tokenizer_facts(out),
        training_data=data,
        settings={k: v for k, v in args.items() if k in ("vocab_size", "min_frequency", "lowercase", "strip_accents")},
    )


def card_for_folder(
    folder: str | Path,
    repo_id: str | None = None,
    glue: dict[str, Any] | None = None,
    mlm_eval: dict[str, Any] | None = None,
) -> ModelCard:
    """The card that fits what a folder holds: a GLUE, SQuAD or NER fine-tune, a pretrained model (with the GLUE
    and held-out MLM results given) or a tokenizer alone."""
    out = Path(folder)
    if not (out / "config.json").is_file():
        if glue or mlm_eval:
            raise UsageError(f"'{out}' holds no model: GLUE and MLM results go on a pretrained model's card")
        return tokenizer_card(out, repo_id)
    architectures = json.loads((out / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    results_file = out / "eval_results.json"
    heads = {"BertForSequenceClassification", "BertForQuestionAnswering", "BertForTokenClassification"}
    if heads & set(architectures) and results_file.is_file():
        results = json.loads(results_file.read_text(encoding="utf-8"))
        args = read_run_args(out)
        task = out.name  # a GLUE task's folder
        if "BertForQuestionAnswering" in architectures:
            task = "squad_v2" if args.get("version_2_with_negative") else "squad"
        elif "BertForTokenClassification" in architectures:
            task = "ner"
        return finetuning_card(out, {task: results}, args.get("model_name_or_path", "a BERT checkpoint"), repo_id)
    return pretraining_card(out, repo_id, glue, mlm_eval)
