"""A training step that a GPU would not wait on: at most one blocking read of the device per optimizer step (the
all-reduce that carries the finite check, the clock and the stop flags), none per micro-batch, on one process, DDP
and DeepSpeed ZeRO, with gradient accumulation 1 and 4. Logging, evaluation and checkpoints read at their own steps
only; the counted window has none of them."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO_ROOT
from tests.host_reads import count_reads
from tests.test_distributed import assert_ok, launch
from tests.test_trainer import reset_accelerate, tiny_args

FIRST, LAST = 3, 11
QUIET = ("--max_steps", "12", "--logging_steps", "1000", "--eval_steps", "0", "--save_steps", "0")


@pytest.mark.parametrize("accumulation", [1, 4])
def test_one_process_step_reads_the_device_once(accumulation, tokenizer_dir, tmp_path):
    reset_accelerate()
    args = tiny_args(tokenizer_dir, tmp_path / "run", *QUIET, "--gradient_accumulation_steps", str(accumulation))
    result = count_reads(args, FIRST, LAST)
    # exactly one: the all-reduce's read (a count of 0 would mean the counter saw nothing); one process has no
    # collectives to make
    assert (result["reads_per_step"], result["collectives_per_step"]) == (1.0, 0.0), result["sites"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "accumulation"),
    [("multi_cpu.yaml", 1), ("multi_cpu.yaml", 4), ("deepspeed_zero2.yaml", 2)],
)
def test_two_process_step_reads_the_device_once(config, accumulation, tokenizer_dir, tmp_path):
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
    report = tmp_path / "reads"
    args = tiny_args(tokenizer_dir, tmp_path / "run", *QUIET, "--gradient_accumulation_steps", str(accumulation))
    probe = REPO_ROOT / "tests" / "host_reads.py"
    result = launch(config, probe, [str(FIRST), str(LAST), str(report), *args], "--num_processes", "2",
                    "--mixed_precision", "no")  # fmt: skip
    assert_ok(result)
    for rank in (0, 1):
        counted = json.loads(report.with_name(f"reads.rank{rank}.json").read_text())
        assert counted["num_processes"] == 2, counted
        assert (counted["reads_per_step"], counted["collectives_per_step"]) == (1.0, 1.0), counted["sites"]
