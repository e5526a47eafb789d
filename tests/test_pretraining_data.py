"""Sentence pairs and packed sequences: structure, true/random next segments, statistics, sharding, resume."""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys

import datasets
import pytest
from datasets.distributed import split_dataset_by_node
from transformers import AutoTokenizer

from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.errors import UsageError
from bert_recipes.pretraining_data import (
    DataConfig,
    PairBuilder,
    Segment,
    build_pretraining_datasets,
    examples_from_documents,
    split_sentences,
    validate_data_config,
)
from tests.conftest import REPO_ROOT

CLS, SEP = 2, 3


def synthetic_documents(count: int, seed: int) -> list[list[Segment]]:
    """Token id 1000 + 100000*d + 100*s + k is token k of sentence s of document d: pairs trace back to their source."""
    rng = random.Random(seed)
    docs = []
    for d in range(count):
        sentences = [rng.randint(3, 30) for _ in range(rng.randint(1, 40))]
        docs.append(
            [Segment([1000 + 100000 * d + 100 * s + k for k in range(n)], [1] * n) for s, n in enumerate(sentences)]
        )
    return docs


def source(token: int) -> tuple[int, int]:
    return (token - 1000) // 100000, (token - 1000) % 100000 // 100


@pytest.fixture(scope="module")
def synthetic_pairs() -> list[dict]:
    builder = PairBuilder(max_tokens=125, short_seq_prob=0.1, nsp_probability=0.5, cls_id=CLS, sep_id=SEP)
    docs = synthetic_documents(600, seed=0)
    return builder.group_examples(docs, random.Random(0))


def segments_of(example: dict) -> tuple[list[int], list[int]]:
    ids = example["input_ids"]
    first_sep = ids.index(SEP)
    return ids[1:first_sep], ids[first_sep + 1 : -1]


def test_pairs_are_cls_a_sep_b_sep_with_type_ids(synthetic_pairs):
    for e in synthetic_pairs:
        a, b = segments_of(e)
        assert e["input_ids"] == [CLS, *a, SEP, *b, SEP] and a and b
        assert e["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert len(e["input_ids"]) <= 128 and e["attention_mask"] == [1] * len(e["input_ids"])


def test_is_next_pairs_continue_their_document_and_random_ones_do_not(synthetic_pairs):
    for e in synthetic_pairs:
        a, b = segments_of(e)
        doc_a = {source(t)[0] for t in a}
        assert len(doc_a) == 1, "segment A is consecutive text from one document"
        if e["next_sentence_label"] == 0:
            assert {source(t)[0] for t in b} == doc_a
            assert a[-1] < b[0]
            if len(a) + len(b) < 125:  # not truncated: B starts with the sentence right after A's last
                assert source(b[0])[1] == source(a[-1])[1] + 1 and b[0] % 100 == 0
        else:
            assert not {source(t)[0] for t in b} & doc_a


def test_label_ratio_is_one_half_within_binomial_bounds(synthetic_pairs):
    n = len(synthetic_pairs)
    random_count = sum(e["next_sentence_label"] for e in synthetic_pairs)
    assert n > 2000
    assert abs(random_count - n / 2) <= 4.5 * math.sqrt(n / 4), (random_count, n)


def test_most_sequences_reach_the_target_length(synthetic_pairs):
    lengths = [len(e["input_ids"]) for e in synthetic_pairs]
    assert max(lengths) <= 128
    # 10% draw a shorter target, and a document's last chunk may be short
    assert sum(length >= 115 for length in lengths) / len(lengths) > 0.6


def test_sentences_come_from_a_real_segmenter():
    assert split_sentences("Mr. Smith arrived at 3 p.m. today. He left.\nNew paragraph here") == [
        "Mr. Smith arrived at 3 p.m. today.",
        "He left.",
        "New paragraph here",
    ]


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


SMALL = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=10, eval_examples=50)


def take(stream, n: int) -> list[dict]:
    return list(itertools.islice(stream, n))


def test_real_corpus_statistics(tokenizer):
    train, evaluation = build_pretraining_datasets(CorpusConfig(), SMALL, tokenizer, seed=3)
    rows = take(train, 3000)
    n, random_count = len(rows), sum(r["next_sentence_label"] for r in rows)
    assert abs(random_count - n / 2) <= 4.5 * math.sqrt(n / 4)
    assert all(len(r["input_ids"]) <= 64 for r in rows)
    assert len(take(evaluation, 1000)) == 50
    assert {len(r["word_starts"]) == len(r["input_ids"]) for r in rows} == {True}


