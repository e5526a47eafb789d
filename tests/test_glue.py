"""The GLUE recipe end to end on tiny samples in the original GLUE layout, with a tiny random BERT."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from bert_recipes.config import parse_config
from bert_recipes.dropout import CpuDropout
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.finetuning import (
    ModelInputCollator,
    RunRecord,
    load_checked_tokenizer,
    prediction_trainer,
    summarize_runs,
)
from bert_recipes.glue import (
    GLUE_ARGUMENTS,
    RENAMED_FLAGS,
    TASKS,
    CheckpointConfig,
    GlueConfig,
    GlueTrainingArguments,
    TaskConfig,
    glue_score,
    majority_baseline,
    results_markdown,
    run_glue,
)
from bert_recipes.glue.data import (
    HUB_DATASET,
    load_glue_dir,
    load_hub,
    load_task_data,
    tasks_to_run,
    tokenize,
)
from bert_recipes.glue.finetune import compute_metrics, load_classifier, predict
from bert_recipes.glue.report import task_score
from tests.conftest import GLUE_SAMPLES, REPO_ROOT, assert_usage_error

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "glue"
FINETUNE = REPO_ROOT / "recipes" / "finetune_glue.py"
EVAL_ROWS = 40
# tiny models on a shared 2-core machine: two threads spin-wait on each other (40 steps took 1.7 s on one thread,
# 37.7 s on two, with other jobs running)
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory) -> Path:
    """All nine tasks in the GLUE layout: the real samples plus the layout fixtures (QQP, MNLI, QNLI, tests, AX)."""
    out = tmp_path_factory.mktemp("glue")
    shutil.copytree(GLUE_SAMPLES, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    shutil.copytree(FIXTURES, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.md"))
    return out


def make_config(model: Path, data_dir: Path | None, out: Path, **overrides) -> GlueConfig:
    values = dict(
        model_name_or_path=str(model), data_dir=str(data_dir) if data_dir else None, output_dir=str(out),
        max_steps=3, max_seq_length=64, per_device_train_batch_size=8, max_eval_samples=EVAL_ROWS, logging_steps=1,
        disable_tqdm=True,
    )  # fmt: skip
    return GlueConfig.from_values(**{**values, **overrides})


@pytest.fixture(scope="module")
def all_tasks(tiny_bert_dir, glue_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("glue-run")
    return out, run_glue(make_config(tiny_bert_dir, glue_dir, out, task_name="all"))


def tsv_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def expected_metric_names(task: str) -> set[str]:
    if task == "mnli":
        return {"accuracy_m", "accuracy_mm"}
    return set(TASKS[task].metrics)


def test_every_task_runs_end_to_end_with_its_official_metrics(all_tasks):
    out, results = all_tasks
    assert list(results) == list(TASKS)
    for task, result in results.items():
        assert set(result.median) == expected_metric_names(task)
        assert json.loads((out / task / "eval_results.json").read_text()) == result.median
        assert (out / task / "model.safetensors").is_file() and (out / task / "tokenizer.json").is_file()
        saved = yaml.safe_load((out / task / "finetune_args.yaml").read_text())
        assert saved["task_name"] == task and saved["max_steps"] == 3 and saved["warmup_steps"] == 0.1


def test_mnli_reports_matched_and_mismatched_from_both_dev_files(all_tasks, glue_dir):
    out, results = all_tasks
    for file, suffix in (("dev_matched", "_m"), ("dev_mismatched", "_mm")):
        rows = tsv_rows(out / "mnli" / f"{file.replace('dev', 'dev_predictions')}.tsv")[1:]
        gold = [row[-1] for row in tsv_rows(glue_dir / "MNLI" / f"{file}.tsv")[1:]]
        assert [row[2] for row in rows] == gold  # both dev sets, whole and in file order
        accuracy = sum(row[1] == row[2] for row in rows) / len(rows)
        assert results["mnli"].median[f"accuracy{suffix}"] == pytest.approx(accuracy)


def test_stsb_is_a_regression_with_clipped_float_predictions(all_tasks, glue_dir):
    out, results = all_tasks
    config = AutoModelForSequenceClassification.from_pretrained(out / "stsb").config
    assert config.num_labels == 1 and config.problem_type == "regression"
    assert set(results["stsb"].median) == {"pearson", "spearmanr"}
    written = tsv_rows(out / "stsb" / "dev_predictions.tsv")[1:]
    gold = [row[9] for row in tsv_rows(glue_dir / "STS-B" / "dev.tsv")[1 : EVAL_ROWS + 1]]
    assert [int(row[0]) for row in written] == list(range(EVAL_ROWS))
    assert [float(row[2]) for row in written] == pytest.approx([float(score) for score in gold], abs=1e-3)
    assert all(0.0 <= float(row[1]) <= 5.0 for row in written)


def test_predictions_come_back_in_dataset_order(all_tasks, glue_dir):
    out, _ = all_tasks
    # fp32 like the row-by-row reference: the test is about order, not precision
    config = make_config(out / "stsb", glue_dir, out, task_name="stsb", mixed_precision="no")
    model = AutoModelForSequenceClassification.from_pretrained(out / "stsb").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "stsb")
    data = load_task_data(config.task, "stsb")
    dev = tokenize(data, tokenizer, config.task.max_seq_length)["validation"]
    predictor = prediction_trainer(model, config.training, ModelInputCollator(tokenizer), tokenizer)
    got = predict(predictor, dev, TASKS["stsb"])
    pairs = zip(data["validation"]["text_a"], data["validation"]["text_b"], strict=True)
    with torch.no_grad():
        one_by_one = [model(**tokenizer(a, b, return_tensors="pt")).logits.item() for a, b in pairs]
    # the tiny model's scores differ by ~1e-4 from row to row: enough to see any row out of place
    assert np.ptp(one_by_one) > 1e-5
    np.testing.assert_allclose(got, one_by_one, atol=1e-6)


def test_stsb_scores_keep_fp32_resolution_when_the_model_runs_in_bf16(all_tasks, glue_dir):
    out, _ = all_tasks
    config = make_config(out / "stsb", glue_dir, out, task_name="stsb", mixed_precision="bf16")
    tokenizer = AutoTokenizer.from_pretrained(out / "stsb")
    dev = tokenize(load_task_data(config.task, "stsb"), tokenizer, config.task.max_seq_length)["validation"]
    plain = AutoModelForSequenceClassification.from_pretrained(out / "stsb").eval()
    recipe = load_classifier(config.model, TASKS["stsb"], seed=0).eval()
    pad = ModelInputCollator(tokenizer)
    rounded, kept = (
        predict(prediction_trainer(m, config.training, pad, tokenizer), dev, TASKS["stsb"]) for m in (plain, recipe)
    )
    on_bf16_grid = [np.equal(p, torch.tensor(p).bfloat16().float().numpy()) for p in (rounded, kept)]
    # a bf16 head returns every score on the bf16 grid (steps of ~1e-4 near 0.05: ties in Spearman's ranks)
    assert on_bf16_grid[0].all()
    assert on_bf16_grid[1].sum() <= 2
    assert len(np.unique(kept)) > len(np.unique(rounded))


@pytest.mark.parametrize("fast", [True, False])
def test_fine_tuning_draws_cpu_dropout_masks_unless_turned_off(all_tasks, glue_dir, fast):
    out, _ = all_tasks
    config = make_config(out / "rte", glue_dir, out, task_name="rte", fast_cpu_dropout=fast)
    model = load_classifier(config.model, TASKS["rte"], seed=0)
    assert any(isinstance(m, CpuDropout) for m in model.modules()) is fast
    assert isinstance(model.dropout, CpuDropout) is fast  # the task head's dropout too


def test_submission_files_follow_the_leaderboard_format(all_tasks, glue_dir):
    out, _ = all_tasks
    nli = {"entailment", "neutral", "contradiction"}
    expected = {
        "CoLA.tsv": (glue_dir / "CoLA" / "test.tsv", {"0", "1"}),
        "STS-B.tsv": (glue_dir / "STS-B" / "test.tsv", None),
        "QQP.tsv": (glue_dir / "QQP" / "test.tsv", {"0", "1"}),
        "MNLI-m.tsv": (glue_dir / "MNLI" / "test_matched.tsv", nli),
        "MNLI-mm.tsv": (glue_dir / "MNLI" / "test_mismatched.tsv", nli),
        "AX.tsv": (glue_dir / "diagnostic" / "diagnostic.tsv", nli),
        "QNLI.tsv": (glue_dir / "QNLI" / "test.tsv", {"entailment", "not_entailment"}),
    }
    assert {p.name for p in (out / "submission").iterdir()} == set(expected)
    for name, (test_file, allowed) in expected.items():
        header, *rows = tsv_rows(out / "submission" / name)
        assert header == ["index", "prediction"]
        assert [row[0] for row in rows] == [row[0] for row in tsv_rows(test_file)[1:]]
        if allowed is None:
            assert all(0.0 <= float(row[1]) <= 5.0 and len(row[1].split(".")[1]) == 3 for row in rows)
        else:
            assert {row[1] for row in rows} <= allowed


def test_all_tasks_writes_the_results_table_and_json(all_tasks):
    out, results = all_tasks
    medians = {task: result.median for task, result in results.items()}
    table = (out / "glue_results.md").read_text()
    assert all(f"| {task} |" in table for task in TASKS)
    assert "| MNLI-m | MNLI-mm |" in table and f"{glue_score(medians):.2f} |" in table
    summary = json.loads((out / "glue_results.json").read_text())
    assert summary["tasks"] == medians and summary["glue_score"] == pytest.approx(glue_score(medians))
    assert summary["runs"]["rte"]["runs"] == [{"learning_rate": 2e-5, "seed": 42, "metrics": medians["rte"],
                                               "resumed_from": None}]  # fmt: skip


@pytest.fixture(scope="module")
def seed_sweep(tiny_bert_dir, glue_dir, tmp_path_factory) -> tuple[Path, dict]:
    """STS-B (continuous scores: every seed lands elsewhere) with two learning rates and three seeds each."""
    out = tmp_path_factory.mktemp("glue-seeds")
    config = make_config(tiny_bert_dir, glue_dir, out, task_name="stsb", learning_rates="1e-5,2e-4", seeds="1,2,3")
    return out, run_glue(config)["stsb"]


def test_three_seeds_report_the_median_and_range_of_the_recorded_scores(seed_sweep):
    out, result = seed_sweep
    recorded = json.loads((out / "stsb" / "runs.json").read_text())
    chosen = [run for run in recorded["runs"] if run["learning_rate"] == result.learning_rate]
    assert sorted(run["seed"] for run in chosen) == [1, 2, 3] and len(recorded["runs"]) == 6
    for metric in ("pearson", "spearmanr"):
        scores = sorted(run["metrics"][metric] for run in chosen)
        assert scores[0] < scores[1] < scores[2]  # the seeds really differ, so the median is a real choice
        assert result.median[metric] == scores[1] == recorded["median"][metric]
        assert (result.low[metric], result.high[metric]) == (scores[0], scores[2])
    assert json.loads((out / "stsb" / "eval_results.json").read_text()) == result.median
    row = next(line for line in results_markdown({"stsb": result}).splitlines() if line.startswith("| stsb | pearson"))
    low, high = 100 * result.low["pearson"], 100 * result.high["pearson"]
    assert f"pearson {100 * result.median['pearson']:.2f} ({low:.2f} to {high:.2f})" in row


def test_the_learning_rate_is_chosen_by_median_score_and_the_median_seeds_model_is_kept(seed_sweep):
    out, result = seed_sweep
    medians = {}
    for rate in (1e-5, 2e-4):
        scores = [task_score(run.metrics) for run in result.runs if run.learning_rate == rate]
        medians[rate] = sorted(scores)[1]
    assert result.learning_rate == max(medians, key=medians.get)
    kept = next(
        run for run in result.runs
        if run.learning_rate == result.learning_rate and task_score(run.metrics) == medians[result.learning_rate]
    )  # fmt: skip
    assert result.kept_seed == kept.seed
    saved = yaml.safe_load((out / "stsb" / "finetune_args.yaml").read_text())
    assert (saved["learning_rate"], saved["seed"]) == (result.learning_rate, kept.seed)
    # the task's dev predictions are the kept run's; the runs' own copies of the weights are gone
    kept_predictions = json.loads((out / "stsb" / "runs" / f"lr{kept.learning_rate:g}-seed{kept.seed}" /
                                   "predictions.json").read_text())["validation"]  # fmt: skip
    written = [float(row[1]) for row in tsv_rows(out / "stsb" / "dev_predictions.tsv")[1:]]
    assert written == pytest.approx([min(5.0, max(0.0, v)) for v in kept_predictions], abs=1e-3)
    assert not list((out / "stsb" / "runs").glob("*/model.safetensors"))


def test_load_best_model_at_end_keeps_the_checkpoint_best_on_the_tasks_main_metric(tiny_bert_dir, glue_dir, tmp_path):
    # STS-B's main metric is Spearman correlation. Which checkpoint wins depends on the tiny model's random start:
    # the mechanism is checked on every run, "not the last step's model" on the runs where an earlier one won
    earlier_won = 0
    for rate in (1e-4, 2e-4, 5e-4):
        config = make_config(
            tiny_bert_dir, glue_dir, tmp_path / f"lr{rate:g}", task_name="stsb", max_steps=8, learning_rate=rate,
            eval_strategy="steps", eval_steps=2, save_steps=2, load_best_model_at_end=True,
        )  # fmt: skip
        result = run_glue(config)["stsb"]
        run = tmp_path / f"lr{rate:g}" / "stsb" / "runs" / f"lr{rate:g}-seed42"
        state = json.loads((run / "trainer_state.json").read_text())
        evaluations = {entry["step"]: entry for entry in state["log_history"] if "eval_spearmanr" in entry}
        assert sorted(evaluations) == [2, 4, 6, 8]
        best_step = max(evaluations, key=lambda step: evaluations[step]["eval_spearmanr"])
        assert state["best_metric"] == evaluations[best_step]["eval_spearmanr"]
        assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
        # the kept model is that checkpoint's: its dev numbers are the ones measured at best_step
        assert result.median["spearmanr"] == pytest.approx(evaluations[best_step]["eval_spearmanr"], abs=1e-9)
        assert result.median["pearson"] == pytest.approx(evaluations[best_step]["eval_pearson"], abs=1e-9)
        if abs(evaluations[best_step]["eval_pearson"] - evaluations[8]["eval_pearson"]) > 1e-3:
            earlier_won += 1
    assert earlier_won, "every run's last checkpoint was its best: nothing showed the best one is kept"


def finetune_args(model: Path, data_dir: Path, out: Path) -> list[str]:
    return [
        "--model_name_or_path", str(model), "--data_dir", str(data_dir), "--output_dir", str(out),
        "--task_name", "rte,mrpc", "--max_steps", "60", "--save_steps", "5", "--max_seq_length", "64",
        "--per_device_train_batch_size", "8", "--max_eval_samples", str(EVAL_ROWS), "--disable_tqdm", "true",
    ]  # fmt: skip


def test_a_killed_two_task_run_resumes_without_redoing_the_finished_task(tiny_bert_dir, glue_dir, tmp_path):
    out = tmp_path / "out"
    args = finetune_args(tiny_bert_dir, glue_dir, out)
    process = subprocess.Popen(
        [sys.executable, str(FINETUNE), *args],
        cwd=REPO_ROOT,
        env=ONE_THREAD,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed_run = out / "mrpc" / "runs" / "lr2e-05-seed42"
    deadline = time.monotonic() + 300
    while not (killed_run / "checkpoint-10" / "trainer_state.json").is_file():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed_run / "run_results.json").exists(), "killed too late: mrpc had finished"
    checkpoints = [
        int(p.name.split("-")[1]) for p in killed_run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()
    ]
    finished = {path: path.stat().st_mtime_ns for path in (out / "rte").rglob("*") if path.is_file()}
    assert out / "rte" / "runs.json" in finished

    run_cli(runpy.run_path(str(FINETUNE))["main"], [*args, "--resume_from_checkpoint", "true"])
    assert {path: path.stat().st_mtime_ns for path in (out / "rte").rglob("*") if path.is_file()} == finished
    record = json.loads((killed_run / "run_results.json").read_text())
    assert record["resumed_from"] == f"checkpoint-{max(checkpoints)}"
    # resumed from the checkpoint: the same numbers as a run that was never killed
    straight = run_glue(make_config(tiny_bert_dir, glue_dir, tmp_path / "straight", task_name="mrpc", max_steps=60))
    assert record["metrics"] == pytest.approx(straight["mrpc"].median, abs=1e-9)
    assert json.loads((out / "glue_results.json").read_text())["tasks"]["mrpc"] == record["metrics"]


def test_glue_layout_reader_keeps_every_row_and_column(glue_dir):
    cola = load_glue_dir("cola", glue_dir)
    lines = tsv_rows(glue_dir / "CoLA" / "train.tsv")
    assert len(cola["train"]) == len(lines)  # no header to drop
    assert cola["train"][0]["text_a"] == lines[0][3] and cola["train"]["label"] == [int(r[1]) for r in lines]
    mnli = load_glue_dir("mnli", glue_dir)
    assert len(mnli["validation_mismatched"]) == 12 and set(mnli) >= {"test_matched", "test_mismatched", "ax"}
    assert mnli["train"][0]["label"] == TASKS["mnli"].labels.index(tsv_rows(glue_dir / "MNLI" / "train.tsv")[1][-1])
    qqp_test = tsv_rows(glue_dir / "QQP" / "test.tsv")[1:]
    assert load_glue_dir("qqp", glue_dir)["test"]["idx"] == [int(row[0]) for row in qqp_test]


def test_all_with_data_dir_skips_absent_tasks_but_one_task_must_exist(tiny_bert_dir, tmp_path):
    config = make_config(tiny_bert_dir, GLUE_SAMPLES, tmp_path, task_name="all")
    assert tasks_to_run(config.task) == ["cola", "sst2", "mrpc", "stsb", "rte", "wnli"]
    for named in ("qqp", "rte,qqp"):
        with pytest.raises(UsageError, match=r"QQP/train.tsv' is missing"):
            tasks_to_run(make_config(tiny_bert_dir, GLUE_SAMPLES, tmp_path, task_name=named).task)


def test_majority_baseline_predicts_the_most_frequent_train_label(tiny_bert_dir):
    config = make_config(tiny_bert_dir, GLUE_SAMPLES, GLUE_SAMPLES, max_eval_samples=None)
    train = [row[1] for row in tsv_rows(GLUE_SAMPLES / "SST-2" / "train.tsv")[1:]]
    dev = [row[1] for row in tsv_rows(GLUE_SAMPLES / "SST-2" / "dev.tsv")[1:]]
    majority = max(set(train), key=train.count)
    assert majority_baseline(config, "sst2") == {"accuracy": pytest.approx(dev.count(majority) / len(dev))}
    assert majority_baseline(config, "cola") == {"matthews_correlation": 0.0}
    assert majority_baseline(config, "stsb") == {"pearson": 0.0, "spearmanr": 0.0}


def test_custom_files_in_csv_and_json_lines(tiny_bert_dir, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('sentence1,sentence2,label\n"A man, tall.",A man.,entailment\nA dog.,A cat.,1\n')
    dev = tmp_path / "dev.jsonl"
    dev.write_text(
        '{"text_a": "One.", "text_b": "Two.", "label": 0}\n{"text_a": "Three.", "text_b": "x", "label": 1}\n'
    )
    config = make_config(
        tiny_bert_dir, None, tmp_path, task_name="rte", train_file=str(train), validation_file=str(dev)
    )
    data = load_task_data(config.task, "rte")
    assert data["train"]["text_a"] == ["A man, tall.", "A dog."] and data["train"]["label"] == [0, 1]
    assert data["validation"]["text_b"] == ["Two.", "x"] and data["validation"]["label"] == [0, 1]


def test_a_checkpoint_directory_loads_under_a_fresh_seeded_head(tiny_bert_dir, tmp_path):
    checkpoint = tmp_path / "checkpoint-7"
    shutil.copytree(tiny_bert_dir, checkpoint)
    (checkpoint / "training_state").mkdir()
    (checkpoint / "training_state" / "optimizer.bin").write_bytes(b"not a model")
    config = make_config(checkpoint, None, tmp_path)
    assert len(load_checked_tokenizer(config.model, config.task.max_seq_length)) == 2000
    first, again = load_classifier(config.model, TASKS["mnli"], 42), load_classifier(config.model, TASKS["mnli"], 42)
    other = load_classifier(config.model, TASKS["mnli"], 7)
    assert first.classifier.weight.shape == (3, 64) and first.config.id2label[0] == "entailment"
    assert torch.equal(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)


def test_glue_yaml_holds_the_bert_paper_defaults_over_trainings_own():
    types = [TaskConfig, CheckpointConfig, GlueTrainingArguments]
    task, model, training = parse_config(types, ["--config", str(REPO_ROOT / "recipes" / "configs" / "glue.yaml")])
    assert (task.max_seq_length, training.per_device_train_batch_size, training.num_train_epochs) == (128, 32, 3.0)
    assert (training.learning_rate, training.warmup_steps, training.weight_decay) == (2e-5, 0.1, 0.01)
    assert (task, model, training.to_dict()) == (TaskConfig(), CheckpointConfig(), GlueTrainingArguments().to_dict())
    # the same four values are not TrainingArguments' own defaults: the paper's replace them
    plain = TrainingArguments()
    assert (plain.per_device_train_batch_size, plain.learning_rate, plain.warmup_steps, plain.weight_decay) == (
        8, 5e-5, 0, 0.0
    )  # fmt: skip


def test_help_lists_the_recipes_flags_and_every_trainer_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(runpy.run_path(str(FINETUNE))["main"], ["--help"])
    shown = capsys.readouterr().out
    assert exit_info.value.code == 0
    for flag in ("--task_name", "--seeds", "--learning_rates", "--hub_retries", "--max_seq_length"):
        assert flag in shown
    trainer_flags = [f"--{f.name}" for f in dataclasses.fields(TrainingArguments)]
    assert [flag for flag in trainer_flags if flag not in shown] == []


def test_the_documented_commands_parse(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the first command's --config path is relative
    page = (REPO_ROOT / "docs" / "finetuning.md").read_text()
    section = page[page.index("## Fine-tune on GLUE") : page.index("## Question answering and NER")]
    # a command runs to the first line that does not end in a backslash
    pattern = r"^(?:accelerate launch|python) recipes/finetune_glue.py.*?(?<!\\)$"
    commands = [c.replace("\\\n", " ") for c in re.findall(pattern, section, re.M | re.S)]
    assert len(commands) == 3
    for command in commands:
        args = shlex.split(command.split("finetune_glue.py", 1)[1])
        task, model, training, _ = parse_config(GLUE_ARGUMENTS, args, renamed=RENAMED_FLAGS)
        assert model.model_name_or_path.startswith("runs/") and training.learning_rate == 2e-5
    assert (task.seeds, task.learning_rates, training.resume_from_checkpoint) == (
        "1,2,3,4,5", "2.0e-5,3.0e-5,5.0e-5", "true"
    )  # fmt: skip


def break_data(glue_dir: Path, tmp_path: Path, case: str) -> Path:
    out = tmp_path / "glue"
    shutil.copytree(glue_dir, out)
    dev = out / "RTE" / "dev.tsv"
    lines = dev.read_text().splitlines()
    if case == "missing_file":
        dev.unlink()
    elif case == "malformed_row":
        lines[5] = "only-one-field"
    elif case == "missing_column":
        lines[0] = lines[0].replace("sentence2", "hypothesis")
    elif case == "unknown_label":
        lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmaybe"
    if dev.exists():
        dev.write_text("\n".join(lines) + "\n")
    return out


def shrink_vocab(tiny_bert_dir: Path, tmp_path: Path) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    settings = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**settings, "vocab_size": 10}))
    return model


BROKEN_DATA = {"missing_file", "malformed_row", "missing_column", "unknown_label"}
BAD_INPUTS = {
    "unknown_task": (["--task_name", "rtee"], "unknown --task_name 'rtee' (did you mean 'rte'?): use one of cola,"),
    "missing_file": ([], "RTE/dev.tsv' is missing"),
    "malformed_row": ([], "RTE/dev.tsv' line 6 has 1 tab-separated fields, the header 4"),
    "missing_column": ([], "RTE/dev.tsv' has no column 'sentence2'"),
    "unknown_label": ([], "RTE/dev.tsv' line 4: label 'maybe' is not entailment or not_entailment"),
    "vocab_mismatch": ([], "has vocab_size 10 but its tokenizer has 2000 tokens"),
    "custom_files_for_all": (["--task_name", "all", "--train_file", "t.csv", "--validation_file", "d.csv"], "one task"),
    "bad_learning_rates": (["--learning_rates", "2e-5,fast"], "--learning_rates '2e-5,fast' is not a comma list"),
    "bad_seeds": (["--seeds", "1,2,1"], "--seeds '1,2,1' repeats a value"),
    "old_warmup_flag": (["--warmup_ratio", "0.1"], "command line: 'warmup_ratio' is now spelled 'warmup_steps'"),
    "trainer_flag_typo": (
        ["--eval_strategyy", "steps"],
        "unknown key 'eval_strategyy' (did you mean 'eval_strategy'?)",
    ),
    "best_model_strategies": (
        ["--load_best_model_at_end", "true", "--eval_strategy", "steps", "--save_strategy", "epoch"],
        "--load_best_model_at_end requires the save and eval strategy to match",
    ),
    "best_metric_of_another_task": (
        ["--metric_for_best_model", "f1"],
        "--metric_for_best_model 'f1' is not a rte metric (accuracy)",
    ),
    "no_model": ([], "no checkpoint given: pass --model_name_or_path"),
    "push_several_tasks": (["--push_to_hub", "true", "--task_name", "rte,mrpc"], "pushes one fine-tuned model"),
    "hub_retries": (["--push_to_hub", "true", "--hub_model_id", "a/b", "--hub_retries", "0"], "--hub_retries 0"),
    "checkpoint_for_several_runs": (
        ["--seeds", "1,2", "--resume_from_checkpoint", "."],
        "names one checkpoint, but this is 2 runs: pass true",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_and_exit_2(case, glue_dir, tiny_bert_dir, tmp_path, capsys):
    extra, expected = BAD_INPUTS[case]
    data_dir = break_data(glue_dir, tmp_path, case) if case in BROKEN_DATA else glue_dir
    model = shrink_vocab(tiny_bert_dir, tmp_path) if case == "vocab_mismatch" else tiny_bert_dir
    args = [] if case == "no_model" else ["--model_name_or_path", str(model)]
    args += ["--task_name", "rte", "--output_dir", str(tmp_path / "out")]
    args += ["--max_steps", "1"] + (["--data_dir", str(data_dir)] if "--train_file" not in extra else []) + extra
    assert_usage_error(runpy.run_path(str(FINETUNE))["main"], args, capsys, expected)


def test_the_real_command_line_exits_2_with_one_line(glue_dir, tiny_bert_dir, tmp_path):
    data_dir = break_data(glue_dir, tmp_path, "malformed_row")
    args = ["--config", "recipes/configs/glue.yaml", "--model_name_or_path", str(tiny_bert_dir), "--task_name", "rte"]
    args += ["--data_dir", str(data_dir), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, str(FINETUNE), *args],
        cwd=REPO_ROOT,
        env=ONE_THREAD,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [f"error: '{data_dir}/RTE/dev.tsv' line 6 has 1 tab-separated "
                                                  "fields, the header 4: fix or remove it"]  # fmt: skip


def test_hub_rows_become_the_common_columns(monkeypatch):
    names = datasets.ClassLabel(names=["entailment", "not_entailment"])
    features = datasets.Features(
        {"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"), "label": names,
         "idx": datasets.Value("int32")}
    )  # fmt: skip
    split = {"sentence1": ["A.", "B."], "sentence2": ["C.", "D."], "label": [1, 0], "idx": [7, 8]}
    hub = datasets.DatasetDict({"train": datasets.Dataset.from_dict(split, features=features)})
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name: hub if (path, name) == (HUB_DATASET, "rte") else 0)
    train = load_hub("rte")["train"]
    assert train.column_names == ["text_a", "text_b", "label", "idx"]
    assert (train["text_a"], train["text_b"], train["label"], train["idx"]) == (
        ["A.", "B."],
        ["C.", "D."],
        [1, 0],
        [7, 8],
    )


def test_the_hub_out_of_reach_is_one_clear_error(monkeypatch):
    def offline(path, name):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UsageError, match=r"GLUE sst2 could not be loaded from the Hub .* pass --data_dir"):
        load_hub("sst2")


def test_constant_predictions_score_zero_correlation_and_never_win_the_learning_rate_choice():
    collapsed = compute_metrics("stsb", "validation", np.full(4, 2.5), [0.0, 1.0, 4.0, 5.0])
    assert collapsed == {"pearson": 0.0, "spearmanr": 0.0}
    learned = {"pearson": 0.3, "spearmanr": 0.2}
    runs = [RunRecord(1e-5, seed, {"pearson": -0.1, "spearmanr": -0.1}) for seed in (1, 2, 3)]
    runs += [RunRecord(5e-3, 1, collapsed), RunRecord(5e-3, 2, learned), RunRecord(5e-3, 3, learned)]
    result = summarize_runs(runs)
    assert (result.learning_rate, result.kept_seed) == (5e-3, 2) and result.median == learned
