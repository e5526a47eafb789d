"""Corrupt files, runaway numerics and safety: one clear line and exit 2, the batch kept, no secrets leaked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils.constants import OPTIMIZER_NAME, RNG_STATE_NAME

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import UsageError
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig
from tests.conftest import REPO_ROOT
from tests.test_trainer import pretrain_in_process, tiny_args

PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"


@pytest.fixture(scope="module")
def checkpointed_run(tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, "--max_steps", "4", "--save_steps", "2", "--eval_steps", "0"))
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, timeout=300)


def assert_one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and all(e in errors[0] for e in expected), errors
    assert "Traceback" not in result.stderr


def test_truncated_safetensors_in_a_checkpoint(checkpointed_run, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(checkpointed_run / "checkpoint-4", out / "checkpoint-4")
    weights = out / "checkpoint-4" / "training_state" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_cli(*tiny_args(tokenizer_dir, out, "--max_steps", "6", "--resume_from_checkpoint", "latest"))
    assert_one_clear_line(result, "checkpoint-4", "corrupt")


def test_tokenizer_json_that_does_not_parse(tokenizer_dir, tmp_path):
    broken = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, broken)
    (broken / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    assert_one_clear_line(run_cli(*tiny_args(broken, tmp_path / "run")), str(broken), "could not be loaded")


def test_unknown_yaml_key_lists_valid_keys_and_the_nearest(tokenizer_dir, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("learning_rat: 1.0e-3\n", encoding="utf-8")
    result = run_cli("--config", str(config), *tiny_args(tokenizer_dir, tmp_path / "run"))
    assert_one_clear_line(result, "unknown key 'learning_rat'", "did you mean 'learning_rate'", "--help lists them all")


def test_wrong_value_type(tokenizer_dir, tmp_path):
    result = run_cli(*tiny_args(tokenizer_dir, tmp_path / "run"), "--max_steps", "ten")
    assert_one_clear_line(result, "--max_steps", "invalid int value: 'ten'")


def test_binary_corpus_file(tokenizer_dir, tmp_path):
    blob = tmp_path / "corpus.txt"
    blob.write_bytes(bytes(range(256)) * 64)
    result = run_cli(*tiny_args(tokenizer_dir, tmp_path / "run"), "--train_files", str(blob))
    assert_one_clear_line(result, str(blob), "looks binary")


def nan_trainer(tokenizer_dir: Path, out: Path, *extra: str) -> Pretrainer:
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    configs = parse_config(
        [CorpusConfig, DataConfig, ModelConfig, TrainConfig], tiny_args(tokenizer_dir, out, "--eval_steps", "0", *extra)
    )
    trainer = Pretrainer(*configs)
    # poison one weight: every forward pass from here on gives a NaN loss
    with torch.no_grad():
        trainer.bert.bert.embeddings.LayerNorm.weight[0] = float("nan")
    return trainer


def test_nan_loss_stops_with_the_batch_saved(tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="loss became NaN/inf at step 1") as err:
        nan_trainer(tokenizer_dir, out).run()
    dumps = list(out.glob("nonfinite-step-1-rank0.pt"))
    assert len(dumps) == 1 and str(dumps[0]) in str(err.value)
    batch = torch.load(dumps[0], weights_only=True)
    assert batch["input_ids"].shape[0] == 8 and "labels" in batch


def test_skip_nan_steps_skips_then_stops(tokenizer_dir, tmp_path, caplog):
    out = tmp_path / "run"
    with pytest.raises(UsageError, match="at step 1"):
        nan_trainer(tokenizer_dir, out, "--skip_nan_steps", "3").run()
    assert caplog.text.count("non-finite loss at step 1: step skipped") == 3


def test_nothing_trusts_remote_code_unless_asked():
    sources = [*(REPO_ROOT / "src").rglob("*.py"), *(REPO_ROOT / "recipes").glob("*.py")]
    for path in sources:
        for line in path.read_text().splitlines():
            if "trust_remote_code=" in line:
                assert "trust_remote_code=True" not in line, f"{path}: {line.strip()}"


class RunsCodeWhenUnpickled:
    """What a tampered checkpoint can hold: unpickling it calls a function of the author's choice (here: creates
    `marker`)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return open, (self.marker, "w")


# the LR schedule and data positions are JSON; these are the pickles accelerate writes
PICKLED_STATE = [f"{OPTIMIZER_NAME}.bin", f"{RNG_STATE_NAME}_0.pkl"]


def test_every_pickled_file_of_a_checkpoint_is_planted_below(checkpointed_run):
    state = checkpointed_run / "checkpoint-4" / "training_state"
    pickled = {p.name for p in state.iterdir() if p.suffix not in (".safetensors", ".json")}
    assert pickled == set(PICKLED_STATE)


@pytest.mark.parametrize("name", PICKLED_STATE)
def test_resume_never_runs_code_planted_in_a_checkpoint(name, checkpointed_run, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(checkpointed_run / "checkpoint-4", out / "checkpoint-4")
    marker = tmp_path / "planted-code-ran"
    torch.save(RunsCodeWhenUnpickled(marker), out / "checkpoint-4" / "training_state" / name)
    result = run_cli(*tiny_args(tokenizer_dir, out, "--max_steps", "6", "--resume_from_checkpoint", "latest"))
    assert not marker.exists(), "resuming ran code planted in the checkpoint"
    assert_one_clear_line(result, "checkpoint-4")
