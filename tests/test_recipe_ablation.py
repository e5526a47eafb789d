"""benchmarks/recipe_ablation.py at the suite's scale: every run trained for its budget and scored on the same
held-out documents, the noise and the winners computed, and a second call keeps the finished runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import DEMO_CORPUS, REPO_ROOT, assert_usage_error

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

TINY = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,max_seq_length=64,"
    "per_device_train_batch_size=8,logging_steps=1,mixed_precision=no"
)


@pytest.mark.slow
def test_the_ablation_scores_every_run_and_runs_in_parts(tokenizer_dir, tmp_path):
    def ablation(levers: str, *more: str, work: str = "work") -> subprocess.CompletedProcess:
        command = [
            sys.executable, "benchmarks/recipe_ablation.py", "--corpus", DEMO_CORPUS, "--tokenizer", str(tokenizer_dir),
            "--train_characters", "400000", "--held_out_documents", "10", "--eval_sequences", "16",
            "--budget_seconds", "2", "--checkpoint_every_seconds", "1", "--levers", levers, "--extra", TINY,
            "--work_dir", str(tmp_path / work), "--results_dir", str(tmp_path), *more,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def trained(done: subprocess.CompletedProcess) -> list[str]:
        return [line.split("--output_dir ")[1].split()[0].split("/")[-1] for line in done.stdout.splitlines()
                if line.startswith("$ ") and "recipes/pretrain.py" in line]  # fmt: skip

    first = ablation("mask_30")
    assert trained(first)[:3] == ["baseline", "baseline_2", "mask_30"]
    result = json.loads((tmp_path / "recipe_ablation.json").read_text())
    runs = result["runs"]
    assert all(math.isfinite(r["final_loss"]) and r["steps"] > 0 for r in runs.values())
    assert result["noise"] == pytest.approx(abs(runs["baseline"]["final_loss"] - runs["baseline_2"]["final_loss"]))
    assert len(runs["baseline"]["curve"]) >= 2 and (tmp_path / "recipe_ablation.png").is_file()
    assert result["winners"] in ([], ["mask_30"]) and ("combined" in runs) == bool(result["winners"])
    # a second part adds a lever and names the levers to combine: only those two runs train, the rest is kept
    second = ablation("mask_30,batch_warmup", "--combine", "mask_30,batch_warmup")
    assert trained(second) == ["batch_warmup", "combined+mask_30+batch_warmup"]
    again = json.loads((tmp_path / "recipe_ablation.json").read_text())["runs"]
    assert all(again[name] == runs[name] for name in ("baseline", "baseline_2", "mask_30"))
    assert again["batch_warmup"]["flags"][-2:] == ["--batch_size_warmup_ratio", "0.6"]
    assert again["combined"]["levers"] == ["mask_30", "batch_warmup"] and len(again["combined"]["curve"]) >= 2
    # another budget: its own record, plot and run folders; one baseline, the combination, no noise and no verdict
    longer = ablation("", "--combine", "mask_30", "--baseline_runs", "1", "--name", "longer", work="longer")
    assert trained(longer) == ["baseline", "combined+mask_30"]
    record = json.loads((tmp_path / "longer.json").read_text())
    assert set(record["runs"]) == {"baseline", "combined"} and record["noise"] is None and record["pending"] == []
    assert (tmp_path / "longer.png").is_file() and [row[-1] for row in record["table"]["rows"]] == ["-", "-"]
    # the 10-minute record is left as it was
    assert json.loads((tmp_path / "recipe_ablation.json").read_text())["runs"] == again


@pytest.mark.parametrize("flag", ["--levers", "--combine"])
def test_an_unknown_lever_is_one_error_line_before_any_run(flag, capsys, tmp_path):
    import recipe_ablation

    args = [flag, "mask_30,mask_50", "--work_dir", str(tmp_path), "--results_dir", str(tmp_path)]
    assert_usage_error(recipe_ablation.main, args, capsys, "unknown lever(s) mask_50: choose from dropout_0")
    assert list(tmp_path.iterdir()) == []
