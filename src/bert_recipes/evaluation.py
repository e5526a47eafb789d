"""Held-out masked-LM (and NSP) metrics of a model wrapped in SparsePretrainingLoss, on fixed masked batches; and
the same metrics for any number of BERT checkpoints, side by side, on the same masked positions."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig

from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig, held_out_batches, validate_data_config
from bert_recipes.errors import UsageError
from bert_recipes.from_checkpoint import (
    check_positions,
    load_checkpoint_config,
    load_checkpoint_tokenizer,
    load_pretrained_bert,
)
from bert_recipes.modeling import SparsePretrainingLoss


@torch.no_grad()
def mlm_metrics(
    model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device, accelerator=None
) -> dict[str, float]:
    """Loss, accuracy and perplexity over every masked position of `batches` (NSP accuracy when they have labels).

    With an `accelerator` of several processes each rank scores every world_size-th batch and the sums are reduced:
    the numbers of one process in a world_size-th of the time. Every rank runs the same number of forward passes
    (a rank short of batches re-scores one with weight 0), since DDP and ZeRO-3 forwards are collective.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    was_training = model.training
    model.eval()
    # masked-token loss sum, correct, count; NSP correct, count: summed on the device, read once at the end
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    for index in range(rank, rank + world * math.ceil(len(batches) / world), world):
        batch = batches[min(index, len(batches) - 1)]
        out = model(**{k: v.to(device) for k, v in batch.items()})
        masked = out["mlm_count"].double()
        parts = [out["mlm_loss"].double() * masked, out["mlm_correct"].double(), masked]
        if "next_sentence_label" in batch:
            # filled on the device: a tensor copied from the host would wait for it
            labels = torch.full((), batch["next_sentence_label"].numel(), dtype=torch.float64, device=device)
            parts += [out["nsp_correct"].double(), labels]
        sums[: len(parts)] += torch.stack(parts) * (index < len(batches))
    model.train(was_training)
    if world > 1:
        sums = accelerator.reduce(sums, "sum")
    loss_sum, correct, count, nsp_correct, nsp_count = sums.tolist()
    mlm_loss = loss_sum / max(count, 1.0)
    metrics = {
        "eval_mlm_loss": mlm_loss,
        "eval_mlm_accuracy": correct / max(count, 1.0),
        "eval_perplexity": math.exp(min(mlm_loss, 50.0)),
    }
    if nsp_count:
        metrics["eval_nsp_accuracy"] = nsp_correct / nsp_count
    return metrics


# ---- checkpoints side by side ----------------------------------------------------------------------------------


@dataclass
class MlmEvalConfig:
    model_name_or_path: list[str] = field(
        default_factory=list, metadata={"help": "BERT checkpoints to score: directories or Hub ids (one or more)."}
    )
    validation_files: list[str] = field(
        default_factory=list, metadata={"help": "Held-out text (.txt, .txt.gz, .jsonl[.gz], .parquet)."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "One tokenizer for every model, hence the same masked positions; default: each model's."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the pairing and masking of the held-out examples."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sequences per batch."})
    output_file: str = field(default="mlm_eval.json", metadata={"help": "Where the results are written as JSON."})


@dataclass
class HeldOutDataConfig(DataConfig):
    """DataConfig with defaults that score every document of --validation_files."""

    eval_every_nth_document: int = field(
        default=1,
        metadata={
            "help": "Score one document in N (1: all); a pretraining run's value, seed and batch size reproduce "
            "its held-out examples and masks."
        },
    )
    eval_examples: int = field(default=10_000, metadata={"help": "Most held-out examples scored."})


