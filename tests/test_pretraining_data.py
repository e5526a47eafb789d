"""Sentence pairs and packed sequences: structure, true/random next segments, statistics, sharding, resume,
streamed == on disk, bad input."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
import json
import math
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import datasets
import pytest
from datasets.distributed import split_dataset_by_node
from transformers import AutoTokenizer

from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.data import (
    MAX_PIECE_CHARS,
    DataConfig,
    PairBuilder,
    Segment,
    build_pretraining_datasets,
    cut_into_pieces,
    epoch_documents,
    examples_from_documents,
    prepare_to_disk,
    split_sentences,
    validate_data_config,
)
from bert_recipes.errors import UsageError
from tests.conftest import DEMO_CORPUS, REPO_ROOT
from tests.test_trainer import losses_by_step, pretrain_in_process, tiny_args

CLS, SEP = 2, 3
SMALL = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=10, eval_examples=50)
DEMO = CorpusConfig(train_files=[DEMO_CORPUS])


def within_binomial(successes: int, trials: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(successes - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


def take(stream, n: int) -> list[dict]:
    return list(itertools.islice(stream, n))


# ---- pairing, on synthetic documents whose tokens name their source ------------------------------------------


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


# pieces of one long document share a key: documents 2k and 2k+1 are two pieces of document k
PIECE_KEYS = [d // 2 for d in range(600)]


@pytest.fixture(scope="module")
def synthetic_pairs() -> list[dict]:
    builder = PairBuilder(max_tokens=125, short_seq_prob=0.1, nsp_probability=0.5, cls_id=CLS, sep_id=SEP)
    return builder.group_examples(synthetic_documents(600, seed=0), random.Random(0), PIECE_KEYS)


def segments_of(example: dict) -> tuple[list[int], list[int]]:
    ids = example["input_ids"]
    first_sep = ids.index(SEP)
    return ids[1:first_sep], ids[first_sep + 1 : -1]


def test_pairs_are_cls_a_sep_b_sep_with_type_ids(synthetic_pairs):
    for e in synthetic_pairs:
        a, b = segments_of(e)
        assert e["input_ids"] == [CLS, *a, SEP, *b, SEP] and a and b
        assert e["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
        assert e["attention_mask"] == [1] * len(e["input_ids"]) and len(e["word_starts"]) == len(e["input_ids"])


def test_is_next_pairs_continue_their_document_and_random_ones_come_from_another(synthetic_pairs):
    for e in synthetic_pairs:
        a, b = segments_of(e)
        doc_a = {source(t)[0] for t in a}
        assert len(doc_a) == 1, "segment A is consecutive text from one document"
        if e["next_sentence_label"] == 0:
            assert {source(t)[0] for t in b} == doc_a and a[-1] < b[0]
            if len(a) + len(b) < 125:  # not truncated: B starts with the sentence right after A's last
                assert source(b[0])[1] == source(a[-1])[1] + 1 and b[0] % 100 == 0
        else:
            (doc,) = doc_a
            assert {PIECE_KEYS[source(t)[0]] for t in b} != {PIECE_KEYS[doc]}, "B never from a piece of A's document"


def test_label_ratio_is_one_half_within_binomial_bounds(synthetic_pairs):
    n = len(synthetic_pairs)
    assert n > 2000
    assert within_binomial(sum(e["next_sentence_label"] for e in synthetic_pairs), n, 0.5)


def test_lengths_never_exceed_and_most_reach_the_target(synthetic_pairs):
    lengths = [len(e["input_ids"]) for e in synthetic_pairs]
    assert max(lengths) <= 128
    # 10% of documents draw a shorter target, and a document's last chunk may be short
    assert sum(length >= 115 for length in lengths) / len(lengths) > 0.6


def test_one_document_in_ten_aims_at_a_shorter_random_length():
    """One-token sentences and true next segments only: a document's first pair is exactly as long as the target
    it drew, max_tokens unless it drew a shorter one (probability short_seq_prob, uniform over 2..max_tokens)."""
    max_tokens, count, probability = 125, 2000, DataConfig().short_seq_prob
    assert probability == 0.1
    docs = [[Segment([1000 + s], [1]) for s in range(max_tokens + 1)] for _ in range(count)]
    builder = PairBuilder(max_tokens, probability, nsp_probability=0.0, cls_id=CLS, sep_id=SEP)
    rng, keys = random.Random(0), list(range(count))
    lengths = [sum(map(len, segments_of(next(builder.document_pairs(docs, keys, d, rng))))) for d in range(count)]
    short = [n for n in lengths if n < max_tokens]
    assert set(lengths) - set(short) == {max_tokens} and all(n >= 2 for n in short)
    # a shorter draw lands on max_tokens itself once in 124; the bounds (138..259 of 2000) exclude 0.06 and 0.15
    assert within_binomial(len(short), count, probability * 123 / 124)


def test_unused_sentences_are_put_back_after_a_random_pair():
    """With a target no document reaches (so nothing is truncated), every sentence but a lone last one lands in a
    segment of its own document: the chunk's sentences not used for A are read again after a random B."""
    docs = synthetic_documents(300, seed=1)
    builder = PairBuilder(max_tokens=5000, short_seq_prob=0.0, nsp_probability=0.5, cls_id=CLS, sep_id=SEP)
    pairs = builder.group_examples(docs, random.Random(1))
    used = {source(t) for e in pairs for t in segments_of(e)[0]}
    used |= {source(t) for e in pairs if e["next_sentence_label"] == 0 for t in segments_of(e)[1]}
    assert sum(e["next_sentence_label"] for e in pairs) > 100
    assert {(d, s) for d, doc in enumerate(docs) for s in range(len(doc) - 1)} <= used


