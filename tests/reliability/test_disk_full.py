"""A disk that fills up during a checkpoint write: clear error, earlier checkpoints intact, no partial one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bert_recipes.checkpointing import list_checkpoints, validate_checkpoint
from tests.conftest import REPO_ROOT
from tests.test_trainer import pretrain_in_process, tiny_args

PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"
ARGS = ("--max_steps", "12", "--save_steps", "3", "--eval_steps", "0")


def checkpoint_bytes(tokenizer_dir: Path, tmp_path: Path) -> int:
    out = tmp_path / "measure"
    pretrain_in_process(tiny_args(tokenizer_dir, out, *ARGS[:1], "3", *ARGS[2:]))
    return sum(p.stat().st_size for p in (out / "checkpoint-3").rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tokenizer_dir, tmp_path):
    """A tmpfs with room for one checkpoint of the tiny model, not for two."""
    size_kb = int(1.6 * checkpoint_bytes(tokenizer_dir, tmp_path) / 1024)
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mount_point)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_disk_full_during_checkpoint_write(tokenizer_dir, small_disk: Path):
    out = small_disk / "run"
    args = tiny_args(tokenizer_dir, out, *ARGS)
    result = subprocess.run([sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "writing checkpoint-6" in error_lines[0] and "free disk space" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]
    validate_checkpoint(out / "checkpoint-3")
    assert not list(out.glob(".tmp-checkpoint-*"))
