"""Batch-size warmup: the micro-batches per step grow from 1 to --gradient_accumulation_steps over the first part of
the run, on one process and under DDP, every step still updates the weights, a resume in the middle of the ramp
continues with identical losses, and DeepSpeed (whose engine fixes the accumulation) refuses it in one line."""

from __future__ import annotations

import itertools
import shutil

import pytest

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import UsageError
from bert_recipes.from_checkpoint import resolve_model_config
from bert_recipes.modeling import ModelConfig
from bert_recipes.schedule import ramped_accumulation
from bert_recipes.train_config import TrainConfig, validate_run
from tests.test_distributed import PRETRAIN, assert_ok, launch
from tests.test_trainer import losses_by_step, pretrain_in_process, read_metrics, tiny_args

RAMP = ("--gradient_accumulation_steps", "4", "--batch_size_warmup_ratio", "0.5", "--max_steps", "8",
        "--save_steps", "3", "--eval_steps", "0")  # fmt: skip
# completed steps 0..7 of 8, ramp over the first half: 1 + int(3 * min(1, c / 4))
EXPECTED = [1, 1, 2, 3, 4, 4, 4, 4]


def test_the_ramp_grows_linearly_to_the_target():
    assert [ramped_accumulation(c / 8, 4, 0.5) for c in range(8)] == EXPECTED
    assert ramped_accumulation(0.0, 4, 0.0) == 4 and ramped_accumulation(1.0, 1, 0.5) == 1


def tokens_per_sequence_slot(run, processes: int) -> list[float]:
    """Each step's tokens per sequence of one micro-batch per process: k micro-batches read 33k to 64k."""
    seen = [0] + [r["tokens_seen"] for r in read_metrics(run)]
    return [(b - a) / (8 * processes) for a, b in itertools.pairwise(seen)]


def assert_ramp(tokens_per_sequence: list[float]) -> None:
    # k micro-batches of 8 sequences hold between 33k and 64k tokens per sequence slot
    assert len(tokens_per_sequence) == len(EXPECTED)
    for k, tokens in zip(EXPECTED, tokens_per_sequence, strict=True):
        assert 32 * k < tokens <= 64 * k, (EXPECTED, tokens_per_sequence)


@pytest.mark.parametrize("processes", [1, 2])
def test_the_ramp_runs_and_resumes_in_its_middle_with_identical_losses(processes, tokenizer_dir, tmp_path):
    def run(out, *extra):
        args = tiny_args(tokenizer_dir, out, *RAMP, *extra)
        if processes == 1:
            pretrain_in_process(args)
        else:
            assert_ok(launch("multi_cpu.yaml", PRETRAIN, args, "--num_processes", "2", "--mixed_precision", "no"))

    run(tmp_path / "whole")
    assert_ramp(tokens_per_sequence_slot(tmp_path / "whole", processes))
    # checkpoint-3 lies inside the ramp: the resumed steps must draw 3, 4, 4... micro-batches as the whole run did
    shutil.copytree(tmp_path / "whole" / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    run(tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    expected, resumed = losses_by_step(tmp_path / "whole"), losses_by_step(tmp_path / "resumed")
    assert sorted(resumed) == list(range(4, 9))
    assert all(resumed[s] == pytest.approx(expected[s], abs=1e-6) for s in resumed), (expected, resumed)


def test_deepspeed_refuses_a_batch_size_warmup(tokenizer_dir, tmp_path, monkeypatch):
    corpus, data, model, train = parse_config(
        [CorpusConfig, DataConfig, ModelConfig, TrainConfig], tiny_args(tokenizer_dir, tmp_path / "run", *RAMP)
    )
    bert_config, tokenizer = resolve_model_config(model, data.max_seq_length)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UsageError, match="DeepSpeed's engine fixes"):
        validate_run(corpus, data, train, bert_config, tokenizer)
