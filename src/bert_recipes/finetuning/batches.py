"""Batches for the Trainer: each padded to its longest row, with only what the model's forward takes."""

from __future__ import annotations

import torch
from torch.utils.data import SequentialSampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, Trainer


class ModelInputCollator:
    """Pads a batch to its longest row (a multiple of 8, for tensor cores), passing the model only its inputs and
    `targets`; `padder` pads them (DataCollatorWithPadding, or DataCollatorForTokenClassification for per-token
    labels). Dataset columns the model does not take (length, example ids, offsets) stop here."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, targets: tuple[str, ...] = ("label",), padder=None):
        self.keep = {*tokenizer.model_input_names, *targets}
        self.pad = (padder or DataCollatorWithPadding)(tokenizer, pad_to_multiple_of=8)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.pad([{k: v for k, v in row.items() if k in self.keep} for row in rows])


class InOrderTrainer(Trainer):
    """A Trainer whose evaluation keeps the dataset's row order, which its length grouping would shuffle: the
    recipes that map outputs back to rows (spans to questions) sort the rows by length themselves."""

    def _get_eval_sampler(self, eval_dataset):
        # as Trainer does without length grouping: across processes, Accelerate shards the batches in order
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