def test_sentences_come_from_a_real_segmenter():
    assert split_sentences("Mr. Smith arrived at 3 p.m. today. He left.\nNew paragraph here") == [
        "Mr. Smith arrived at 3 p.m. today.",
        "He left.",
        "New paragraph here",
    ]


def test_long_documents_are_cut_into_bounded_pieces_at_breaks():
    text = "\n".join(f"Paragraph {i} " + "word " * 3000 for i in range(100))
    pieces = cut_into_pieces(text)
    assert len(pieces) > 1 and max(map(len, pieces)) <= MAX_PIECE_CHARS
    assert all(p.startswith("Paragraph") for p in pieces)
    assert "".join(pieces).replace("\n", "") == text.replace("\n", "")


# ---- the pipeline on the real corpus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def train_stream(tokenizer, config: DataConfig = SMALL, seed: int = 3, epoch: int = 0):
    return build_pretraining_datasets(DEMO, config, tokenizer, seed=seed, epoch=epoch)[0]


def test_real_corpus_statistics(tokenizer):
    rows = take(train_stream(tokenizer), 3000)
    assert len(rows) == 3000
    assert within_binomial(sum(r["next_sentence_label"] for r in rows), len(rows), 0.5)
    assert all(len(r["input_ids"]) <= 64 and len(r["word_starts"]) == len(r["input_ids"]) for r in rows)
    assert sum(len(r["input_ids"]) >= 58 for r in rows) / len(rows) > 0.6
    assert all(r["input_ids"].count(tokenizer.sep_token_id) == 2 for r in rows)


def test_held_out_documents_never_reach_training_whatever_the_sharding(tokenizer, tmp_path):
    """Two files (two shards) read by two ranks: the held-out choice must not depend on the position in a shard."""
    texts = [row["text"] for row in take(load_corpus(DEMO), 120)]
    files = []
    for half in (0, 1):
        path = tmp_path / f"part{half}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[half::2]), encoding="utf-8")
        files.append(str(path))
    config = DataConfig(max_seq_length=64, document_buffer_size=8, eval_every_nth_document=5, eval_examples=10**6)
    corpus = CorpusConfig(train_files=files)
    _, evaluation = build_pretraining_datasets(corpus, config, tokenizer, seed=3)
    eval_ids = {tuple(r["input_ids"]) for r in evaluation}
    assert eval_ids
    train, _ = build_pretraining_datasets(corpus, config, tokenizer, seed=3, slots=2)
    for rank in (0, 1):
        rank_ids = {tuple(r["input_ids"]) for r in split_dataset_by_node(train, rank, 2)}
        assert rank_ids and not rank_ids & eval_ids


def test_no_nsp_packs_full_length_sequences_differently_each_epoch(tokenizer):
    config = DataConfig(max_seq_length=64, no_nsp=True, document_buffer_size=16)
    rows = take(train_stream(tokenizer, config), 500)
    assert "next_sentence_label" not in rows[0]
    assert sum(len(r["input_ids"]) == 64 for r in rows) / len(rows) > 0.95
    assert all(r["input_ids"][0] == CLS and r["input_ids"][-1] == SEP and set(r["token_type_ids"]) == {0} for r in rows)
    assert take(train_stream(tokenizer, config, epoch=1), 20) != rows[:20]


def test_two_ranks_read_disjoint_documents_that_make_up_the_corpus(tokenizer):
    """One file is one shard: the documents are split by key, each read by one rank, none twice."""
    config = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=0)
    documents = epoch_documents(DEMO, config, 3, 0, slots=2)
    ranks = [[r["text"] for r in split_dataset_by_node(documents, rank, 2)] for rank in (0, 1)]
    corpus = [r["text"] for r in load_corpus(DEMO) if r["text"].strip()]
    assert len(ranks[0]) + len(ranks[1]) == len(corpus) and sorted(ranks[0] + ranks[1]) == sorted(corpus)
    # a random half each: 4.5 sigma of a fair split
    assert within_binomial(len(ranks[0]), len(corpus), 0.5)


