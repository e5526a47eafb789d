"""The pretraining recipe end to end on a tiny BERT: learning, exact resume, checkpoints, outputs, bad input."""

from __future__ import annotations

import gzip
import itertools
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    pipeline,
)

from bert_recipes import checkpointing as ckpt
from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig
from tests.conftest import DEMO_CORPUS, REPO_ROOT

PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"


def tiny_args(tokenizer_dir: Path, output_dir: Path, *overrides: str) -> list[str]:
    return [
        "--train_files", DEMO_CORPUS, "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(output_dir),
        "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2",
        "--max_seq_length", "64", "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16",
        "--learning_rate", "2.0e-3", "--warmup_steps", "2", "--max_steps", "20", "--logging_steps", "1",
        "--eval_steps", "10", "--save_steps", "10", "--eval_examples", "32", "--report_to", "none",
        "--seed", "7", "--document_buffer_size", "32", "--eval_every_nth_document", "10",
        # 32 wide, bf16 autocast costs more than it saves; tests/test_precision.py covers bf16
        "--mixed_precision", "no", *overrides,
    ]  # fmt: skip


def reset_accelerate() -> None:
    """Forget the previous in-process run's Accelerator, as a new process would."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def pretrain_in_process(args: list[str]) -> dict[str, float]:
    reset_accelerate()
    corpus, data, model, train = parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args)
    return Pretrainer(corpus, data, model, train).run()


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def losses_by_step(output_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(output_dir) if "loss" in r}


@pytest.fixture(scope="module")
def finished_run(tokenizer_dir, tmp_path_factory) -> Path:
    """One uninterrupted 20-step run, checkpoints at steps 10 and 20, shared by the tests below."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out))
    return out


def test_loss_falls(tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, "--max_steps", "40", "--save_steps", "0", "--eval_steps", "0"))
    losses = list(losses_by_step(out).values())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, (first, last)


def test_metrics_jsonl_has_every_field(finished_run):
    records = read_metrics(finished_run)
    assert [r["step"] for r in records] == list(range(1, 21))
    train_fields = {"step", "epoch", "loss", "mlm_loss", "nsp_loss", "learning_rate", "grad_norm", "tokens_per_second",
                    "data_wait_fraction"}  # fmt: skip
    assert all(train_fields <= r.keys() for r in records)
    evals = [r for r in records if "eval_mlm_loss" in r]
    assert [r["step"] for r in evals] == [10, 20]
    assert {"eval_mlm_accuracy", "eval_perplexity", "eval_nsp_accuracy"} <= evals[-1].keys()
    assert all(r["tokens_per_second"] > 0 for r in records)
    assert all(0 <= r["data_wait_fraction"] < 1 for r in records)
    assert records[-1]["tokens_seen"] <= 20 * 8 * 64


def test_resume_continues_with_identical_losses(finished_run, tokenizer_dir, tmp_path):
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(finished_run / "checkpoint-10", out / "checkpoint-10")
    pretrain_in_process(tiny_args(tokenizer_dir, out, "--resume_from_checkpoint", "latest"))
    expected, resumed = losses_by_step(finished_run), losses_by_step(out)
    assert sorted(resumed) == list(range(11, 21))
    for step, loss in resumed.items():
        assert loss == pytest.approx(expected[step], abs=1e-5), step
    final_a = torch.load(finished_run / "checkpoint-20" / "training_state" / "optimizer.bin", weights_only=True)
    final_b = torch.load(out / "checkpoint-20" / "training_state" / "optimizer.bin", weights_only=True)
    assert final_a["state"][0]["step"] == final_b["state"][0]["step"]


def test_checkpoint_rotation_keeps_the_newest(tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    args = ["--max_steps", "12", "--save_steps", "3", "--save_total_limit", "2", "--eval_steps", "0"]
    pretrain_in_process(tiny_args(tokenizer_dir, out, *args))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-9"]
    assert not list(out.glob(".tmp-*"))


def test_final_model_loads_with_the_auto_classes(finished_run):
    tokenizer = AutoTokenizer.from_pretrained(finished_run)
    assert AutoModelForPreTraining.from_pretrained(finished_run).config.vocab_size == len(tokenizer)
    AutoModelForMaskedLM.from_pretrained(finished_run)
    classifier = AutoModelForSequenceClassification.from_pretrained(finished_run, num_labels=2)
    assert classifier(**tokenizer("a test", return_tensors="pt")).logits.shape == (1, 2)
    predictions = pipeline("fill-mask", model=str(finished_run), device="cpu")("the [MASK] of it")
    assert len(predictions) == 5
    assert {p.name for p in finished_run.glob("*.safetensors")} == {"model.safetensors"}
    # the default --dataloader_num_workers auto, as it ran on this CPU-only machine
    assert yaml.safe_load((finished_run / "training_args.yaml").read_text())["dataloader_num_workers"] == "0"


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, **kwargs
    )


