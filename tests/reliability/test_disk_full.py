"""A disk that fills up during a checkpoint write: clear error, earlier checkpoints intact, no partial one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bert_recipes.checkpointing import list_checkpoints, validate_checkpoint
from tests.conftest import REPO_ROOT
from tests.test_trainer import tiny_args

PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs: room for one tiny-model checkpoint (about 5 MB), not for two."""
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_disk_full_during_checkpoint_write(tokenizer_dir, small_disk: Path):
    out = small_disk / "run"
    args = tiny_args(tokenizer_dir, out, "--max_steps", "12", "--save_steps", "3", "--eval_steps", "0")
    result = subprocess.run([sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "writing checkpoint-6" in error_lines[0] and "free disk space" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]
    validate_checkpoint(out / "checkpoint-3")
    assert not list(out.glob(".tmp-checkpoint-*"))