def test_with_enough_files_each_rank_reads_whole_files_in_a_new_order_each_epoch(tmp_path):
    texts = [row["text"] for row in take(load_corpus(DEMO), 40)]
    files = []
    for part in range(4):
        path = tmp_path / f"part{part}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[part::4]), encoding="utf-8")
        files.append(str(path))
    file_of = {t: part for part in range(4) for t in texts[part::4]}
    config = DataConfig(eval_every_nth_document=0, shuffle_buffer_size=1)

    def files_read(epoch: int) -> list[list[int]]:
        documents = epoch_documents(CorpusConfig(train_files=files), config, 3, epoch, slots=2)
        ranks = [[file_of[r["text"]] for r in split_dataset_by_node(documents, rank, 2)] for rank in (0, 1)]
        assert sorted(t for rank in ranks for t in rank) == sorted(file_of.values())
        return [list(dict.fromkeys(rank)) for rank in ranks]

    epochs = [files_read(epoch) for epoch in range(4)]
    assert all(len(read) == 2 and not set(ranks[0]) & set(ranks[1]) for ranks in epochs for read in ranks)
    assert len({str(ranks) for ranks in epochs}) > 1, "the file order changes between epochs"


def resume_twice(make_stream, first_stop: int, second_stop: int, total: int) -> None:
    """Stop at `first_stop`, resume from the state; stop again at `second_stop`, resume from that state."""
    reference = take(make_stream(), total)
    first = make_stream()
    take(iter(first), first_stop)
    second = make_stream()
    second.load_state_dict(first.state_dict())
    assert take(iter(second), second_stop - first_stop) == reference[first_stop:second_stop]
    third = make_stream()
    third.load_state_dict(second.state_dict())
    assert take(third, total - second_stop) == reference[second_stop:total]


def test_resume_from_state_continues_with_the_same_next_example_twice(tokenizer):
    resume_twice(lambda: train_stream(tokenizer), 350, 650, 900)


def test_resume_of_one_rank_continues_its_own_shard(tokenizer):
    def rank_stream():
        train = build_pretraining_datasets(DEMO, SMALL, tokenizer, seed=3, slots=2)[0]
        return split_dataset_by_node(train, 1, 2)

    resume_twice(rank_stream, 170, 333, 450)


def test_epochs_pair_differently_and_seeds_reproduce(tokenizer):
    def first_rows(seed: int, epoch: int) -> list:
        return [r["input_ids"] for r in take(train_stream(tokenizer, seed=seed, epoch=epoch), 50)]

    assert first_rows(3, 0) == first_rows(3, 0)
    assert first_rows(3, 0) != first_rows(3, 1)
    assert first_rows(3, 0) != first_rows(4, 0)


def test_a_document_longer_than_anything_else_stays_bounded(tokenizer):
    huge = ". ".join(f"Sentence number {i} says little" for i in range(25_000))
    corpus = datasets.Dataset.from_dict({"text": [huge, "A short one. And another one here."], "source": [0, 0]})
    config = DataConfig(max_seq_length=64, document_buffer_size=16, eval_every_nth_document=0)
    rows = examples_from_documents(corpus, tokenizer, config, 3, 0).to_list()
    assert len(rows) > 1000 and max(len(r["input_ids"]) for r in rows) <= 64
    assert within_binomial(sum(r["next_sentence_label"] for r in rows), len(rows), 0.5)


# ---- on disk, and the recipe ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> str:
    """The first 60 documents of the demo corpus, as a .jsonl.gz file."""
    path = tmp_path_factory.mktemp("corpus") / "small.jsonl.gz"
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as src, gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(itertools.islice(src, 60))
    return str(path)


