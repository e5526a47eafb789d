"""metrics.jsonl: one JSON record per logging or evaluation step, written by the main process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from accelerate import Accelerator


class MetricsLog:
    """Appends records to `output_dir/metrics.jsonl` and to the Accelerate trackers.

    Resuming at step N drops the records after N: a killed run may have logged past its last checkpoint, and
    those steps are about to be trained again. `run_info` (what ran: the precision) goes into the first record.
    """

    def __init__(
        self, accelerator: Accelerator, output_dir: Path, resumed_step: int = 0, run_info: dict[str, Any] | None = None
    ):
        self.accelerator = accelerator
        self.path = Path(output_dir) / "metrics.jsonl"
        kept: list[str] = []
        if accelerator.is_main_process and self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
            kept = [line for line in kept if json.loads(line)["step"] <= resumed_step]
            self.path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        self.run_info = {} if kept else dict(run_info or {})

    def write(self, record: dict[str, Any]) -> None:
        record, self.run_info = {**record, **self.run_info}, {}
        self.accelerator.log(record, step=record["step"])
        if self.accelerator.is_main_process:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
