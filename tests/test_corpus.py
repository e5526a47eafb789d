"""Corpus sources: bad input refused in one line before anything is written; mixtures by weight; per-epoch
shuffling of documents."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from bert_recipes.corpus import CorpusConfig, check_corpus
from bert_recipes.data import DataConfig, TrainingStream, epoch_documents
from bert_recipes.errors import UsageError
from tests.conftest import DEMO_CORPUS, REPO_ROOT

CONFIG = DataConfig(max_seq_length=64, document_buffer_size=32, eval_every_nth_document=0)


def write_documents(path: Path, word: str, count: int) -> str:
    """`count` documents of ten sentences, each naming `word`: an example's tokens tell its source."""
    lines = []
    for d in range(count):
        sentences = [f"The {word} road number {d} went past the old mill on day {s}." for s in range(10)]
        lines.append(json.dumps({"text": " ".join(sentences)}) + "\n")
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def marker(tokenizer, word: str) -> tuple[int, ...]:
    return tuple(tokenizer(f" {word} ", add_special_tokens=False)["input_ids"])


def contains(ids: list[int], part: tuple[int, ...]) -> bool:
    return any(tuple(ids[k : k + len(part)]) == part for k in range(len(ids) - len(part) + 1))


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mixture_probabilities": "0.7,0.3"}, "has 2 values for 1 sources"),
        ({"mixture_probabilities": "0.5"}, "has 1 values for 2 sources"),
        ({"mixture_probabilities": "0.7,0.2"}, "must be positive and sum to 1 (they sum to 0.9)"),
        ({"mixture_probabilities": "1,0"}, "must be positive and sum to 1"),
        ({"mixture_probabilities": "1.2,-0.2"}, "is not a list of positive numbers"),
        ({"mixture_probabilities": "0.7;0.3"}, "is not a list of positive numbers"),
        ({"mixture_stopping_strategy": "never"}, "--mixture_stopping_strategy 'never' is unknown"),
    ],
)
def test_bad_mixture_settings_are_refused(tmp_path, overrides, message):
    files = [write_documents(tmp_path / f"{w}.jsonl", w, 3) for w in ("north", "south")]
    files = files[:1] if overrides.get("mixture_probabilities") == "0.7,0.3" else files
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_corpus(CorpusConfig(train_files=files, **overrides))


def test_a_missing_text_column_names_the_flag(tmp_path):
    path = tmp_path / "body.jsonl"
    path.write_text(json.dumps({"body": "Some text. More text."}) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"has no column 'text' \(columns: body\): set --text_column"):
        check_corpus(CorpusConfig(train_files=[str(path)]))


def run_pretrain(tokenizer_dir: Path, output_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, str(REPO_ROOT / "recipes" / "pretrain.py"), "--tokenizer_name_or_path", str(tokenizer_dir),
        "--output_dir", str(output_dir), "--report_to", "none", *flags,
    ]  # fmt: skip
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)


@pytest.mark.parametrize(
    ("flags", "start"),
    [
        (["--dataset_name", "no-such-user/no-such-corpus"], "error: --dataset_name 'no-such-user/no-such-corpus' "),
        (["--train_files", DEMO_CORPUS, "--text_column", "body"], "error: '"),
        (["--train_files", DEMO_CORPUS, "--mixture_probabilities", "0.7,0.3"], "error: --mixture_probabilities "),
    ],
    ids=["unreachable_dataset", "missing_column", "probabilities"],
)
def test_the_pretrain_process_exits_2_with_one_line_and_writes_nothing(tokenizer_dir, tmp_path, flags, start):
    out = tmp_path / "run"
    result = run_pretrain(tokenizer_dir, out, *flags)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(start) and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not out.exists()


# ---- shuffling ------------------------------------------------------------------------------------------------


def test_each_epoch_starts_with_other_documents_and_a_seed_reproduces_them():
    corpus = CorpusConfig(train_files=[DEMO_CORPUS])

    def first_texts(epoch: int) -> list[str]:
        return [row["text"] for row in itertools.islice(epoch_documents(corpus, CONFIG, 3, epoch), 10)]

    assert first_texts(0) == first_texts(0)
    assert not set(first_texts(0)) & set(first_texts(1))


def first_batches_sources(tokenizer, files: list[str], config: DataConfig) -> list[set[str]]:
    stream = TrainingStream(CorpusConfig(train_files=files), config, tokenizer, seed=3, batch_size=8)
    words = {w: marker(tokenizer, w) for w in ("north", "south")}
    batches = [stream.next_batch() for _ in range(10)]
    # input_ids are masked: a source counts where its marker survived in some example of the batch
    return [{w for w, m in words.items() for ids in b["input_ids"].tolist() if contains(ids, m)} for b in batches]


def test_two_concatenated_sources_both_reach_the_first_ten_batches(tokenizer, tmp_path):
    """200 documents of one source, then 200 of another, in one file: the old order (a group of consecutive
    documents) gave ten batches of the first source only, as the unshuffled run below still does."""
    path = tmp_path / "both.jsonl"
    north, south = (Path(write_documents(tmp_path / f"{w}.jsonl", w, 200)) for w in ("north", "south"))
    path.write_text(north.read_text() + south.read_text(), encoding="utf-8")
    assert marker(tokenizer, "north") != marker(tokenizer, "south")
    shuffled = first_batches_sources(tokenizer, [str(path)], CONFIG)
    assert set().union(*shuffled) == {"north", "south"}
    assert sum(len(sources) == 2 for sources in shuffled) >= 5
    unshuffled = DataConfig(**{**vars(CONFIG), "shuffle_buffer_size": 1})
    assert set().union(*first_batches_sources(tokenizer, [str(path)], unshuffled)) == {"north"}


# ---- mixtures -------------------------------------------------------------------------------------------------


def test_mixture_shares_are_within_three_points_over_2000_examples(tokenizer, tmp_path):
    files = [write_documents(tmp_path / f"{w}.jsonl", w, 1500) for w in ("north", "south")]
    corpus = CorpusConfig(train_files=files, mixture_probabilities="0.7,0.3")
    stream = TrainingStream(corpus, CONFIG, tokenizer, seed=3, batch_size=8)
    rows = list(itertools.islice(stream.open_epoch(0), 2000))
    assert len(rows) == 2000
    shares = Counter(row["source"] for row in rows)
    assert abs(shares[0] / 2000 - 0.7) <= 0.03 and abs(shares[1] / 2000 - 0.3) <= 0.03, shares
    # an example's source is the one its segment A came from (a random B may come from the other)
    words = [marker(tokenizer, "north"), marker(tokenizer, "south")]
    segments_a = [(row["input_ids"][: row["input_ids"].index(tokenizer.sep_token_id)], row["source"]) for row in rows]
    assert all(not contains(a, words[1 - source]) for a, source in segments_a)
    assert sum(contains(a, words[source]) for a, source in segments_a) > 1500
    for _ in range(250):
        stream.next_batch()
    assert stream.source_names == files
    assert abs(stream.source_tokens[0] / sum(stream.source_tokens) - 0.7) <= 0.03, stream.source_tokens
