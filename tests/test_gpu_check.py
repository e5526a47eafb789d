"""benchmarks/gpu_check.py on the CPU, as the suite can run it: every part of the GPU check (peak, one-device run,
DDP and ZeRO-2 saved and resumed over gloo, the table and the JSON) works, and the resumes are exact."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_and_resumes_exactly(tmp_path):
    pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
    command = [
        sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--size", "tiny", "--processes", "2",
        "--batch_size", "8", "--short_steps", "2", "--long_steps", "6", "--logging_steps", "2", "--resume_steps", "2",
        "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["bf16_peak_tflops"] > 0 and result["not_run"] == []
    one, ddp, zero2 = result["rows"]
    assert (one["run"], ddp["run"], zero2["run"]) == ("1 cpu", "ddp x2", "zero2 x2")
    for row in result["rows"]:
        assert row["tokens_per_second"] > 0 and 0 < row["mfu"] < 1 and 0 <= row["data_wait_fraction"] < 1
    # set_sync_debug_mode counts CUDA's syncs only; tests/test_host_reads.py counts the CPU's reads
    assert one["host_syncs_per_step"] is None
    for row in (ddp, zero2):
        assert len(row["resumed_loss_differences"]) == 2 and max(row["resumed_loss_differences"]) <= 1e-6
        assert row["resume_exact"]
    assert "| zero2 x2 |" in done.stdout and "exact" in done.stdout
    # the tokenizer it trained for itself loads as any other
    assert (tmp_path / "work" / "tokenizer" / "tokenizer.json").is_file()