def check_eval_config(config: MlmEvalConfig, data: DataConfig) -> None:
    if not config.model_name_or_path:
        raise UsageError("no model given: pass --model_name_or_path DIR_OR_HUB_ID [DIR_OR_HUB_ID ...]")
    if not config.validation_files and not data.prepared_data_dir:
        raise UsageError("no held-out text given: pass --validation_files FILE [FILE ...]")
    for name in config.validation_files:
        if not Path(name).is_file():
            raise UsageError(f"--validation_files '{name}' does not exist: check the path")
    if config.per_device_eval_batch_size <= 0 or data.eval_examples <= 0 or data.eval_every_nth_document <= 0:
        raise UsageError(
            "--per_device_eval_batch_size, --eval_examples and --eval_every_nth_document must be 1 or more"
        )


def evaluate_checkpoints(config: MlmEvalConfig, data: DataConfig) -> list[dict[str, Any]]:
    """One record of held-out MLM metrics per --model_name_or_path, in order; NSP accuracy where it has the head.

    Every config and tokenizer is checked before any weights are read or examples built.
    """
    check_eval_config(config, data)
    sources = []
    for source in config.model_name_or_path:
        bert_config = load_checkpoint_config(source)
        check_positions(source, bert_config, data.max_seq_length)
        tokenizer = load_checkpoint_tokenizer(source, bert_config, config.tokenizer_name_or_path)
        validate_data_config(data, tokenizer)
        sources.append((source, bert_config, tokenizer))
    corpus = CorpusConfig(train_files=config.validation_files)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # keyed by the whole tokenizer: models that share one are scored on the very same masked batches
    batches_by_tokenizer: dict[str, list[dict[str, torch.Tensor]]] = {}
    results = []
    for source, bert_config, tokenizer in sources:
        key = tokenizer.backend_tokenizer.to_str()
        if key not in batches_by_tokenizer:
            batches_by_tokenizer[key] = held_out_batches(
                corpus, data, tokenizer, config.seed, config.per_device_eval_batch_size
            )
        batches = batches_by_tokenizer[key]
        if not batches:
            raise UsageError("--validation_files gave no examples: pass documents of two or more sentences")
        results.append({"model_name_or_path": source, **score_checkpoint(source, bert_config, batches, device)})
    return results


def score_checkpoint(
    source: str, bert_config: BertConfig, batches: list[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, float]:
    model, fresh = load_pretrained_bert(source, bert_config)
    if "cls.predictions" in fresh:
        raise UsageError(
            f"--model_name_or_path '{source}' has no MLM head: pass a BertForPreTraining or BertForMaskedLM"
        )
    if "cls.seq_relationship" in fresh:
        # a freshly initialised NSP head would score chance: leave NSP out rather than report noise
        batches = [{k: v for k, v in b.items() if k != "next_sentence_label"} for b in batches]
    metrics = mlm_metrics(SparsePretrainingLoss(model).to(device), batches, device)
    metrics["eval_masked_tokens"] = sum(int((b["labels"] != -100).sum()) for b in batches)
    metrics["eval_sequences"] = sum(len(b["input_ids"]) for b in batches)
    return metrics


COLUMNS = {
    "eval_mlm_loss": "MLM loss",
    "eval_mlm_accuracy": "MLM accuracy",
    "eval_perplexity": "perplexity",
    "eval_nsp_accuracy": "NSP accuracy",
}


def results_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per model; '-' where a model has no NSP head."""
    lines = ["| model | " + " | ".join(COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for record in results:
        cells = [f"{record[k]:.4f}" if k in record else "-" for k in COLUMNS]
        lines.append(f"| {record['model_name_or_path']} | " + " | ".join(cells) + " |")
    first = results[0]
    lines.append(f"\n{first['eval_masked_tokens']:,} masked tokens in {first['eval_sequences']:,} sequences")
    return "\n".join(lines)


def write_results(path: str | Path, results: list[dict[str, Any]], config: MlmEvalConfig, data: DataConfig) -> None:
    settings = {**asdict(data), "seed": config.seed, "per_device_eval_batch_size": config.per_device_eval_batch_size}
    settings["validation_files"] = config.validation_files
    settings["tokenizer_name_or_path"] = config.tokenizer_name_or_path
    Path(path).write_text(json.dumps({"settings": settings, "results": results}, indent=2), encoding="utf-8")
