"""Dynamic masking: rates within binomial bounds, 80/10/10, specials and padding untouched, whole words with any
fast tokenizer, exact restore of the generator."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.data import DataConfig, TrainingStream, examples_from_documents
from bert_recipes.masking import PretrainingCollator, pad_rows
from tests.conftest import DEMO_CORPUS

CONFIG = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=0)


def within_binomial(successes: int, trials: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(successes - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [
        row["text"][:3000]
        for row, _ in zip(load_corpus(CorpusConfig(train_files=[DEMO_CORPUS])), range(40), strict=False)
    ]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="module")
def examples(tokenizer, texts) -> list[dict]:
    """About 1,500 real pairs from the pipeline (so with word_starts), shorter ones included for padding."""
    return examples_from_documents(datasets.Dataset.from_dict({"text": texts}), tokenizer, CONFIG, 0, 0).to_list()


@pytest.fixture(scope="module")
def byte_level_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE with a tiny vocabulary: words split into many pieces and no "##" anywhere."""
    model = Tokenizer(models.BPE(unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    model.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=model,
        model_max_length=512,
        **dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], specials, strict=True)),
    )


def batches(collator, examples, size: int = 32):
    for i in range(0, len(examples), size):
        group = examples[i : i + size]
        yield group, collator(group)


def originals(group: list[dict], length: int, pad_id: int) -> torch.Tensor:
    return pad_rows([e["input_ids"] for e in group], length, pad_id)


@pytest.mark.parametrize("whole_word_mask", [False, True], ids=["tokens", "whole_words"])
def test_masked_fraction_and_80_10_10_split(tokenizer, examples, whole_word_mask):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.15, whole_word_mask=whole_word_mask, seed=1)
    specials = torch.tensor(tokenizer.all_special_ids)
    units = chosen_units = chosen = as_mask = unchanged = 0
    for group, batch in batches(collator, examples):
        ids = originals(group, batch["input_ids"].shape[1], tokenizer.pad_token_id)
        maskable = ~torch.isin(ids, specials) & batch["attention_mask"].bool()
        picked = batch["labels"] != -100
        assert torch.equal(batch["labels"][picked], ids[picked])
        if whole_word_mask:  # words are picked independently, so the binomial holds for words, not tokens
            starts = pad_rows([e["word_starts"] for e in group], ids.shape[1], 0).bool() & maskable
            units, chosen_units = units + int(starts.sum()), chosen_units + int((starts & picked).sum())
        else:
            units, chosen_units = units + int(maskable.sum()), chosen_units + int(picked.sum())
        chosen += int(picked.sum())
        as_mask += int((batch["input_ids"][picked] == tokenizer.mask_token_id).sum())
        unchanged += int((batch["input_ids"][picked] == ids[picked]).sum())
    assert units > 20_000
    assert within_binomial(chosen_units, units, 0.15), chosen_units / units
    assert within_binomial(as_mask, chosen, 0.8)
    # "unchanged" also counts random replacements that drew the original token (1/vocab of the 10%)
    assert within_binomial(unchanged, chosen, 0.1 + 0.1 / len(tokenizer))


@pytest.mark.parametrize("whole_word_mask", [False, True], ids=["tokens", "whole_words"])
def test_specials_and_padding_are_never_masked(tokenizer, examples, whole_word_mask):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.9, whole_word_mask=whole_word_mask, seed=2)
    specials = torch.tensor(tokenizer.all_special_ids)
    padded_rows = 0
    for group, batch in batches(collator, examples):
        ids = originals(group, batch["input_ids"].shape[1], tokenizer.pad_token_id)
        picked = batch["labels"] != -100
        padded_rows += int((batch["attention_mask"] == 0).any(dim=1).sum())
        assert not picked[batch["attention_mask"] == 0].any()
        assert not torch.isin(ids[picked], specials).any()
        assert torch.equal(batch["input_ids"][~picked], ids[~picked]), "what is not predicted is never changed"
        assert picked.sum() > 0.8 * (~torch.isin(ids, specials)).sum()
    assert padded_rows > 50, "the examples must include padded rows"


def test_batches_are_padded_to_a_multiple_of_8_and_keep_only_model_inputs(tokenizer, examples):
    group = [e for e in examples if len(e["input_ids"]) < 50][:7]
    batch = PretrainingCollator(tokenizer)(group)
    longest = max(len(e["input_ids"]) for e in group)
    assert batch["input_ids"].shape[1] % 8 == 0 and longest <= batch["input_ids"].shape[1] < longest + 8
    assert set(batch) == {
        "input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label", "masked_indices",
    }  # fmt: skip
    assert torch.equal(batch["masked_indices"], (batch["labels"].flatten() != -100).nonzero().flatten())
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in group]
    ids = originals(group, batch["input_ids"].shape[1], tokenizer.pad_token_id)
    assert torch.equal(batch["attention_mask"], (ids != tokenizer.pad_token_id).long())


