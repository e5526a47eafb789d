"""Predictions in a split's row order, computed over batches of similar length."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
from transformers import PreTrainedModel, Trainer, TrainingArguments


def prediction_trainer(model: PreTrainedModel, args: TrainingArguments, collator, tokenizer) -> Trainer:
    """A Trainer that predicts batches in the order it is given them: its length grouping would shuffle the rows."""
    sequential = dataclasses.replace(
        args, train_sampling_strategy="sequential", eval_strategy="no", load_best_model_at_end=False
    )
    return Trainer(model=model, args=sequential, data_collator=collator, processing_class=tokenizer)


def predict_in_order(predictor: Trainer, split: datasets.Dataset, drop: tuple[str, ...] = ()):
    """The model's outputs (an array, or a tuple of arrays) for each row of `split`, in its row order; the rows are
    predicted sorted by their `length` column so each batch pads little. Columns in `drop` (labels: test sets have
    none, and the metrics are computed apart) are not given to the model."""
    order = np.argsort(np.asarray(split["length"]), kind="stable")
    kept = split.select(order).remove_columns([c for c in drop if c in split.column_names])
    outputs = predictor.predict(kept).predictions
    restored = []
    for raw in outputs if isinstance(outputs, tuple) else (outputs,):
        values = np.empty_like(raw)
        values[order] = raw
        restored.append(values)
    return tuple(restored) if isinstance(outputs, tuple) else restored[0]
