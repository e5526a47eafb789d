"""The GLUE recipe end to end on tiny samples in the original GLUE layout, with a tiny BERT."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from bert_recipes.glue import TASKS, GlueConfig, load_glue_dir, majority_baseline, run_glue
from tests.conftest import GLUE_SAMPLES, REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "glue"
FINETUNE = REPO_ROOT / "recipes" / "finetune_glue.py"


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    """All nine tasks in the GLUE layout: the real samples plus synthetic QQP, MNLI, QNLI and a CoLA test file."""
    out = tmp_path_factory.mktemp("glue")
    shutil.copytree(GLUE_SAMPLES, out, dirs_exist_ok=True)
    shutil.copytree(FIXTURES, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    return out


def config(model: Path, data_dir: Path, out: Path, **overrides) -> GlueConfig:
    values = dict(
        model_name_or_path=str(model), data_dir=str(data_dir), output_dir=str(out), max_steps=3,
        max_seq_length=64, per_device_train_batch_size=8, max_eval_samples=40, logging_steps=1,
    )  # fmt: skip
    return GlueConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def all_tasks(tiny_bert_dir, glue_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("glue-run")
    return out, run_glue(config(tiny_bert_dir, glue_dir, out, task_name="all"))


def test_every_task_runs_end_to_end(all_tasks):
    out, results = all_tasks
    assert set(results) == set(TASKS)
    for task in TASKS:
        saved = json.loads((out / task / "eval_results.json").read_text())
        assert saved == results[task]
        assert (out / task / "config.json").is_file()
    assert set(results["cola"]) == {"matthews_correlation", "learning_rate"}
    assert set(results["mrpc"]) == set(results["qqp"]) == {"accuracy", "f1", "learning_rate"}
    assert set(results["stsb"]) == {"pearson", "spearmanr", "learning_rate"}


def test_mnli_reports_matched_and_mismatched(all_tasks):
    out, results = all_tasks
    assert {"accuracy_m", "accuracy_mm"} <= set(results["mnli"])
    assert (out / "mnli" / "dev_predictions_validation_matched.tsv").is_file()
    assert (out / "mnli" / "dev_predictions_validation_mismatched.tsv").is_file()


def test_stsb_is_a_regression_head_with_float_predictions(all_tasks):
    out, _ = all_tasks
    assert AutoModelForSequenceClassification.from_pretrained(out / "stsb").config.num_labels == 1
    rows = (out / "stsb" / "dev_predictions_validation.tsv").read_text().splitlines()
    assert rows[0] == "index\tprediction" and all(0.0 <= float(r.split("\t")[1]) <= 5.0 for r in rows[1:])


def test_submission_files_follow_the_leaderboard_format(all_tasks):
    out, _ = all_tasks
    expected = {
        "mnli/submission/MNLI-m.tsv": {"entailment", "neutral", "contradiction"},
        "mnli/submission/MNLI-mm.tsv": {"entailment", "neutral", "contradiction"},
        "qnli/submission/QNLI.tsv": {"entailment", "not_entailment"},
        "qqp/submission/QQP.tsv": {"0", "1"},
        "cola/submission/CoLA.tsv": {"0", "1"},
    }
    for path, allowed in expected.items():
        lines = (out / path).read_text().splitlines()
        assert lines[0] == "index\tprediction"
        indices = [int(line.split("\t")[0]) for line in lines[1:]]
        assert indices == list(range(len(indices))) and indices
        assert {line.split("\t")[1] for line in lines[1:]} <= allowed


def test_all_tasks_writes_the_results_table(all_tasks):
    out, results = all_tasks
    table = (out / "glue_results.md").read_text()
    assert all(f"| {task} |" in table for task in TASKS) and "GLUE score" in table
    assert json.loads((out / "glue_results.json").read_text())["tasks"] == results


def test_learning_rate_sweep_keeps_the_best_on_dev(tiny_bert_dir, glue_dir, tmp_path):
    results = run_glue(config(tiny_bert_dir, glue_dir, tmp_path, task_name="rte", learning_rates="1e-5,1e-3"))
    assert results["rte"]["learning_rate"] in (1e-5, 1e-3)


def test_glue_layout_reader_keeps_every_row(glue_dir):
    data = load_glue_dir("cola", glue_dir)
    lines = (glue_dir / "CoLA" / "train.tsv").read_text().splitlines()
    assert len(data["train"]) == len(lines)
    assert data["train"][0]["text_a"] == lines[0].split("\t")[3]
    assert len(load_glue_dir("mnli", glue_dir)["validation_mismatched"]) == 12


def test_majority_baseline(glue_dir, tiny_bert_dir):
    baseline = majority_baseline(config(tiny_bert_dir, glue_dir, glue_dir), "sst2")
    labels = [line.split("\t")[1] for line in (glue_dir / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    train = [line.split("\t")[1] for line in (glue_dir / "SST-2" / "train.tsv").read_text().splitlines()[1:]]
    majority = max(set(train), key=train.count)
    assert baseline["accuracy"] == pytest.approx(labels.count(majority) / len(labels))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(FINETUNE), *args], capture_output=True, text=True, timeout=300)


def broken_dir(glue_dir: Path, tmp_path: Path, case: str) -> Path:
    out = tmp_path / "glue"
    shutil.copytree(glue_dir, out)
    dev = out / "RTE" / "dev.tsv"
    lines = dev.read_text().splitlines()
    if case == "malformed_row":
        lines[5] = "only-one-column"
    if case == "missing_column":
        lines[0] = lines[0].replace("sentence2", "hypothesis")
    if case == "missing_file":
        dev.unlink()
        return out
    dev.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_task", "unknown --task_name 'rtee' (did you mean 'rte'?)"),
        ("missing_file", "RTE/dev.tsv' is missing"),
        ("malformed_row", "dev.tsv' line 6 has 1 columns"),
        ("missing_column", "has no column 'sentence2'"),
        ("vocab_mismatch", "vocab_size 10 but its tokenizer has 2000 tokens"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(case, expected, glue_dir, tiny_bert_dir, tmp_path):
    data_dir, model = glue_dir, tiny_bert_dir
    if case in ("missing_file", "malformed_row", "missing_column"):
        data_dir = broken_dir(glue_dir, tmp_path, case)
    if case == "vocab_mismatch":
        model = tmp_path / "model"
        shutil.copytree(tiny_bert_dir, model)
        settings = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**settings, "vocab_size": 10}))
    task = "rtee" if case == "unknown_task" else "rte"
    result = run_cli("--model_name_or_path", str(model), "--task_name", task, "--data_dir", str(data_dir),
                     "--output_dir", str(tmp_path / "out"), "--max_steps", "1")  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in result.stderr and "Traceback" not in result.stderr
