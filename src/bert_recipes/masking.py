"""Dynamic masking for BERT pretraining: a fresh 80/10/10 mask every time a sequence is seen.

transformers' DataCollatorForLanguageModeling masks tokens independently and finds whole words from character
offsets, which sentence pairs assembled from several encodings no longer have. The pair builder keeps a
`word_starts` flag per token instead (from the fast tokenizer's word ids, so any fast tokenizer works), and this
collator masks whole words from it. All randomness comes from `self.generator`, which checkpoints save.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

PADDED_COLUMNS = ("input_ids", "token_type_ids", "attention_mask", "word_starts")


def pad_rows(rows: list[list[int]], length: int, value: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


class PretrainingCollator:
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
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.vocab_size = len(tokenizer)
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mlm_probability = mlm_probability
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        length = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = pad_rows([e["input_ids"] for e in examples], length, self.pad_token_id)
        batch = {
            "token_type_ids": pad_rows([e["token_type_ids"] for e in examples], length, 0),
            "attention_mask": pad_rows([[1] * len(e["input_ids"]) for e in examples], length, 0),
        }
        maskable = ~torch.isin(input_ids, self.special_ids) & batch["attention_mask"].bool()
        if self.whole_word_mask:
            word_starts = pad_rows([e["word_starts"] for e in examples], length, 1)
            chosen = self.choose_whole_words(word_starts, maskable)
        else:
            chosen = self.bernoulli(input_ids.shape) & maskable
        batch["input_ids"], batch["labels"] = self.apply_mask(input_ids, chosen)
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor([e["next_sentence_label"] for e in examples])
        return batch

    def bernoulli(self, shape: torch.Size, probability: float | None = None) -> torch.Tensor:
        p = self.mlm_probability if probability is None else probability
        return torch.rand(shape, generator=self.generator) < p

    def choose_whole_words(self, word_starts: torch.Tensor, maskable: torch.Tensor) -> torch.Tensor:
        """Pick words with probability mlm_probability; a picked word masks all of its pieces."""
        word_index = torch.cumsum(word_starts, dim=1)
        rows, length = word_index.shape
        picked_words = self.bernoulli(torch.Size((rows, length + 1)))
        return torch.gather(picked_words, 1, word_index) & maskable

    def apply_mask(self, input_ids: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
        draw = torch.rand(input_ids.shape, generator=self.generator)
        random_tokens = torch.randint(self.vocab_size, input_ids.shape, generator=self.generator)
        masked = input_ids.clone()
        masked[chosen & (draw < 0.8)] = self.mask_token_id
        swap = chosen & (draw >= 0.8) & (draw < 0.9)
        masked[swap] = random_tokens[swap]
        return masked, labels
