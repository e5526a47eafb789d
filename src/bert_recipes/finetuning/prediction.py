"""Predictions in a split's row order, computed over batches of similar length."""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np
from transformers import PreTrainedModel, Trainer, TrainingArguments

from bert_recipes.finetuning.batches import InOrderTrainer


def prediction_trainer(model: PreTrainedModel, args: TrainingArguments, collator, tokenizer) -> Trainer:
    """A Trainer that only predicts, keeping the order it is given the rows in (an InOrderTrainer, as the QA
    recipe's trainer is): the training run's Trainer groups evaluation rows by length, which shuffles them."""
    predicting = dataclasses.replace(args, eval_strategy="no", load_best_model_at_end=False)
    return InOrderTrainer(model=model, args=predicting, data_collator=collator, processing_class=tokenizer)


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