STOP_ARGS = ("--max_steps", "20", "--save_steps", "0", "--eval_steps", "0")


@pytest.fixture(scope="module")
def uninterrupted_losses(tokenizer_dir, tmp_path_factory) -> dict[int, float]:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, *STOP_ARGS))
    return losses_by_step(out)


def resume_and_compare(tokenizer_dir: Path, out: Path, expected: dict[int, float]) -> int:
    """Resume a stopped run to the end; its losses must be the uninterrupted run's. Returns the stop step."""
    (stopped,) = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")]
    assert 0 < stopped < 20, stopped
    pretrain_in_process(tiny_args(tokenizer_dir, out, *STOP_ARGS, "--resume_from_checkpoint", "latest"))
    resumed = losses_by_step(out)
    assert sorted(resumed) == list(range(1, 21))
    for step in range(stopped + 1, 21):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-6), (stopped, step)
    return stopped


def run_until_sigterm(args: list[str], out: Path) -> None:
    """pretrain.py in its own process, sent SIGTERM once it has logged its first step; it must exit 0."""
    proc = subprocess.Popen([sys.executable, str(PRETRAIN), *args], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resumes_with_identical_losses(tokenizer_dir, tmp_path, uninterrupted_losses):
    out = tmp_path / "run"
    run_until_sigterm(tiny_args(tokenizer_dir, out, *STOP_ARGS), out)
    assert (out / "model.safetensors").is_file()
    resume_and_compare(tokenizer_dir, out, uninterrupted_losses)


def small_corpus(tmp_path: Path, documents: int = 12) -> Path:
    """The demo corpus's first documents: an epoch of a few dozen steps."""
    path = tmp_path / "small.jsonl.gz"
    with gzip.open(DEMO_CORPUS, "rt") as source, gzip.open(path, "wt") as target:
        target.writelines(itertools.islice(source, documents))
    return path


@pytest.mark.parametrize("ending", ["max_steps", "max_train_time", "num_train_epochs", "sigterm"])
def test_every_way_a_run_ends_leaves_an_evaluation_a_checkpoint_and_the_model(ending, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    # evaluation on, but never due at a step of its own before the end
    flags = ["--max_steps", "100000", "--save_steps", "0", "--eval_steps", "50000"]
    flags += {
        "max_steps": ["--max_steps", "7"],
        "max_train_time": ["--max_train_time", "1.0"],
        # a third of the documents held out, so that a small corpus still has some
        "num_train_epochs": ["--num_train_epochs", "1", "--train_files", str(small_corpus(tmp_path)),
                             "--eval_every_nth_document", "3"],
        "sigterm": [],
    }[ending]  # fmt: skip
    args = tiny_args(tokenizer_dir, out, *flags)
    if ending == "sigterm":
        run_until_sigterm(args, out)
    else:
        pretrain_in_process(args)
    records = read_metrics(out)
    last = records[-1]["step"]
    assert 0 < last < 100000
    assert "eval_mlm_loss" in records[-1] and math.isfinite(records[-1]["eval_mlm_loss"]), records[-1]
    assert ckpt.list_checkpoints(out)[-1].name == f"checkpoint-{last}"
    assert (
        load_file(out / "model.safetensors").keys()
        == load_file(out / f"checkpoint-{last}" / "model.safetensors").keys()
    )


def test_a_time_budget_runs_the_learning_rate_schedule_to_its_end(tokenizer_dir, tmp_path):
    out, budget, peak = tmp_path / "run", 3.0, 2.0e-3
    flags = ("--max_steps", "100000", "--max_train_time", str(budget), "--save_steps", "0", "--eval_steps", "0",
             "--warmup_steps", "0", "--warmup_ratio", "0.1")  # fmt: skip
    pretrain_in_process(tiny_args(tokenizer_dir, out, *flags))
    records = read_metrics(out)
    assert len(records) >= 5, "too few steps in the budget to see a schedule"
    rates = [r["learning_rate"] for r in records]
    # past warmup the rate only falls, and never above what the clock at the previous step's end allows:
    # each step's rate is read at its start, after the previous step's record
    for before, rate in zip(records[:-1], rates[1:], strict=True):
        progress = before["elapsed_seconds"] / budget
        if progress >= 0.1:
            assert rate <= peak * (1 - progress) / 0.9 + 1e-12, (before, rate)
    assert rates[-1] < 0.5 * peak, rates  # a step-length schedule of 100,000 steps would still be at its peak
    assert records[-1]["elapsed_seconds"] >= 0.9 * budget


def test_overwrite_output_dir_starts_over(tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    short = ("--max_steps", "4", "--save_steps", "2", "--eval_steps", "0")
    pretrain_in_process(tiny_args(tokenizer_dir, out, *short))
    (out / "nonfinite-step-3-rank0.pt").write_bytes(b"left by the first run")
    pretrain_in_process(tiny_args(tokenizer_dir, out, *short, "--seed", "8", "--overwrite_output_dir", "true"))
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for folder in (out, out / "checkpoint-2", out / "checkpoint-4"):
        assert "seed: 8" in (folder / "training_args.yaml").read_text(), folder
    assert not (out / "nonfinite-step-3-rank0.pt").exists()


def test_save_every_seconds_checkpoints_at_the_first_step_past_each_interval(tokenizer_dir, tmp_path):
    out, interval = tmp_path / "run", 0.1
    timed = ("--save_steps", "0", "--eval_steps", "0", "--save_total_limit", "0", "--max_steps", "30")
    pretrain_in_process(tiny_args(tokenizer_dir, out, *timed, "--save_every_seconds", str(interval)))
    elapsed = {r["step"]: r["elapsed_seconds"] for r in read_metrics(out)}
    saved = {int(p.name.split("-")[1]): ckpt.read_trainer_state(p)["elapsed_seconds"] for p in out.glob("checkpoint-*")}
    assert max(saved) == 30  # the final one
    timed_saves = sorted((step, seconds) for step, seconds in saved.items() if step < 30)
    assert len(timed_saves) >= 2
    marks = [int(seconds // interval) for _, seconds in timed_saves]
    assert marks == sorted(set(marks))
    for (step, seconds), mark in zip(timed_saves, marks, strict=True):
        assert elapsed.get(step - 1, 0.0) < mark * interval <= seconds


def copy_checkpoint(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run / "checkpoint-10", out / "checkpoint-10")
    return out


def corrupt_checkpoint(run: Path, tmp_path: Path) -> Path:
    out = copy_checkpoint(run, tmp_path)
    for state in (out / "checkpoint-10" / "training_state").glob("optimizer*"):
        state.unlink()
    return out


@pytest.mark.parametrize(
    "case",
    [
        "no_tokenizer",
        "vocab_mismatch",
        "seq_too_long",
        "existing_checkpoints",
        "corrupt_checkpoint",
        "other_model_size",
        "foreign_weights",
        "overwrite_and_resume",
        "workers_not_a_count",
    ],
)
def test_bad_input_gives_one_line_and_exit_2(case, finished_run, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    expected = {
        "no_tokenizer": ("--tokenizer_name_or_path", str(tmp_path), "has no tokenizer.json"),
        "vocab_mismatch": ("--resume_from_checkpoint", "latest", "vocab_size"),
        "seq_too_long": ("--max_position_embeddings", "32", "exceeds --max_position_embeddings"),
        "existing_checkpoints": ("--max_steps", "5", "already holds checkpoints"),
        "corrupt_checkpoint": ("--resume_from_checkpoint", "latest", "has no optimizer state"),
        "other_model_size": ("--intermediate_size", "64", "has intermediate_size 128 but this run has 64"),
        "foreign_weights": ("--resume_from_checkpoint", "latest", "size mismatch for model.cls.predictions.bias"),
        "overwrite_and_resume": ("--overwrite_output_dir", "true", "pass one of them"),
        "workers_not_a_count": ("--dataloader_num_workers", "many", "pass 0, 1, 2, ... or auto"),
    }[case]
    if case in ("vocab_mismatch", "existing_checkpoints"):
        out = finished_run
    if case == "corrupt_checkpoint":
        out = corrupt_checkpoint(finished_run, tmp_path)
    if case in ("other_model_size", "overwrite_and_resume"):
        out = copy_checkpoint(finished_run, tmp_path)
        expected = (*expected, "--resume_from_checkpoint", "latest")
    if case == "foreign_weights":
        out = copy_checkpoint(finished_run, tmp_path)
        weights = out / "checkpoint-10" / "training_state" / "model.safetensors"
        tensors = load_file(weights)
        tensors["model.cls.predictions.bias"] = tensors["model.cls.predictions.bias"][:100].clone()
        save_file(tensors, weights)
    tokenizer = tokenizer_dir
    if case == "vocab_mismatch":
        tokenizer = tmp_path / "other-tokenizer"
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tokenizer)
        tokenizer_json = json.loads((tokenizer / "tokenizer.json").read_text())
        tokenizer_json["model"]["vocab"]["zzzextra"] = len(tokenizer_json["model"]["vocab"])
        (tokenizer / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    before = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    result = run_cli(*tiny_args(tokenizer, out, *expected[:2], *expected[3:]))
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected[2] in result.stderr
    assert "Traceback" not in result.stderr
    assert (sorted(p.name for p in out.rglob("*")) if out.exists() else []) == before