def check_whole_words(collator, examples) -> int:
    """Assert each word is predicted whole or not at all; return how many multi-piece words were seen."""
    split_words = 0
    for group, batch in batches(collator, examples):
        for row, e in enumerate(group):
            picked = (batch["labels"][row, : len(e["input_ids"])] != -100).tolist()
            words: list[list[bool]] = []
            for k, is_start in enumerate(e["word_starts"]):
                if is_start:
                    words.append([])
                words[-1].append(picked[k])
            multi = [w for w in words if len(w) > 1]
            split_words += len(multi)
            assert all(all(w) or not any(w) for w in multi)
    return split_words


def test_whole_word_masking_masks_all_pieces_or_none(tokenizer, examples):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.3, whole_word_mask=True, seed=3)
    assert check_whole_words(collator, examples) > 1000


def test_whole_word_masking_works_without_hash_hash_prefixes(byte_level_tokenizer, texts):
    tokenizer = byte_level_tokenizer
    examples = examples_from_documents(datasets.Dataset.from_dict({"text": texts}), tokenizer, CONFIG, 0, 0).to_list()
    for e in examples[:200]:
        tokens = tokenizer.convert_ids_to_tokens(e["input_ids"])
        assert not any(t.startswith("##") for t in tokens)
        # a piece that carries the byte-level space marker always starts a word
        assert all(start for t, start in zip(tokens, e["word_starts"], strict=True) if t.startswith("Ġ"))
    collator = PretrainingCollator(tokenizer, mlm_probability=0.3, whole_word_mask=True, seed=3)
    assert check_whole_words(collator, examples) > 1000


def test_same_seed_same_masks_and_generator_state_restores(tokenizer, examples):
    a, b = PretrainingCollator(tokenizer, seed=5), PretrainingCollator(tokenizer, seed=5)
    assert torch.equal(a(examples[:16])["input_ids"], b(examples[:16])["input_ids"])
    state = a.generator.get_state()
    first = a(examples[:16])
    a.generator.set_state(state)
    assert torch.equal(a(examples[:16])["labels"], first["labels"])
    assert not torch.equal(a(examples[:16])["labels"], first["labels"]), "each call masks anew"


def test_max_predictions_caps_each_row_and_gives_fixed_positions(tokenizer, examples):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.4, seed=4, max_predictions_per_seq=5)
    capped_rows = 0
    for group, batch in batches(collator, examples[:256]):
        ids = originals(group, batch["input_ids"].shape[1], tokenizer.pad_token_id)
        picked = batch["labels"] != -100
        assert batch["masked_positions"].shape == (len(group), 5)
        assert int(picked.sum(1).max()) <= 5
        capped_rows += int((picked.sum(1) == 5).sum())
        # the positions are exactly the predicted ones; padding points at [CLS], never predicted
        from_positions = torch.zeros_like(picked).scatter_(1, batch["masked_positions"], True)
        assert torch.equal(from_positions & ~picked, from_positions & (torch.arange(ids.shape[1]) == 0))
        assert torch.equal(
            from_positions | (torch.arange(ids.shape[1]) == 0), picked | (torch.arange(ids.shape[1]) == 0)
        )
        # positions dropped by the cap get their own token back
        assert torch.equal(batch["input_ids"][~picked], ids[~picked])
    assert capped_rows > 200


def test_batches_are_padded_as_the_tokenizer_pads_them(tokenizer, examples):
    collator = PretrainingCollator(tokenizer, mlm_probability=0.0)
    columns = ("input_ids", "token_type_ids", "attention_mask", "next_sentence_label")
    sizes = set()
    for group, batch in batches(collator, examples[:300], size=2):
        expected = tokenizer.pad([{k: e[k] for k in columns} for e in group], pad_to_multiple_of=8, return_tensors="pt")
        assert set(batch) == {*columns, "labels", "masked_indices"}
        for column in columns:
            assert batch[column].dtype == expected[column].dtype
            assert torch.equal(batch[column], expected[column]), column
        sizes.add(batch["input_ids"].shape[1])
    # short rows in the groups: padding was exercised, to more than one length
    assert len(sizes) > 1 and any((b["attention_mask"] == 0).any() for _, b in batches(collator, examples[:300], 2))


@pytest.mark.parametrize("no_nsp", [False, True], ids=["nsp_pairs", "packed"])
@pytest.mark.parametrize("rate", [0.15, 0.4])
def test_the_masking_rate_reaches_the_training_batches_of_both_paths(tokenizer, no_nsp, rate):
    """--mlm_probability as the trainer's stream applies it, for BERT's pairs and for packed MLM-only sequences."""
    data = DataConfig(max_seq_length=64, document_buffer_size=16, no_nsp=no_nsp, mlm_probability=rate)
    stream = TrainingStream(CorpusConfig(train_files=[DEMO_CORPUS]), data, tokenizer, seed=3, batch_size=32)
    specials = torch.tensor(tokenizer.all_special_ids)
    maskable = picked = 0
    for _ in range(25):
        batch = stream.next_batch()
        assert ("next_sentence_label" in batch) != no_nsp
        picked += int((batch["labels"] != -100).sum())
        # a masked position no longer holds its token in input_ids: count the candidates from the labels' side
        originals = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
        maskable += int((~torch.isin(originals, specials) & batch["attention_mask"].bool()).sum())
    assert maskable > 20_000 and within_binomial(picked, maskable, rate), picked / maskable