@pytest.fixture(scope="module")
def prepared(small_corpus, tokenizer, tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("prepared")
    counts = prepare_to_disk(CorpusConfig(train_files=[small_corpus]), SMALL, tokenizer, out, seed=3, num_proc=2)
    return str(out), counts


def test_streamed_and_on_disk_examples_are_identical(small_corpus, tokenizer, prepared):
    documents = epoch_documents(CorpusConfig(train_files=[small_corpus]), SMALL, 3, 0)
    streamed = list(examples_from_documents(documents, tokenizer, SMALL, 3, 0))
    on_disk = datasets.Dataset.from_parquet(sorted(str(f) for f in Path(prepared[0], "train").glob("*.parquet")))
    assert len(streamed) == prepared[1]["train"] > 300
    assert len(list(Path(prepared[0], "train").glob("*.parquet"))) == 64, "whole shards for any power-of-two slots"
    assert streamed == on_disk.to_list()


def test_prepared_data_streams_shuffled_per_epoch_and_resumes(tokenizer, prepared):
    config = DataConfig(max_seq_length=64, prepared_data_dir=prepared[0], eval_examples=20)
    validate_data_config(config, tokenizer)
    train, evaluation = build_pretraining_datasets(DEMO, config, tokenizer, seed=3)
    assert len(list(evaluation)) == min(20, prepared[1]["eval"]) > 0
    epoch0 = [r["input_ids"] for r in train]
    epoch1 = [r["input_ids"] for r in build_pretraining_datasets(DEMO, config, tokenizer, 3, 1)[0]]
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    resume_twice(lambda: build_pretraining_datasets(DEMO, config, tokenizer, 3)[0], 50, 120, 200)


@pytest.mark.parametrize("workers", [0, 2])
def test_pretraining_from_prepared_data_resumes_with_identical_losses(prepared, tokenizer_dir, tmp_path, workers):
    flags = ("--prepared_data_dir", prepared[0], "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0",
             "--dataloader_num_workers", str(workers))  # fmt: skip
    pretrain_in_process(tiny_args(tokenizer_dir, tmp_path / "whole", *flags))
    shutil.copytree(tmp_path / "whole" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    pretrain_in_process(tiny_args(tokenizer_dir, tmp_path / "resumed", *flags, "--resume_from_checkpoint", "latest"))
    expected, resumed = losses_by_step(tmp_path / "whole"), losses_by_step(tmp_path / "resumed")
    assert sorted(resumed) == [4, 5, 6]
    assert all(resumed[step] == pytest.approx(expected[step], abs=1e-6) for step in resumed), (expected, resumed)


def test_prepared_data_with_another_length_is_refused(tokenizer, prepared):
    with pytest.raises(UsageError, match="was written with max_seq_length=64"):
        validate_data_config(DataConfig(max_seq_length=128, prepared_data_dir=prepared[0]), tokenizer)


def load_recipe():
    spec = importlib.util.spec_from_file_location("prepare_data", REPO_ROOT / "recipes" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_recipe(argv: list[str], capsys) -> tuple[int, str]:
    from bert_recipes.errors import run_cli

    try:
        run_cli(load_recipe().main, argv)
    except SystemExit as stop:
        return stop.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


def test_prepare_data_recipe_writes_shards_and_settings(small_corpus, tokenizer_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--train_files", small_corpus, "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(out)]
    code, err = run_recipe(
        [*argv, "--max_seq_length", "64", "--dupe_factor", "2", "--eval_every_nth_document", "5"], capsys
    )
    assert code == 0, err
    metadata = json.loads((out / "data_config.json").read_text())
    assert metadata["max_seq_length"] == 64 and metadata["dupe_factor"] == 2 and metadata["examples"]["eval"] > 0
    assert list((out / "train").glob("*.parquet")) and (out / "prepare_args.yaml").is_file()
    code, err = run_recipe(argv, capsys)
    assert code == 2 and "already holds prepared shards" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max_seq_length", "4"], "too short"),
        (["--max_seq_length", "100000"], "exceeds the tokenizer's model_max_length"),
        (["--mlm_probability", "1.5"], "between 0 and 1"),
        (["--document_buffer_size", "1"], "at least 2"),
        (["--dupe_factor", "0"], "must be 1 or more"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tokenizer_dir, tmp_path, capsys, flags, message):
    argv = [
        "--train_files",
        DEMO_CORPUS,
        "--tokenizer_name_or_path",
        str(tokenizer_dir),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    argv = [*argv, *flags]
    code, err = run_recipe(argv, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_tokenizer_without_mask_token_is_refused(tokenizer):
    no_mask = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    no_mask.mask_token = None
    with pytest.raises(UsageError, match=r"lacks \[MASK\]"):
        validate_data_config(DataConfig(), no_mask)


@pytest.mark.parametrize("text", ["", "Only one sentence here."], ids=["empty", "one_sentence"])
def test_prepare_data_refuses_a_corpus_without_pairs(tokenizer_dir, tmp_path, capsys, text):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    assert not text or zlib.crc32(text.encode()) % 100 != 0, "the one document must be a training document"
    argv = ["--train_files", str(corpus), "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(tmp_path)]
    code, err = run_recipe(argv, capsys)
    assert code == 2 and ("no training examples" in err or "is empty" in err), err


def test_the_recipe_process_exits_2_without_a_traceback(tokenizer_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "prepare_data.py"), "--max_seq_length", "4",
         "--train_files", DEMO_CORPUS, "--tokenizer_name_or_path", str(tokenizer_dir),
         "--output_dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: --max_seq_length 4 is too short") and "Traceback" not in result.stderr
