"""A NaN loss on one rank updates nothing on any backend: every rank skips the step together, the learning rate and
DeepSpeed's own step count stay in line with the trainer's, and the logged losses stay finite."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import REPO_ROOT
from tests.test_distributed import assert_ok, launch
from tests.test_trainer import read_metrics, tiny_args

PROBE = REPO_ROOT / "tests" / "nan_probe.py"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["multi_cpu.yaml", "deepspeed_zero2.yaml"])
def test_nan_on_one_rank_skips_the_step_everywhere(config, tokenizer_dir, tmp_path):
    if config.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
    out = tmp_path / "run"
    args = tiny_args(tokenizer_dir, out, "--max_steps", "5", "--save_steps", "0", "--eval_steps", "0",
                     "--skip_nan_steps", "1")  # fmt: skip
    assert_ok(launch(config, PROBE, args, "--num_processes", "2", "--mixed_precision", "no"))
    reports = [json.loads((out / f"nan_probe_rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["num_processes"] == 2
        assert report["skipped_nan_steps"] == 1
        assert report["step"] == 5
        # the skipped step did not advance the schedule: step 5 ran at the rate for 4 completed steps
        assert report["learning_rate"] == report["scheduled_rate"] > 0
        assert report["finite_weights"]
        if config.startswith("deepspeed"):
            assert report["distributed_type"] == "DistributedType.DEEPSPEED"
            assert report["engine_steps"] == 5
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["mlm_loss"]) for r in records)
