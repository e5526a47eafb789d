"""benchmarks/recipe_ablation.py at the suite's scale: every run trained for its budget and scored on the same
held-out documents, the noise and the winners computed, and a second call keeps the finished runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import DEMO_CORPUS, REPO_ROOT

TINY = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,max_seq_length=64,"
    "per_device_train_batch_size=8,logging_steps=1,mixed_precision=no"
)


@pytest.mark.slow
def test_the_ablation_scores_every_run_and_keeps_finished_ones(tokenizer_dir, tmp_path):
    command = [
        sys.executable, "benchmarks/recipe_ablation.py", "--corpus", DEMO_CORPUS, "--tokenizer", str(tokenizer_dir),
        "--train_characters", "400000", "--held_out_documents", "10", "--eval_sequences", "16",
        "--budget_seconds", "3", "--checkpoint_every_seconds", "1", "--levers", "mask_30,batch_warmup",
        "--extra", TINY, "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path),
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((tmp_path / "recipe_ablation.json").read_text())
    runs = result["runs"]
    assert {"baseline", "baseline_2", "mask_30", "batch_warmup"} <= runs.keys()
    assert all(math.isfinite(r["final_loss"]) and r["steps"] > 0 for r in runs.values())
    assert result["noise"] == pytest.approx(abs(runs["baseline"]["final_loss"] - runs["baseline_2"]["final_loss"]))
    assert len(runs["baseline"]["curve"]) >= 2 and (tmp_path / "recipe_ablation.png").is_file()
    assert set(result["winners"]) <= {"mask_30", "batch_warmup"} and ("combined" in runs) == bool(result["winners"])
    models = sorted((tmp_path / "work").glob("*/model.safetensors"))
    stamps = [m.stat().st_mtime_ns for m in models]
    second = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "recipes/pretrain.py" not in second.stdout, "a finished run was trained again"
    assert [m.stat().st_mtime_ns for m in models] == stamps
    assert json.loads((tmp_path / "recipe_ablation.json").read_text())["runs"] == runs
