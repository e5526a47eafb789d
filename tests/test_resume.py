"""Resume after the changes users make between stop and resume: processes, gradient accumulation, DataLoader
workers, batch size, precision, under DDP and DeepSpeed ZeRO. Each case resumes from checkpoint-3 of a run saved at
every step and checks what matters: every optimizer step after the resume changes the weights, the learning rate
continues the uninterrupted run's schedule, losses stay finite, and the step, token count and training time go on
from the checkpoint. Changes DeepSpeed cannot load are one `error:` line; a loop whose optimizer would not step
stops with one line instead of training on."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from bert_recipes import checkpointing as ckpt
from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import UsageError
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig
from tests.conftest import REPO_ROOT
from tests.test_distributed import PRETRAIN, assert_ok, launch
from tests.test_trainer import pretrain_in_process, read_metrics, reset_accelerate, tiny_args

STEPS, RESUME_AT = 6, 3
EVERY_STEP = ("--max_steps", str(STEPS), "--save_steps", "1", "--save_total_limit", "0", "--eval_steps", "0")
TWO_PROCESSES = ("--num_processes", "2", "--mixed_precision", "no")

# the settings each saved run was made with: (launch config or None for one in-process run, flags)
SAVED_RUNS = {
    "plain": (None, ()),
    "accumulating_workers_bf16": (
        None, ("--gradient_accumulation_steps", "2", "--dataloader_num_workers", "2", "--mixed_precision", "bf16"),
    ),
    "two_processes": ("multi_cpu.yaml", ()),
    "zero2": ("deepspeed_zero2.yaml", ()),
}  # fmt: skip

# case: (saved run, launch config of the resume or None, flags changed on resume)
CASES = {
    "accumulation_1_to_2": ("plain", None, ("--gradient_accumulation_steps", "2")),
    "accumulation_2_to_1": ("accumulating_workers_bf16", None, ("--gradient_accumulation_steps", "1")),
    "processes_1_to_2": ("plain", "multi_cpu.yaml", ()),
    "processes_2_to_1": ("two_processes", None, ()),
    "processes_2_to_1_accumulation_1_to_2": ("two_processes", None, ("--gradient_accumulation_steps", "2")),
    "workers_0_to_1": ("plain", None, ("--dataloader_num_workers", "1")),
    "workers_2_to_0": ("accumulating_workers_bf16", None, ("--dataloader_num_workers", "0")),
    "fp32_to_bf16": ("plain", None, ("--mixed_precision", "bf16")),
    "bf16_to_fp32": ("accumulating_workers_bf16", None, ("--mixed_precision", "no")),
    "batch_size_8_to_4": ("plain", None, ("--per_device_train_batch_size", "4")),
    "zero2_accumulation_1_to_2": ("zero2", "deepspeed_zero2.yaml", ("--gradient_accumulation_steps", "2")),
}  # fmt: skip


def run(config: str | None, args: list[str]) -> None:
    if config is None:
        pretrain_in_process(args)
    else:
        if config.startswith("deepspeed"):
            pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
        assert_ok(launch(config, PRETRAIN, args, *TWO_PROCESSES))


@pytest.fixture(scope="module")
def saved_runs(tokenizer_dir, tmp_path_factory):
    """Each saved run, made on first use: its output_dir with checkpoint-1 ... checkpoint-6."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            config, flags = SAVED_RUNS[name]
            out = tmp_path_factory.mktemp(name) / "run"
            run(config, tiny_args(tokenizer_dir, out, *EVERY_STEP, *flags))
            made[name] = out
        return made[name]

    return get


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def weight_change(before: Path, after: Path) -> float:
    """The L2 norm of what one optimizer step changed in every weight of the model."""
    a, b = weights(before), weights(after)
    return math.sqrt(sum((b[k].double() - a[k].double()).square().sum().item() for k in a))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_changed_resume_updates_the_weights_at_every_step_and_continues_the_schedule(
    case, saved_runs, tokenizer_dir, tmp_path
):
    saved_name, config, changes = CASES[case]
    saved = saved_runs(saved_name)
    out = tmp_path / "resumed"
    shutil.copytree(saved / f"checkpoint-{RESUME_AT}", out / f"checkpoint-{RESUME_AT}")
    _, saved_flags = SAVED_RUNS[saved_name]
    run(
        config, tiny_args(tokenizer_dir, out, *EVERY_STEP, *saved_flags, *changes, "--resume_from_checkpoint", "latest")
    )

    steps = range(RESUME_AT + 1, STEPS + 1)
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(out)] == [RESUME_AT, *steps]
    changes_per_step = [weight_change(out / f"checkpoint-{s - 1}", out / f"checkpoint-{s}") for s in steps]
    # one AdamW step at a rate near 2e-3 moves each of about 100k weights by about the rate
    assert min(changes_per_step) > 1e-2, changes_per_step

    records, expected = read_metrics(out), {r["step"]: r for r in read_metrics(saved)}
    assert [r["step"] for r in records] == list(steps)
    for record in records:
        assert math.isfinite(record["loss"]) and math.isfinite(record["mlm_loss"]), record
        # the schedule is a function of the step: the same rate as the run that was never stopped
        assert record["learning_rate"] == pytest.approx(expected[record["step"]]["learning_rate"], rel=1e-12)
    at_checkpoint = ckpt.read_trainer_state(out / f"checkpoint-{RESUME_AT}")
    assert records[0]["tokens_seen"] > at_checkpoint["tokens_seen"] > 0
    assert records[0]["elapsed_seconds"] > at_checkpoint["elapsed_seconds"] > 0
    assert records[-1]["documents_seen"] >= expected[RESUME_AT]["documents_seen"]


