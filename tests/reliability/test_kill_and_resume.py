"""Kill -9 a real pretraining process at random moments; `--resume_from_checkpoint latest` always continues from
the newest complete checkpoint, and the resumed losses match an uninterrupted run's."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bert_recipes.checkpointing import list_checkpoints
from tests.conftest import REPO_ROOT
from tests.test_trainer import losses_by_step, pretrain_in_process, tiny_args

PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"
KILL_ARGS = ("--max_steps", "16", "--save_steps", "2", "--save_total_limit", "3", "--eval_steps", "0")


@pytest.fixture(scope="module")
def reference_losses(tokenizer_dir, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("reference") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, *KILL_ARGS))
    return losses_by_step(out)


def start(tokenizer_dir: Path, out: Path) -> subprocess.Popen:
    args = tiny_args(tokenizer_dir, out, *KILL_ARGS)
    return subprocess.Popen(
        [sys.executable, str(PRETRAIN), *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for(condition, timeout: float = 180.0, poll: float = 0.01) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def kill_and_resume(tokenizer_dir: Path, out: Path, reference: dict[int, float], kill_when) -> int:
    """Returns the step of the checkpoint the run resumed from (0: none was complete yet)."""
    proc = start(tokenizer_dir, out)
    try:
        assert wait_for(lambda: kill_when(out) or proc.poll() is not None), "the run never reached the kill point"
    finally:
        proc.kill()
        proc.wait()
    complete = list_checkpoints(out)
    resumed_from = int(complete[-1].name.split("-")[1]) if complete else 0
    if resumed_from == 0 and out.exists():
        shutil.rmtree(out)
    pretrain_in_process(tiny_args(tokenizer_dir, out, *KILL_ARGS, "--resume_from_checkpoint", "latest"))
    resumed = losses_by_step(out)
    for step in range(resumed_from + 1, 17):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), (resumed_from, step)
    assert not list(out.glob(".tmp-checkpoint-*"))
    return resumed_from


def after_random_delay(seed: int):
    """Kill once training has started, after a random extra delay: mid-step, mid-checkpoint or between."""
    delay = random.Random(seed).uniform(0.0, 2.5)
    started: list[float] = []

    def condition(out: Path) -> bool:
        if not started and (out / "metrics.jsonl").exists():
            started.append(time.time())
        return bool(started) and time.time() - started[0] >= delay

    return condition


def during_checkpoint_write(out: Path) -> bool:
    return any(out.glob(".tmp-checkpoint-*"))


def test_kill_during_a_checkpoint_write_resumes_from_the_previous_one(tokenizer_dir, tmp_path, reference_losses):
    kill_and_resume(tokenizer_dir, tmp_path / "run", reference_losses, during_checkpoint_write)


@pytest.mark.parametrize("seed", [0, 1])
def test_kill_at_a_random_moment_resumes_exactly(tokenizer_dir, tmp_path, reference_losses, seed):
    kill_and_resume(tokenizer_dir, tmp_path / "run", reference_losses, after_random_delay(seed))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 9))
def test_kill_at_a_random_moment_resumes_exactly_slow(tokenizer_dir, tmp_path, reference_losses, seed):
    kill_and_resume(tokenizer_dir, tmp_path / "run", reference_losses, after_random_delay(seed))