def test_no_nsp_packs_full_length_sequences(tokenizer):
    config = DataConfig(max_seq_length=64, no_nsp=True, document_buffer_size=16)
    rows = take(build_pretraining_datasets(CorpusConfig(), config, tokenizer, seed=3)[0], 500)
    assert "next_sentence_label" not in rows[0]
    assert sum(len(r["input_ids"]) == 64 for r in rows) / len(rows) > 0.95
    assert all(r["input_ids"][0] == CLS and r["input_ids"][-1] == SEP and set(r["token_type_ids"]) == {0} for r in rows)


def test_two_ranks_get_disjoint_examples(tokenizer):
    train, _ = build_pretraining_datasets(CorpusConfig(), SMALL, tokenizer, seed=3)
    rank0 = take(split_dataset_by_node(train, 0, 2), 300)
    rank1 = take(split_dataset_by_node(train, 1, 2), 300)
    both = take(train, 600)
    assert [r["input_ids"] for r in rank0] == [r["input_ids"] for r in both[0::2]]
    assert [r["input_ids"] for r in rank1] == [r["input_ids"] for r in both[1::2]]


def test_resume_from_state_continues_with_the_same_next_example_twice(tokenizer):
    def stream():
        return build_pretraining_datasets(CorpusConfig(), SMALL, tokenizer, seed=3)[0]

    reference = take(stream(), 900)
    first = stream()
    it = iter(first)
    take(it, 350)
    state = first.state_dict()
    second = stream()
    second.load_state_dict(state)
    it2 = iter(second)
    assert take(it2, 300) == reference[350:650]
    third = stream()
    third.load_state_dict(second.state_dict())
    assert take(third, 250) == reference[650:900]


def test_epochs_pair_differently_and_seeds_reproduce(tokenizer):
    def first_rows(seed: int, epoch: int) -> list:
        return [
            r["input_ids"]
            for r in take(build_pretraining_datasets(CorpusConfig(), SMALL, tokenizer, seed, epoch)[0], 50)
        ]

    assert first_rows(3, 0) == first_rows(3, 0)
    assert first_rows(3, 0) != first_rows(3, 1)


def test_streamed_and_on_disk_examples_are_identical(tokenizer):
    streamed = load_corpus(CorpusConfig())
    in_memory = datasets.Dataset.from_list(take(streamed, 80))
    from_stream = take(
        examples_from_documents(
            datasets.IterableDataset.from_generator(lambda: iter(in_memory)), tokenizer, SMALL, 3, 0
        ),
        10**6,
    )
    on_disk = examples_from_documents(in_memory, tokenizer, SMALL, 3, 0, num_proc=2)
    assert len(from_stream) == len(on_disk) > 500
    assert from_stream == on_disk.to_list()


def test_a_document_longer_than_anything_else_stays_bounded(tokenizer):
    huge = ("word " * 200_000).strip()
    corpus = datasets.Dataset.from_dict({"text": [huge, "A short one. And another."]})
    config = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=0)
    rows = examples_from_documents(corpus, tokenizer, config, 3, 0).to_list()
    assert rows and max(len(r["input_ids"]) for r in rows) <= 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_seq_length": 4}, "too short"),
        ({"max_seq_length": 100000}, "exceeds the tokenizer's model_max_length"),
        ({"mlm_probability": 1.5}, "between 0 and 1"),
        ({"document_buffer_size": 1}, "at least 2"),
    ],
)
def test_bad_data_config_is_a_usage_error(tokenizer, change, message):
    with pytest.raises(UsageError, match=message):
        validate_data_config(DataConfig(**change), tokenizer)


def test_tokenizer_without_mask_token_is_refused(tokenizer):
    no_mask = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    no_mask.mask_token = None
    with pytest.raises(UsageError, match=r"lacks \[MASK\]"):
        validate_data_config(DataConfig(), no_mask)


@pytest.mark.parametrize("text", ["", "Only one sentence here."], ids=["empty", "one_sentence"])
def test_prepare_data_refuses_a_corpus_without_pairs(tokenizer_dir, tmp_path, text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "prepare_data.py"), "--train_files", str(corpus),
         "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert ("no training examples" in result.stderr or "is empty" in result.stderr) and "Traceback" not in result.stderr


def test_prepared_data_trains_with_the_same_examples(tokenizer_dir, tmp_path):
    out = tmp_path / "prepared"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "prepare_data.py"), "--tokenizer_name_or_path", str(tokenizer_dir),
         "--output_dir", str(out), "--max_seq_length", "64", "--document_buffer_size", "16", "--num_proc", "2",
         "--dupe_factor", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    config = DataConfig(max_seq_length=64, prepared_data_dir=str(out))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train, evaluation = build_pretraining_datasets(CorpusConfig(), config, tokenizer, seed=3)
    rows = take(train, 100)
    assert len(rows) == 100 and all(len(r["input_ids"]) <= 64 for r in rows)
    assert len(evaluation) > 0
