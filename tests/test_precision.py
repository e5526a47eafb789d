"""Mixed precision: bf16 where the hardware runs it natively, the Accelerate config honoured, the command line
winning, fp16 refused without CUDA; and the precision that ran recorded with the run."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from bert_recipes.distributed import bf16_supported, resolve_mixed_precision
from bert_recipes.errors import UsageError
from bert_recipes.glue import GlueConfig
from tests.test_trainer import losses_by_step, pretrain_in_process, read_metrics, tiny_args


def test_auto_is_bf16_exactly_where_the_hardware_has_it(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_mixed_precision("auto") == ("bf16" if bf16_supported() else "no")


@pytest.mark.parametrize(("gpu", "native"), [("V100", False), ("A100", True)])
def test_auto_on_a_gpu_counts_only_native_bf16(gpu, native, monkeypatch):
    """torch.cuda.is_bf16_supported() answers True on a V100 or T4 (emulated, slower than fp32) unless told
    including_emulation=False; this fake answers as such a GPU does."""
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    assert bf16_supported() is native
    assert resolve_mixed_precision("auto") == ("bf16" if native else "no")


def test_the_accelerate_config_is_honoured_and_the_command_line_wins(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_mixed_precision("auto") == "no"
    assert resolve_mixed_precision("bf16") == "bf16"


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed on CUDA")
def test_fp16_without_cuda_is_one_clear_error():
    with pytest.raises(UsageError, match="fp16 needs a CUDA GPU"):
        resolve_mixed_precision("fp16")
    with pytest.raises(UsageError, match="not one of"):
        resolve_mixed_precision("fp8")


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_the_precision_that_ran_is_in_the_first_record_and_the_saved_config(precision, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    args = ("--max_steps", "3", "--save_steps", "0", "--eval_steps", "0", "--mixed_precision", precision)
    pretrain_in_process(tiny_args(tokenizer_dir, out, *args))
    records = read_metrics(out)
    assert records[0]["mixed_precision"] == precision
    assert all("mixed_precision" not in r for r in records[1:])
    assert yaml.safe_load((out / "training_args.yaml").read_text())["mixed_precision"] == precision


@pytest.mark.parametrize(("asked", "bf16"), [("no", False), ("bf16", True)])
def test_glue_maps_the_precision_onto_trainer_flags(asked, bf16, tmp_path):
    config = GlueConfig.from_values(model_name_or_path="m", output_dir=str(tmp_path), mixed_precision=asked)
    assert (config.training.bf16, config.training.fp16, config.training.mixed_precision) == (bf16, False, asked)


def test_bf16_run_resumes_with_identical_losses(tokenizer_dir, tmp_path):
    args = ("--max_steps", "8", "--save_steps", "4", "--eval_steps", "0", "--mixed_precision", "bf16")
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    pretrain_in_process(tiny_args(tokenizer_dir, whole, *args))
    shutil.copytree(whole / "checkpoint-4", resumed / "checkpoint-4")
    pretrain_in_process(tiny_args(tokenizer_dir, resumed, *args, "--resume_from_checkpoint", "latest"))
    expected, got = losses_by_step(whole), losses_by_step(resumed)
    assert sorted(got) == [5, 6, 7, 8]
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step
