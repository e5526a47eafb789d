"""Held-out masked-LM (and NSP) metrics of a model wrapped in SparsePretrainingLoss, on fixed masked batches."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def mlm_metrics(
    model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, float]:
    """Loss, accuracy and perplexity over every masked position of `batches` (NSP accuracy when they have labels)."""
    was_training = model.training
    model.eval()
    loss_sum = correct = count = nsp_correct = nsp_count = 0.0
    for batch in batches:
        out = model(**{k: v.to(device) for k, v in batch.items()})
        masked = float(out["mlm_count"])
        loss_sum += float(out["mlm_loss"]) * masked
        correct += float(out["mlm_correct"])
        count += masked
        if "next_sentence_label" in batch:
            nsp_correct += float(out["nsp_correct"])
            nsp_count += batch["next_sentence_label"].numel()
    model.train(was_training)
    mlm_loss = loss_sum / max(count, 1.0)
    metrics = {
        "eval_mlm_loss": mlm_loss,
        "eval_mlm_accuracy": correct / max(count, 1.0),
        "eval_perplexity": math.exp(min(mlm_loss, 50.0)),
    }
    if nsp_count:
        metrics["eval_nsp_accuracy"] = nsp_correct / nsp_count
    return metrics