def test_a_resume_with_other_data_slots_warns_once_and_restarts_the_stream(saved_runs, tokenizer_dir, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(saved_runs("plain") / f"checkpoint-{RESUME_AT}", out / f"checkpoint-{RESUME_AT}")
    args = tiny_args(
        tokenizer_dir, out, *EVERY_STEP, "--dataloader_num_workers", "1", "--resume_from_checkpoint", "latest"
    )
    result = subprocess.run([sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, cwd=REPO_ROOT)
    assert_ok(result)
    assert result.stderr.count("the data stream restarts with the next epoch's order") == 1
    assert "1 process(es) with 0 DataLoader worker(s) each, resuming with 1 and 1" in result.stderr
    assert read_metrics(out)[0]["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("config", [None, "deepspeed_zero3.yaml"], ids=["no_deepspeed", "zero3"])
def test_a_deepspeed_checkpoint_in_another_layout_is_one_clear_error(config, saved_runs, tokenizer_dir, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(saved_runs("zero2") / f"checkpoint-{RESUME_AT}", out / f"checkpoint-{RESUME_AT}")
    args = tiny_args(tokenizer_dir, out, *EVERY_STEP, "--resume_from_checkpoint", "latest")
    before = sorted(p.name for p in out.rglob("*"))
    if config is None:
        result = subprocess.run([sys.executable, str(PRETRAIN), *args], capture_output=True, text=True, cwd=REPO_ROOT)
    else:
        result = launch(config, PRETRAIN, args, *TWO_PROCESSES)
    if config is None:
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    else:
        # torchrun reports a failed rank with a traceback of its own; the rank itself printed one line, exit 2
        assert "exitcode  : 2" in result.stderr, result.stderr[-3000:]
        assert not re.search(r'File ".*(bert_recipes|pretrain\.py)", line', result.stderr), result.stderr[-3000:]
    written, now = "DeepSpeed ZeRO-2 on 2 process(es) in no", "no DeepSpeed, 1 process(es) in no"
    if config is not None:
        now = "DeepSpeed ZeRO-3 on 2 process(es) in no"
    assert f"was written with {written}, this run has {now}" in result.stderr
    assert f"--model_name_or_path {out / f'checkpoint-{RESUME_AT}'}" in result.stderr
    assert sorted(p.name for p in out.rglob("*")) == before


def test_an_optimizer_step_off_the_accumulation_boundary_stops_the_run(tokenizer_dir, tmp_path):
    """The condition the resume bug created: Accelerate's micro-batch counter one off the boundary, so that the
    optimizer silently did nothing. The guard must stop at the first such step (here, without DeepSpeed, before
    anything changed; under DeepSpeed the engine has stepped at the early sync point by then)."""
    out = tmp_path / "run"
    args = tiny_args(tokenizer_dir, out, *EVERY_STEP, "--gradient_accumulation_steps", "2")
    reset_accelerate()
    trainer = Pretrainer(*parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args))
    before = {k: v.clone() for k, v in trainer.bert.state_dict().items()}
    trainer.accelerator.step = 1
    with pytest.raises(UsageError, match="step 1: the optimizer would not update the weights"):
        trainer.run()
    assert all(torch.equal(before[k], v) for k, v in trainer.bert.state_dict().items())


def test_a_checkpoint_without_a_loss_scaler_resumes_into_an_fp16_run(tmp_path):
    """fp16 on CUDA brings a GradScaler; a bf16 or fp32 checkpoint has no scaler.pt for Accelerate to read."""
    reset_accelerate()
    accelerator = Accelerator(cpu=True)
    layer = torch.nn.Linear(4, 4)
    accelerator.prepare(layer, torch.optim.AdamW(layer.parameters()))
    accelerator.save_state(str(tmp_path / ckpt.STATE_DIR))
    (tmp_path / ckpt.STATE_DIR / ckpt.TRAINER_STATE).write_text("{}")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    accelerator.scaler = scaler
    ckpt.load_accelerate_state(accelerator, tmp_path)
    assert accelerator.scaler is scaler and scaler.get_scale() == 1024.0


@pytest.mark.parametrize(
    ("saved", "now", "refused"),
    [
        ({"zero_stage": 0, "fsdp": False}, {"zero_stage": 0, "fsdp": True}, "was written with no DeepSpeed"),
        ({"zero_stage": 0, "fsdp": True}, {"zero_stage": 0, "fsdp": False}, "was written with FSDP"),
        ({"zero_stage": 2, "fsdp": False}, {"zero_stage": 2, "fsdp": False, "world_size": 4}, "ZeRO-2 on 2"),
        ({"zero_stage": 0, "fsdp": False}, {"zero_stage": 0, "fsdp": False, "world_size": 4}, None),
    ],
)
def test_layouts_that_cannot_load_each_other_are_refused(saved, now, refused, tmp_path):
    base = {"world_size": 2, "mixed_precision": "bf16"}
    check = lambda: ckpt.check_resumable_layout(tmp_path, {**base, **saved}, {**base, **now})  # noqa: E731
    if refused is None:
        check()
    else:
        with pytest.raises(UsageError, match=refused):
            check()


def test_a_checkpoint_of_the_previous_version_with_workers_resumes_its_stream_exactly(
    saved_runs, tokenizer_dir, tmp_path
):
    """Checkpoints written before trainer_state.json recorded the worker count: it is read from the loader state."""
    saved = saved_runs("accumulating_workers_bf16")
    out = tmp_path / "resumed"
    shutil.copytree(saved / f"checkpoint-{RESUME_AT}", out / f"checkpoint-{RESUME_AT}")
    state_file = out / f"checkpoint-{RESUME_AT}" / ckpt.STATE_DIR / ckpt.TRAINER_STATE
    state = json.loads(state_file.read_text())
    for key in ("num_workers", "zero_stage", "fsdp", "mixed_precision", "last_eval_step"):
        state.pop(key)
    state_file.write_text(json.dumps(state))
    _, flags = SAVED_RUNS["accumulating_workers_bf16"]
    pretrain_in_process(tiny_args(tokenizer_dir, out, *EVERY_STEP, *flags, "--resume_from_checkpoint", "latest"))
    expected = {r["step"]: r["loss"] for r in read_metrics(saved)}
    assert {r["step"]: r["loss"] for r in read_metrics(out)} == pytest.approx(
        {s: expected[s] for s in range(RESUME_AT + 1, STEPS + 1)}, abs=1e-6
    )
