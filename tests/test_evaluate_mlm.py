"""recipes/evaluate_mlm.py: held-out MLM metrics of several checkpoints on the same masked positions, equal to the
pretraining run's own evaluation for the same held-out settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import BertModel

from tests.conftest import DEMO_CORPUS, REPO_ROOT
from tests.test_continued_pretraining import save_as_masked_lm
from tests.test_trainer import pretrain_in_process, read_metrics, tiny_args

EVALUATE = REPO_ROOT / "recipes" / "evaluate_mlm.py"
# the held-out settings of tiny_args: the same documents, examples, masks and batches as the run's evaluation
RUN_HELD_OUT = [
    "--validation_files", DEMO_CORPUS, "--max_seq_length", "64", "--eval_every_nth_document", "10",
    "--eval_examples", "32", "--document_buffer_size", "32", "--seed", "7", "--per_device_eval_batch_size", "16",
]  # fmt: skip
METRICS = ("eval_mlm_loss", "eval_mlm_accuracy", "eval_perplexity", "eval_nsp_accuracy")


def evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EVALUATE), *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


@pytest.fixture(scope="module")
def run(tokenizer_dir, tmp_path_factory) -> Path:
    """20 steps evaluated at steps 10 and 20, in fp32 like the evaluator (bf16 autocast would round differently)."""
    out = tmp_path_factory.mktemp("evaluated") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, "--mixed_precision", "no"))
    return out


@pytest.fixture(scope="module")
def masked_lm_model(run, tmp_path_factory) -> Path:
    return save_as_masked_lm(run, tmp_path_factory.mktemp("masked-lm"))


@pytest.fixture(scope="module")
def evaluated(run, masked_lm_model, tmp_path_factory) -> tuple[list[dict], str]:
    """The final model twice, checkpoint-10 and the final model as a BertForMaskedLM, in one call."""
    output = tmp_path_factory.mktemp("results") / "mlm.json"
    models = [str(run), str(run), str(run / "checkpoint-10"), str(masked_lm_model)]
    result = evaluate("--model_name_or_path", *models, *RUN_HELD_OUT, "--output_file", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())["results"], result.stdout


def test_the_same_model_twice_gives_identical_numbers(evaluated):
    (final, again, *_), _ = evaluated
    assert final == again
    assert final["eval_masked_tokens"] > 200 and final["eval_sequences"] == 32


def test_different_models_give_different_numbers(evaluated):
    (final, _, earlier, _), _ = evaluated
    assert final["eval_masked_tokens"] == earlier["eval_masked_tokens"]
    assert final["eval_mlm_loss"] != pytest.approx(earlier["eval_mlm_loss"], abs=1e-3)


def test_equals_the_runs_own_evaluation_for_the_same_held_out_settings(evaluated, run):
    (final, _, earlier, _), _ = evaluated
    logged = {r["step"]: r for r in read_metrics(run) if "eval_mlm_loss" in r}
    for record, step in ((final, 20), (earlier, 10)):
        for name in METRICS:
            assert record[name] == pytest.approx(logged[step][name], rel=1e-6, abs=1e-6), (step, name)


def test_a_masked_lm_model_is_scored_without_nsp(evaluated):
    (final, _, _, masked_lm), stdout = evaluated
    assert "eval_nsp_accuracy" not in masked_lm
    # the same encoder and MLM head on the same masked positions
    assert masked_lm["eval_mlm_loss"] == pytest.approx(final["eval_mlm_loss"], abs=1e-6)
    rows = [line for line in stdout.splitlines() if line.startswith("| /")]
    assert len(rows) == 4 and rows[-1].endswith("| - |")
    assert f"{final['eval_mlm_loss']:.4f}" in rows[0]


@pytest.mark.parametrize("case", ["hub_id_offline", "bare_model", "missing_file", "positions"])
def test_bad_input_gives_one_error_line_and_keeps_the_output(case, run, tmp_path):
    bare = tmp_path / "bare"
    BertModel.from_pretrained(run).save_pretrained(bare)
    model, extra, message = {
        "hub_id_offline": ("google-bert/bert-base-uncased", [], "'google-bert/bert-base-uncased' could not be loaded"),
        "bare_model": (str(bare), ["--tokenizer_name_or_path", str(run)], "has no MLM head"),
        "missing_file": (str(run), ["--validation_files", "nothing.txt"], "--validation_files 'nothing.txt' does not"),
        "positions": (str(run), ["--max_seq_length", "1024"], "--max_seq_length 1024 exceeds the 512 position"),
    }[case]
    output = tmp_path / "mlm.json"
    output.write_text("earlier results")
    result = evaluate("--model_name_or_path", model, *RUN_HELD_OUT, *extra, "--output_file", str(output))
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert output.read_text() == "earlier results"
