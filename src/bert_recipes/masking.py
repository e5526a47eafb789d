"""Dynamic masking for BERT pretraining: a fresh 80/10/10 mask every time a sequence is seen.

Built on transformers' DataCollatorForLanguageModeling (padding, token-level 80/10/10 masking). What it lacks:
its whole-word mode finds words from character offsets, which pairs assembled from several encodings do not
have, and it drops the 10% random / 10% unchanged split. The pair builder keeps a `word_starts` flag per token
instead (from the fast tokenizer's word ids, so any fast tokenizer works), and whole words are masked from it.
All randomness comes from `self.generator`, which checkpoints save.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase
from transformers.data.data_collator import pad_without_fast_tokenizer_warning

MODEL_COLUMNS = ("input_ids", "token_type_ids", "attention_mask", "next_sentence_label")


def pad_rows(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


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
    ):
        # the parent's own whole-word mode stays off: it needs offsets and turns 80/10/10 into 100/0/0
        super().__init__(tokenizer, mlm_probability=mlm_probability, pad_to_multiple_of=pad_to_multiple_of, seed=seed)
        self.mask_whole_words = whole_word_mask
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        # created now rather than on first call, so a checkpoint can restore its state before any batch
        self.generator = torch.Generator().manual_seed(seed)

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = [{k: e[k] for k in MODEL_COLUMNS if k in e} for e in examples]
        batch = dict(
            pad_without_fast_tokenizer_warning(
                self.tokenizer, features, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of
            )
        )
        protected = torch.isin(batch["input_ids"], self.special_ids) | (batch["attention_mask"] == 0)
        if self.mask_whole_words:
            starts = pad_rows([e["word_starts"] for e in examples], batch["input_ids"].shape[1], 1)
            batch["input_ids"], batch["labels"] = self.mask_words(batch["input_ids"], starts, protected)
        else:
            batch["input_ids"], batch["labels"] = self.torch_mask_tokens(
                batch["input_ids"], special_tokens_mask=protected
            )
        return batch

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
