"""The data pipeline across real processes and DataLoader workers: each document's heavy steps run once per
epoch, and a resumed run with workers continues with the uninterrupted run's losses."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bert_recipes.data import cut_into_pieces, document_key, is_held_out
from tests.conftest import DEMO_CORPUS, REPO_ROOT
from tests.data_probe import CONFIG
from tests.test_distributed import PRETRAIN, assert_ok, launch
from tests.test_trainer import losses_by_step, pretrain_in_process, read_metrics, tiny_args

PROBE = REPO_ROOT / "tests" / "data_probe.py"


@pytest.fixture(scope="module")
def corpus_200(tmp_path_factory) -> Path:
    """The first 200 documents of the demo corpus, one file (one shard)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl.gz"
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as src, gzip.open(path, "wt", encoding="utf-8") as out:
        out.writelines(itertools.islice(src, 200))
    return path


def training_pieces(corpus: Path) -> tuple[list[int], int]:
    """Keys of the pieces of every training document, and the number of those documents."""
    with gzip.open(corpus, "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    training = [t for t in texts if t.strip() and not is_held_out(document_key(t), CONFIG.eval_every_nth_document)]
    return [document_key(piece) for text in training for piece in cut_into_pieces(text)], len(training)


@pytest.mark.slow
def test_two_processes_with_two_workers_split_every_document_once(corpus_200, tokenizer_dir, tmp_path):
    out = tmp_path / "probe"
    out.mkdir()
    assert_ok(launch("multi_cpu.yaml", PROBE, [str(corpus_200), str(tokenizer_dir), str(out), "2"]))
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in reports] == [2, 2]
    assert {r["distributed_type"] for r in reports} == {"DistributedType.MULTI_CPU"}
    logs = {p.name: p.read_text().split() for p in out.glob("pieces-*.txt")}
    # four workers did the splitting, none of them a training process
    assert len(logs) == 4 and all(logs.values())
    assert not {f"pieces-{r['pid']}.txt" for r in reports} & logs.keys()
    split = Counter(int(key) for keys in logs.values() for key in keys)
    expected, documents = training_pieces(corpus_200)
    assert sorted(split.elements()) == sorted(expected), "every training piece split exactly once"
    assert sum(r["documents_seen"] for r in reports) == documents


def test_resume_with_workers_continues_with_identical_losses(tokenizer_dir, tmp_path):
    args = ("--dataloader_num_workers", "2", "--eval_steps", "0")
    run = tmp_path / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, run, *args))
    resumed = tmp_path / "resumed"
    shutil.copytree(run / "checkpoint-10", resumed / "checkpoint-10")
    pretrain_in_process(tiny_args(tokenizer_dir, resumed, *args, "--resume_from_checkpoint", "latest"))
    expected, losses = losses_by_step(run), losses_by_step(resumed)
    assert sorted(losses) == list(range(11, 21))
    assert all(abs(losses[s] - expected[s]) <= 1e-6 for s in losses), (losses, expected)
    last = read_metrics(run)[-1]
    assert last["documents_seen"] > 0 and sum(last["tokens_per_source"].values()) == last["tokens_seen"]
    assert read_metrics(resumed)[-1]["documents_seen"] == last["documents_seen"]


@pytest.mark.slow
def test_two_process_resume_with_workers_continues_with_identical_losses(tokenizer_dir, tmp_path):
    args = ("--dataloader_num_workers", "1", "--eval_steps", "0", "--max_steps", "12", "--save_steps", "6")
    run = tmp_path / "run"
    assert_ok(launch("multi_cpu.yaml", PRETRAIN, tiny_args(tokenizer_dir, run, *args)))
    resumed = tmp_path / "resumed"
    shutil.copytree(run / "checkpoint-6", resumed / "checkpoint-6")
    assert_ok(
        launch(
            "multi_cpu.yaml", PRETRAIN, tiny_args(tokenizer_dir, resumed, *args, "--resume_from_checkpoint", "latest")
        )
    )
    expected, losses = losses_by_step(run), losses_by_step(resumed)
    assert sorted(losses) == list(range(7, 13))
    assert all(abs(losses[s] - expected[s]) <= 1e-6 for s in losses), (losses, expected)
