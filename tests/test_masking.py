"""Dynamic masking: rates within binomial bounds, 80/10/10, specials and padding untouched, whole words."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoTokenizer

from bert_recipes.masking import PretrainingCollator, pad_rows


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def example(tokenizer, text_a: str, text_b: str) -> dict:
    enc = tokenizer(text_a, text_b)
    words = enc.word_ids()
    starts = [int(w is None or k == 0 or w != words[k - 1]) for k, w in enumerate(words)]
    return {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "word_starts": starts}


@pytest.fixture(scope="module")
def examples(tokenizer):
    texts = [
        "The extraordinarily unbelievable circumstances surrounded everybody quite unexpectedly.",
        "Notwithstanding the incomprehensible bureaucracy, the townspeople persevered.",
        "She whispered something indistinguishable about the mysterious lighthouse keeper.",
    ]
    return [example(tokenizer, texts[i % 3], texts[(i + 1) % 3][: 20 + i % 50]) for i in range(400)]


def within_binomial(successes: int, trials: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(successes - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


def collate_many(collator, examples, rounds: int = 10):
    return [collator(examples[i : i + 40]) for _ in range(rounds) for i in range(0, len(examples), 40)]


def test_masked_fraction_and_80_10_10_split(tokenizer, examples):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.15, seed=1)
    maskable = chosen = as_mask = unchanged = 0
    for original, batch in ((examples[i : i + 40], collator(examples[i : i + 40])) for i in range(0, 400, 40)):
        ids = pad_rows([e["input_ids"] for e in original], batch["input_ids"].shape[1], tokenizer.pad_token_id)
        specials = torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
        maskable += int((~specials & batch["attention_mask"].bool()).sum())
        picked = batch["labels"] != -100
        chosen += int(picked.sum())
        as_mask += int((batch["input_ids"][picked] == tokenizer.mask_token_id).sum())
        unchanged += int((batch["input_ids"][picked] == ids[picked]).sum())
        assert torch.equal(batch["labels"][picked], ids[picked])
    assert within_binomial(chosen, maskable, 0.15)
    assert within_binomial(as_mask, chosen, 0.8)
    # "unchanged" also counts random replacements that drew the original token (1/vocab of the 10%)
    assert within_binomial(unchanged, chosen, 0.1 + 0.1 / len(tokenizer))


def test_specials_and_padding_are_never_masked(tokenizer, examples):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.9, seed=2)
    for batch in collate_many(collator, examples, rounds=2):
        picked = batch["labels"] != -100
        assert not picked[batch["attention_mask"] == 0].any()
        originals = batch["labels"][picked]
        assert not torch.isin(originals, torch.tensor(tokenizer.all_special_ids)).any()
        cls_sep = torch.isin(batch["input_ids"], torch.tensor([tokenizer.cls_token_id, tokenizer.sep_token_id]))
        assert (cls_sep & ~picked).sum() == 3 * len(batch["input_ids"])


def test_batches_are_padded_to_a_multiple_of_8(tokenizer, examples):
    batch = PretrainingCollator(tokenizer)(examples[:7])
    longest = max(len(e["input_ids"]) for e in examples[:7])
    assert batch["input_ids"].shape[1] % 8 == 0 and longest <= batch["input_ids"].shape[1] < longest + 8
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}


def test_whole_word_masking_masks_all_pieces_or_none(tokenizer, examples):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.3, whole_word_mask=True, seed=3)
    split_words = 0
    for start in range(0, 400, 40):
        group = examples[start : start + 40]
        batch = collator(group)
        for row, e in enumerate(group):
            picked = (batch["labels"][row, : len(e["input_ids"])] != -100).tolist()
            word = -1
            pieces: dict[int, list[bool]] = {}
            for k, is_start in enumerate(e["word_starts"]):
                word += is_start
                pieces.setdefault(word, []).append(picked[k])
            multi = [p for w, p in pieces.items() if len(p) > 1 and e["input_ids"][0] == tokenizer.cls_token_id]
            split_words += len(multi)
            assert all(all(p) or not any(p) for p in multi)
    assert split_words > 100, "the test text must contain words split into several pieces"


def test_same_seed_same_masks_and_generator_state_restores(tokenizer, examples):
    a, b = PretrainingCollator(tokenizer, seed=5), PretrainingCollator(tokenizer, seed=5)
    assert torch.equal(a(examples[:16])["input_ids"], b(examples[:16])["input_ids"])
    state = a.generator.get_state()
    first = a(examples[:16])
    a.generator.set_state(state)
    assert torch.equal(a(examples[:16])["labels"], first["labels"])
    assert not torch.equal(a(examples[:16])["labels"], first["labels"])
