"""benchmarks/time_to_quality.py's machinery at tiny sizes: every run leaves checkpoints at its time marks, all are
scored on the same held-out masked positions, and the record, the table and the plot come out."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import DEMO_CORPUS, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
time_to_quality = pytest.importorskip("time_to_quality")

BUDGET, EVERY = 9.0, 3.0


@pytest.fixture(scope="module")
def record(tokenizer_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ttq")
    args = {
        "--corpus": DEMO_CORPUS, "--tokenizer": tokenizer_dir, "--train_characters": 400_000,
        "--held_out_documents": 20, "--eval_sequences": 48, "--size": "tiny", "--batch_size": 8, "--seq_length": 64,
        "--budget_seconds": BUDGET, "--checkpoint_every_seconds": EVERY, "--calibration_steps": 12,
        "--baseline_learning_rates": "1e-3", "--recipe_learning_rates": "1e-3,2e-3", "--work_dir": out / "work",
        "--results_dir": out / "results",
    }  # fmt: skip
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "time_to_quality.py")]
    command += [str(a) for pair in args.items() for a in pair]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(out / "datasets-cache")}
    subprocess.run(command, check=True, cwd=REPO_ROOT, env=env, timeout=900)
    saved = json.loads((out / "results" / "time_to_quality.json").read_text())
    saved["png"] = (out / "results" / "time_to_quality.png").read_bytes()
    return saved


def test_each_run_is_sized_to_its_budget_and_checkpointed_at_its_time_marks(record):
    runs = record["runs"]
    assert [r["side"] for r in runs] == ["baseline", "recipe", "recipe", "recipe_nsp"]
    best_recipe = min(runs[1:3], key=lambda r: r["curve"][-1]["eval_mlm_loss"])
    assert best_recipe["chosen"] and runs[3]["learning_rate"] == best_recipe["learning_rate"]
    for run in runs:
        assert run["max_steps"] == int(run["steps_per_second"] * BUDGET)
        seconds = [point["seconds"] for point in run["curve"]]
        assert len(seconds) >= 3 and seconds == sorted(seconds)
        # one checkpoint at the first step past each mark, then the last one at the budget (or the schedule's end)
        assert [int(s // EVERY) for s in seconds[:-1]] == list(range(1, len(seconds)))
        assert seconds[-1] >= BUDGET or run["curve"][-1]["step"] == run["max_steps"]
        assert run["steps"] == run["curve"][-1]["step"]


def test_every_checkpoint_is_scored_on_the_same_held_out_positions(record):
    points = [point for run in record["runs"] for point in run["curve"]]
    assert len({(p["eval_masked_tokens"], p["eval_sequences"]) for p in points}) == 1
    for run in record["runs"]:
        # trained for seconds, each run is already far better than a uniform guess over the 2,000-entry vocabulary
        assert run["curve"][-1]["eval_mlm_loss"] < math.log(2000) - 1
    nsp = record["runs"][-1]
    assert 0.0 <= nsp["held_out_nsp_accuracy"] <= 1.0
    assert all("held_out_nsp_accuracy" not in run for run in record["runs"][:-1])


def test_time_to_the_baselines_loss_is_read_off_each_curve(record):
    target = record["baseline_final_loss"]
    baseline = record["runs"][0]
    assert target == baseline["curve"][-1]["eval_mlm_loss"]
    for run in record["runs"]:
        curve = [(p["seconds"], p["eval_mlm_loss"]) for p in run["curve"]]
        reached = run["seconds_to_baseline_loss"]
        if reached is None:
            assert min(loss for _, loss in curve) > target
        else:
            before = [loss for seconds, loss in curve if seconds < reached]
            assert all(loss > target for loss in before) and reached <= curve[-1][0]
    assert baseline["seconds_to_baseline_loss"] is not None


def test_time_to_reach_interpolates_between_checkpoints():
    curve = [(120.0, 5.0), (240.0, 4.0), (360.0, 3.0)]
    assert time_to_quality.time_to_reach(curve, 3.5) == pytest.approx(300.0)
    assert time_to_quality.time_to_reach(curve, 6.0) == 120.0
    assert time_to_quality.time_to_reach(curve, 2.0) is None


def test_the_table_and_the_plot_are_written(record):
    assert len(record["table"]["rows"]) == len(record["runs"]) == 4
    assert sum("(chosen)" in row[0] for row in record["table"]["rows"]) == 3
    assert record["png"].startswith(b"\x89PNG") and len(record["png"]) > 10_000
