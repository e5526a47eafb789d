"""What one training step moves between host and device, and how the ranks agree, without making the host wait:
batches copied from pinned memory, the loss parts summed on the device until a log line reads them, the host's
numbers (clock, stop flags) sent along for the step's one all-reduce, and the signal handler that asks to stop."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint before drawing its next batch and exits."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True


class LogWindow:
    """What is logged over the steps since the last log line: loss parts summed on the device (read at the log line
    only), real tokens and micro-batches counted on the host, and the time spent waiting for data."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        # loss, mlm_loss, nsp_loss summed over micro-batches
        self.losses = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.tokens = self.micro_batches = 0
        self.data_wait = 0.0
        self.start = time.perf_counter()

    def add(self, step_losses: torch.Tensor, tokens: int, micro_batches: int) -> None:
        self.losses += step_losses
        self.tokens += tokens
        self.micro_batches += micro_batches

    def flush(self, accelerator, with_nsp: bool) -> dict[str, float]:
        """The window's loss means and real tokens/s over all ranks, and this rank's data wait; then restart."""
        counts = torch.tensor([self.tokens, self.micro_batches], dtype=torch.float64, device=self.device)
        loss, mlm_loss, nsp_loss, tokens, micro_batches = accelerator.reduce(
            torch.cat([self.losses, counts]), "sum"
        ).tolist()
        seconds = max(time.perf_counter() - self.start, 1e-9)
        parts = {"loss": loss, "mlm_loss": mlm_loss, **({"nsp_loss": nsp_loss} if with_nsp else {})}
        means = {name: value / max(micro_batches, 1.0) for name, value in parts.items()}
        # this rank's time blocked on the data pipeline: above a few percent, training is starved
        record = {**means, "tokens_per_second": tokens / seconds, "data_wait_fraction": self.data_wait / seconds}
        self.reset()
        return record


def loss_parts(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """loss, mlm_loss and nsp_loss of one micro-batch, on the device."""
    nsp = out["nsp_loss"] if "nsp_loss" in out else torch.zeros_like(out["loss"])
    return torch.stack([out["loss"], out["mlm_loss"], nsp]).detach().double()


def copies_from_pinned_memory(device: torch.device) -> bool:
    # a copy to a CUDA device from pageable memory makes the host wait for it; on a CPU pinning is a copy for nothing
    return device.type == "cuda"


def queued_copy(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the device, its copy queued without making the host wait."""
    return (tensor.pin_memory() if copies_from_pinned_memory(device) else tensor).to(device, non_blocking=True)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: queued_copy(v, device) for k, v in batch.items()}


def on_device(values: list[float], device: torch.device) -> torch.Tensor:
    """Host numbers as a device tensor without waiting for the device."""
    return queued_copy(torch.tensor(values, dtype=torch.float64), device)


def summed_over_ranks(accelerator, values: list[float]) -> list[float]:
    """Host numbers summed over every rank: a collective and a read, so for log lines and checkpoints only."""
    local = torch.tensor([float(v) for v in values], dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(local, "sum").tolist()


def data_counts(accelerator, position: dict[str, Any], source_names: list[str]) -> dict[str, Any]:
    """Training documents read and real tokens per source at a stream position, by all ranks and workers together."""
    documents, *tokens = summed_over_ranks(accelerator, [position["documents_seen"], *position["source_tokens"]])
    per_source = {name: int(n) for name, n in zip(source_names, tokens, strict=True)}
    return {"documents_seen": int(documents), "tokens_per_source": per_source}


def grad_norm_record(accelerator, model, clipped_norm: torch.Tensor | None, max_grad_norm: float) -> dict[str, float]:
    """The last step's gradient norm, read at the log line (DeepSpeed's from its engine: it clips in its step)."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        norm = model.get_global_grad_norm() if max_grad_norm > 0 else None
    else:
        norm = clipped_norm
    return {} if norm is None else {"grad_norm": float(norm)}


def save_batches(batches: list[dict[str, torch.Tensor]], path: Path) -> None:
    """A step's micro-batches on disk: any of them may hold the bad example (one batch as itself, several as a list)."""
    saved = [{k: v.cpu() for k, v in batch.items()} for batch in batches]
    torch.save(saved[0] if len(saved) == 1 else saved, path)


# one step's micro-batches and their real tokens
Drawn = tuple[list[dict[str, torch.Tensor]], int]


@dataclass
class StepSignals:
    """What every rank agrees on once per step, from one all-reduce: whether any rank's loss was not finite, the
    training time (the latest clock), and whether any rank was asked to stop or ran out of data."""

    nonfinite: bool
    seconds: float
    stop_requested: bool
    out_of_data: bool
