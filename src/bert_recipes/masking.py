"""Dynamic masking for BERT pretraining: a fresh 80/10/10 mask every time a sequence is seen.

Built on transformers' DataCollatorForLanguageModeling (token-level 80/10/10 masking). What it lacks:
its whole-word mode finds words from character offsets, which pairs assembled from several encodings do not
have, and it drops the 10% random / 10% unchanged split. The pair builder keeps a `word_starts` flag per token
instead (from the fast tokenizer's word ids, so any fast tokenizer works), and whole words are masked from it.
All randomness comes from `self.generator`, which checkpoints save.

With `max_predictions_per_seq` (google-research/bert's cap: 20 at length 128, 80 at 512) a row keeps at most that
many predicted positions, chosen at random among its masked ones (the rest get their token back), and the batch
carries `masked_positions`: a fixed (batch, max_predictions_per_seq) shape for the MLM head, which lets
torch.compile build one graph instead of one per masked count. Without it the batch carries `masked_indices`, the
flat positions of the predicted tokens, found here on the host: selecting them by a boolean mask on the GPU would
make the host wait for the device every micro-batch (the size of the selection is only known there).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase


def pad_rows(rows: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    """The rows padded on the right to `length`, through one flat numpy conversion: torch.tensor on nested lists
    (what tokenizer.pad ends in) took 4x as long, 11% of the streamed pipeline's profiled time."""
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    out = np.full((len(rows), length), value, dtype=np.int64)
    out[np.arange(length) < lengths[:, None]] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64)
    return torch.from_numpy(out)


class PretrainingCollator(DataCollatorForLanguageModeling):
    """Pads to a multiple of 8 and masks `mlm_probability` of the tokens (or of the words, with whole_word_mask):
    80% become [MASK], 10% a random token, 10% stay; labels are -100 where nothing is predicted."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        pad_to_multiple_of: int = 8,
        seed: int = 0,
        max_predictions_per_seq: int = 0,
    ):
        # the parent's own whole-word mode stays off: it needs offsets and turns 80/10/10 into 100/0/0
        super().__init__(tokenizer, mlm_probability=mlm_probability, pad_to_multiple_of=pad_to_multiple_of, seed=seed)
        self.mask_whole_words = whole_word_mask
        self.max_predictions = max_predictions_per_seq
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        # created now rather than on first call, so a checkpoint can restore its state before any batch
        self.generator = torch.Generator().manual_seed(seed)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.padded(examples)
        protected = torch.isin(batch["input_ids"], self.special_ids) | (batch["attention_mask"] == 0)
        if self.mask_whole_words:
            starts = pad_rows([e["word_starts"] for e in examples], batch["input_ids"].shape[1], 1)
            batch["input_ids"], batch["labels"] = self.mask_words(batch["input_ids"], starts, protected)
        else:
            batch["input_ids"], batch["labels"] = self.torch_mask_tokens(
                batch["input_ids"], special_tokens_mask=protected
            )
        if self.max_predictions > 0:
            batch["input_ids"], batch["labels"], batch["masked_positions"] = self.cap_predictions(
                batch["input_ids"], batch["labels"]
            )
        else:
            batch["masked_indices"] = (batch["labels"].flatten() != -100).nonzero().squeeze(1)
        return batch

    def padded(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """input_ids, token_type_ids and attention_mask padded on the right (as BERT is) to a multiple of
        `pad_to_multiple_of`, and next_sentence_label when the examples have it."""
        longest = max(len(e["input_ids"]) for e in examples)
        length = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {"input_ids": self.tokenizer.pad_token_id, "token_type_ids": 0, "attention_mask": 0}
        batch = {k: pad_rows([e[k] for e in examples], length, v) for k, v in pad_values.items() if k in examples[0]}
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples])
        return batch

    def cap_predictions(
        self, input_ids: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep at most `max_predictions` predicted positions per row; returns them as a fixed-width index tensor,
        padded with position 0 ([CLS], whose label is always -100)."""
        scores = torch.rand(labels.shape, generator=self.generator).masked_fill(labels == -100, -1.0)
        top, positions = scores.topk(min(self.max_predictions, labels.shape[1]), dim=1)
        chosen = top >= 0
        kept = torch.zeros(labels.shape, dtype=torch.bool).scatter_(1, positions, chosen)
        dropped = (labels != -100) & ~kept
        input_ids = torch.where(dropped, labels, input_ids)
        labels = labels.masked_fill(~kept, -100)
        positions = positions.masked_fill(~chosen, 0)
        padded = torch.zeros(labels.shape[0], self.max_predictions, dtype=torch.long)
        padded[:, : positions.shape[1]] = positions
        return input_ids, labels, padded

    def mask_words(
        self, input_ids: torch.Tensor, word_starts: torch.Tensor, protected: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pick words with probability mlm_probability; every piece of a picked word is predicted, each piece
        then replaced 80/10/10 on its own as google-research/bert does."""
        word_index = torch.cumsum(word_starts, dim=1)
        picked_words = torch.rand(word_index.shape[0], word_index.shape[1] + 1, generator=self.generator)
        chosen = torch.gather(picked_words < self.mlm_probability, 1, word_index) & ~protected
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        draw = torch.rand(input_ids.shape, generator=self.generator)
        random_tokens = torch.randint(len(self.tokenizer), input_ids.shape, generator=self.generator)
        masked = input_ids.clone()
        masked[chosen & (draw < self.mask_replace_prob)] = self.tokenizer.mask_token_id
        swap = chosen & (draw >= self.mask_replace_prob) & (draw < self.mask_replace_prob + self.random_replace_prob)
        masked[swap] = random_tokens[swap]
        return masked, labels
