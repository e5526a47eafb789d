"""The pretraining loop: MLM + NSP with a sparse MLM head under Accelerate, exact resume, atomic checkpoints.

`Pretrainer.run()` reads top to bottom: forward (and backward) over the micro-batches -> draw the next step's batches
-> one all-reduce (finite on every rank? the clock, stop flags) -> learning rate -> last backward -> clip -> step ->
log -> evaluate -> save -> stop?; however the run ends, it ends with a held-out evaluation, a checkpoint and the final
model. The rest lives where it belongs: launch quirks in distributed.py, checkpoint files in
checkpointing.py, the learning rate over steps or a time budget in schedule.py, the resumable per-epoch stream in
the data package (data/).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm
from transformers import BertConfig

from bert_recipes import checkpointing as ckpt
from bert_recipes.config import save_config
from bert_recipes.corpus import CorpusConfig, check_corpus
from bert_recipes.data import (
    DataConfig,
    TrainingStream,
    held_out_batches,
    loader_workers,
    validate_data_config,
)
from bert_recipes.distributed import (
    check_optimizer_steps,
    cores_per_process,
    discard_gradients,
    fill_deepspeed_auto_values,
    launched_with_deepspeed,
    make_accelerator,
    resolve_num_workers,
)
from bert_recipes.errors import UsageError
from bert_recipes.evaluation import mlm_metrics
from bert_recipes.from_checkpoint import build_or_load_model, resolve_model_config
from bert_recipes.hub import CheckpointPusher, HubConfig, check_hub_access
from bert_recipes.metrics_log import MetricsLog
from bert_recipes.model_card import pretraining_card
from bert_recipes.modeling import ModelConfig, SparsePretrainingLoss, count_parameters
from bert_recipes.schedule import DECAY_SHAPES, SHAPES, LearningRateSchedule, ramped_accumulation

logger = get_logger(__name__)


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/pretrain", metadata={"help": "Where checkpoints and the final model go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over: delete an earlier run's checkpoints, metrics and model."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint-STEP directory to continue from exactly."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data pairing, masking and dropout."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sequences per process per micro-batch."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sequences per process per eval batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    batch_size_warmup_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Batch-size warmup: over this first fraction of the run (steps or --max_train_time, as the LR "
            "schedule), the micro-batches per step grow linearly from 1 to --gradient_accumulation_steps (0: off)."
        },
    )
    learning_rate: float = field(default=5.0e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases or LayerNorm)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1.0e-6, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": f"Decay after warmup: {', '.join(SHAPES)} (wsd: warmup, stable at the peak, decay at the end). "
            "cramming's budget triangle is linear with --warmup_ratio 0.75."
        },
    )
    wsd_decay_fraction: float = field(
        default=0.2, metadata={"help": "wsd: the last fraction of the run (steps or --max_train_time) that decays."}
    )
    wsd_decay_shape: str = field(default="1-sqrt", metadata={"help": f"wsd: {', '.join(DECAY_SHAPES)} decay."})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup steps; 0 uses warmup_ratio."})
    warmup_ratio: float = field(
        default=0.06,
        metadata={"help": "Warmup as a fraction of max_steps, or of --max_train_time when that is set (and no steps)."},
    )
    max_steps: int = field(
        default=1000,
        metadata={"help": "Optimizer steps; the LR schedule ends here or at --max_train_time, whichever comes first."},
    )
    num_train_epochs: int = field(
        default=0, metadata={"help": "Stop after this many passes (0: no limit); the LR schedule does not follow it."}
    )
    max_train_time: float = field(
        default=0.0,
        metadata={
            "help": "Training-time budget in seconds (0: no limit). The LR schedule runs over it: progress is the "
            "larger of step/max_steps and seconds/max_train_time, so the rate reaches its end with the budget."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Log loss, lr and tokens/s every N steps."})
    eval_steps: int = field(default=100, metadata={"help": "Evaluate on held-out documents every N steps (0: never)."})
    save_steps: int = field(default=500, metadata={"help": "Write checkpoint-STEP every N steps (0: only at the end)."})
    save_every_seconds: float = field(
        default=0.0, metadata={"help": "Also write a checkpoint every N seconds of training (0: never)."}
    )
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept (0: all)."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate trackers: tensorboard, wandb, none."})
    skip_nan_steps: int = field(default=0, metadata={"help": "Steps with a NaN/inf loss to skip before stopping."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "no, bf16 or fp16 (CUDA only); auto: the Accelerate config's value, else bf16 where the "
            "hardware runs it natively (recent GPUs, CPUs with AVX512-BF16 or AMX), else no."
        },
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "torch.compile the model (inductor); pays with --max_predictions_per_seq (fixed shapes)."},
    )
    dataloader_num_workers: str = field(
        default="auto",
        metadata={
            "help": "DataLoader worker processes that read and tokenize while the model steps (0: none); auto: 0 on "
            "a CPU-only machine, else up to 4 per process, one core per process left to it."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward: less memory, about a third more time."}
    )
    ddp_timeout: float = field(
        default=1800.0,
        metadata={
            "help": "Seconds a collective waits for the slowest rank before the run fails (NCCL's default is 600; "
            "an exact resume first replays the data stream up to its position, which can take longer)."
        },
    )
    dropout_seed_per_rank: bool = field(
        default=True,
        metadata={
            "help": "Seed each rank's dropout with seed + rank after the (shared) initialisation; false: every "
            "rank draws the same dropout masks, as before."
        },
    )


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    tokens_seen: int = 0
    elapsed_seconds: float = 0.0
    skipped_nan_steps: int = 0
    last_eval_step: int = -1
    # how the run was laid out, checked on resume
    world_size: int = 1
    num_workers: int = 0
    zero_stage: int = 0  # 0: not DeepSpeed
    fsdp: bool = False
    mixed_precision: str = "no"


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        # under ZeRO-3 (zero3_init_flag) a parameter holds an empty 1-d shard and its real shape is ds_shape:
        # by param.ndim every weight would lose its weight decay
        vector = len(getattr(param, "ds_shape", param.shape)) < 2
        (no_decay if vector or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel over every parameter; torch's CPU default loops over them (bert-small: 21 ms against 124)
    return torch.optim.AdamW(
        groups, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon, fused=True
    )


def build_schedule(train: TrainConfig) -> LearningRateSchedule:
    return LearningRateSchedule(
        peak=train.learning_rate, max_steps=train.max_steps, max_train_time=train.max_train_time,
        warmup_steps=train.warmup_steps, warmup_ratio=train.warmup_ratio, shape=train.lr_scheduler_type,
        decay_fraction=train.wsd_decay_fraction, decay_shape=train.wsd_decay_shape,
    )  # fmt: skip


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint before drawing its next batch and exits."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True


def validate_run(
    corpus_cfg: CorpusConfig, data_cfg: DataConfig, train: TrainConfig, bert_config: BertConfig, tokenizer
) -> Path | None:
    """Every check that can fail on user input, before any heavy work; returns the checkpoint to resume."""
    if not data_cfg.prepared_data_dir:
        check_corpus(corpus_cfg)
    validate_data_config(data_cfg, tokenizer)
    if data_cfg.max_seq_length > bert_config.max_position_embeddings:
        raise UsageError(
            f"--max_seq_length {data_cfg.max_seq_length} exceeds --max_position_embeddings "
            f"{bert_config.max_position_embeddings}: lower the first or raise the second"
        )
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(train, name) <= 0:
            raise UsageError(f"--{name} must be a positive number, got {getattr(train, name)}")
    if not 0 <= train.batch_size_warmup_ratio < 1:
        raise UsageError(f"--batch_size_warmup_ratio must be in [0, 1), got {train.batch_size_warmup_ratio}")
    if train.batch_size_warmup_ratio > 0 and launched_with_deepspeed():
        raise UsageError(
            "--batch_size_warmup_ratio changes the micro-batches per step, which DeepSpeed's engine fixes in its "
            "config: train without it under DeepSpeed, or use DDP or FSDP"
        )
    if train.overwrite_output_dir and train.resume_from_checkpoint:
        raise UsageError(
            "--overwrite_output_dir true deletes the checkpoints that --resume_from_checkpoint would continue: "
            "pass one of them"
        )
    ckpt.check_output_dir(train.output_dir, train.resume_from_checkpoint, train.overwrite_output_dir)
    resume = ckpt.resolve_resume_checkpoint(train.resume_from_checkpoint, train.output_dir)
    if resume is not None:
        ckpt.check_same_model(resume, bert_config.to_dict())
    return resume


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

    def flush(self, accelerator) -> tuple[dict[str, float], float, float]:
        """The window's loss means and real tokens/s over all ranks, and this rank's data wait; then restart."""
        counts = torch.tensor([self.tokens, self.micro_batches], dtype=torch.float64, device=self.device)
        loss, mlm_loss, nsp_loss, tokens, micro_batches = accelerator.reduce(
            torch.cat([self.losses, counts]), "sum"
        ).tolist()
        seconds = max(time.perf_counter() - self.start, 1e-9)
        means = {name: value / max(micro_batches, 1.0) for name, value in (
            ("loss", loss), ("mlm_loss", mlm_loss), ("nsp_loss", nsp_loss))}  # fmt: skip
        wait = self.data_wait / seconds
        self.reset()
        return means, tokens / seconds, wait


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


class Pretrainer:
    """One pretraining run: `run()` trains to the first stopping rule, then saves and pushes the model."""

    def __init__(
        self,
        corpus: CorpusConfig,
        data: DataConfig,
        model: ModelConfig,
        train: TrainConfig,
        hub: HubConfig | None = None,
    ):
        self.corpus_cfg, self.data_cfg, self.model_cfg, self.train_cfg = corpus, data, model, train
        self.hub_cfg = hub or HubConfig()
        self.output_dir = Path(train.output_dir)
        self.accelerator = acc = make_accelerator(
            train.gradient_accumulation_steps,
            train.report_to,
            train.output_dir,
            find_unused_parameters=data.no_nsp,
            mixed_precision=train.mixed_precision,
            torch_compile=train.torch_compile,
            ddp_timeout=train.ddp_timeout,
        )
        # the precision that runs, recorded in training_args.yaml and the model card
        train.mixed_precision = acc.mixed_precision
        self.num_workers = resolve_num_workers(train.dataloader_num_workers, acc.device, cores_per_process())
        train.dataloader_num_workers = str(self.num_workers)
        bert_config, self.tokenizer = resolve_model_config(model, data.max_seq_length)
        self.resume_dir = validate_run(corpus, data, train, bert_config, self.tokenizer)
        self.schedule = build_schedule(train)
        repo_id = check_hub_access(self.hub_cfg) if acc.is_main_process else None
        self.pusher = CheckpointPusher(self.hub_cfg, train.output_dir, repo_id=repo_id) if repo_id else None
        set_seed(train.seed)
        self.bert = build_or_load_model(model, bert_config)
        if train.dropout_seed_per_rank and acc.num_processes > 1:
            # the weights come from the shared seed; masks repeated on every rank would waste part of the batch
            set_seed(train.seed, device_specific=True)
        if train.gradient_checkpointing:
            self.bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        fill_deepspeed_auto_values(acc, train.per_device_train_batch_size, train.max_grad_norm)
        # with offload_optimizer in the DeepSpeed config, Accelerate hands DeepSpeed a DeepSpeedCPUAdam with these
        # parameter groups and hyperparameters in place of the torch AdamW (tests/test_distributed.py reads what it got)
        self.model, self.optimizer = acc.prepare(SparsePretrainingLoss(self.bert), build_optimizer(self.bert, train))
        self.stream = TrainingStream(
            corpus, data, self.tokenizer, train.seed, train.per_device_train_batch_size,
            max_epochs=train.num_train_epochs, rank=acc.process_index, world_size=acc.num_processes,
            num_workers=self.num_workers,
        )  # fmt: skip
        self.state = TrainerState(**self._layout())
        self.eval_batches: list[dict[str, torch.Tensor]] = []
        self.eval_metrics: dict[str, float] = {}
        self.pending_tokens = 0  # real tokens this rank drew since tokens_seen was last summed over ranks
        self.grad_norm: torch.Tensor | None = None
        self.stream_position = self.stream.state_dict()
        self.last_saved_step = -1
        self.time_mark = 0  # whole --save_every_seconds intervals of training time passed at the last check
        self._clock = time.perf_counter()
        self.agreed_seconds = 0.0  # the training clock of the last agreement: the latest over ranks

    # ---- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        """Train to the first stopping rule; returns the final held-out metrics (empty with --eval_steps 0).

        One step: forward (and backward) over the micro-batches but the last one's backward; draw the next step's
        batches while the device works; one all-reduce for the finite check, the clock and the stop flags (the
        step's only wait on the device); then the last backward, clip and optimizer step. Under DeepSpeed that
        last backward also steps the optimizer, which is why the check comes before it. Stopping rules take effect
        between steps; checkpoints record the stream position before the next step's batches were drawn.
        """
        t, acc = self.train_cfg, self.accelerator
        metrics_log = self._start()
        stop, window = StopRequest(), LogWindow(acc.device)
        bar = tqdm(total=t.max_steps, initial=self.state.step, disable=not acc.is_local_main_process, unit="step")
        self._clock = time.perf_counter()
        self.model.train()
        drawn = self._first_batches(stop, window)
        while drawn is not None:
            batches, tokens = drawn
            step_losses, last_loss = self._forward_backward(batches)
            next_drawn = self._draw_batches(window, completed_steps=self.state.step + 1)
            signals = self._agree(step_losses[0], stop, next_drawn is None)
            if signals.nonfinite:
                self._skip_step(batches, last_loss)
            else:
                self._set_learning_rate(signals.seconds)
                self._last_backward_and_step(last_loss)
                self.state.step += 1
                window.add(step_losses, tokens, len(batches))
                self.pending_tokens += tokens
                bar.update(1)
                self._log_evaluate_save(metrics_log, window, signals.seconds, bar)
            drawn = None if self._stops(signals) else next_drawn
        bar.close()
        self._finish(metrics_log)
        return self.eval_metrics

    def _first_batches(self, stop: StopRequest, window: LogWindow) -> Drawn | None:
        """The first step's batches, or None when a stopping rule holds before any step (checked on every rank)."""
        if self.state.step >= self.train_cfg.max_steps:
            return None
        drawn = self._draw_batches(window, completed_steps=self.state.step)
        no_loss = torch.zeros((), dtype=torch.float64, device=self.accelerator.device)
        signals = self._agree(no_loss, stop, drawn is None)
        if self.train_cfg.save_every_seconds > 0:
            # from the agreed clock, as every later mark: a rank's own clock could put it on another mark
            self.time_mark = int(signals.seconds // self.train_cfg.save_every_seconds)
        return None if self._stops(signals) else drawn

    def _draw_batches(self, window: LogWindow, completed_steps: int) -> Drawn | None:
        """The micro-batches and their real tokens of the step that starts after `completed_steps` (None at the end
        of the data); the stream position before them is kept for the next checkpoint."""
        self.stream_position = self.stream.state_dict()
        asked = time.perf_counter()
        batches, tokens = [], 0
        for _ in range(self._micro_batches(completed_steps)):
            batch = self.stream.next_batch()
            if batch is None:
                return None
            batches.append(batch)
            tokens += self.stream.last_batch_tokens
        window.data_wait += time.perf_counter() - asked
        return batches, tokens

    def _micro_batches(self, completed_steps: int) -> int:
        """Micro-batches of a step: --gradient_accumulation_steps, or fewer during batch-size warmup, from the
        completed steps and the clock every rank agreed on last (the same count on every rank)."""
        t = self.train_cfg
        progress = self.schedule.progress(completed_steps, self.agreed_seconds)
        return ramped_accumulation(progress, t.gradient_accumulation_steps, t.batch_size_warmup_ratio)

    def _forward_backward(self, batches: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward over every micro-batch and backward over all but the last; the step's summed loss parts and the
        last micro-batch's loss, both still on the device."""
        acc = self.accelerator
        if self.train_cfg.batch_size_warmup_ratio > 0:
            # this step's accumulation: backward divides each loss by it, and the last micro-batch is the sync point
            acc.gradient_accumulation_steps, acc.step = len(batches), 0
        step_losses = torch.zeros(3, dtype=torch.float64, device=acc.device)
        for index, batch in enumerate(batches):
            batch = to_device(batch, acc.device)
            with acc.accumulate(self.model):
                out = self.model(**batch)
                step_losses += loss_parts(out)
                if index < len(batches) - 1:
                    acc.backward(out["loss"])
        return step_losses, out["loss"]

    def _agree(self, step_loss: torch.Tensor, stop: StopRequest, out_of_data: bool) -> StepSignals:
        """The step's one read of the device: a max-reduce of [loss not finite, clock, stop asked, out of data]."""
        acc = self.accelerator
        host = on_device([self._elapsed(), float(stop.requested), float(out_of_data)], acc.device)
        flags = torch.cat([(~torch.isfinite(step_loss)).double().view(1), host])
        nonfinite, seconds, requested, no_data = acc.reduce(flags, "max").tolist()
        self.agreed_seconds = seconds
        return StepSignals(nonfinite > 0, seconds, requested > 0, no_data > 0)

    def _stops(self, signals: StepSignals) -> bool:
        budget = self.train_cfg.max_train_time
        out_of_time = budget > 0 and signals.seconds >= budget
        done = self.state.step >= self.train_cfg.max_steps
        return done or out_of_time or signals.stop_requested or signals.out_of_data

    def _set_learning_rate(self, seconds: float) -> None:
        # the clock every rank agreed on: the same rate everywhere
        learning_rate = self.schedule.learning_rate(self.state.step, seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate

    def _last_backward_and_step(self, loss: torch.Tensor) -> None:
        acc, t = self.accelerator, self.train_cfg
        check_optimizer_steps(acc, self.state.step + 1, acc.gradient_accumulation_steps)
        acc.backward(loss)
        # DeepSpeed clips inside its own step (gradient_clipping); elsewhere the norm stays on the device until logged
        if t.max_grad_norm > 0 and acc.distributed_type != DistributedType.DEEPSPEED:
            self.grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _log_evaluate_save(self, metrics_log: MetricsLog, window: LogWindow, seconds: float, bar: tqdm) -> None:
        t = self.train_cfg
        record: dict[str, Any] = {}
        if self._due(t.logging_steps):
            record = self._train_record(window, seconds, bar)
        if self._due(t.eval_steps):
            record = {"step": self.state.step, **record, **self._evaluate()}
        if record:
            metrics_log.write(record)
        if self._save_due(seconds):
            self._save_checkpoint()

    def _evaluate(self) -> dict[str, float]:
        acc = self.accelerator
        self.eval_metrics = mlm_metrics(self.model, self.eval_batches, acc.device, accelerator=acc)
        self.state.last_eval_step = self.state.step
        return self.eval_metrics

    def _skip_step(self, batches: list[dict[str, torch.Tensor]], last_loss: torch.Tensor) -> None:
        """Skip a step with a non-finite loss while --skip_nan_steps lasts; otherwise save its batches and stop."""
        discard_gradients(self.accelerator, self.model, self.optimizer, last_loss)
        self.state.skipped_nan_steps += 1
        if self.state.skipped_nan_steps <= self.train_cfg.skip_nan_steps:
            logger.warning(f"non-finite loss at step {self.state.step + 1}: step skipped")
            return
        dump = self.output_dir / f"nonfinite-step-{self.state.step + 1}-rank{self.accelerator.process_index}.pt"
        # any micro-batch may be the one: all of them (one batch as itself, several as a list)
        saved = [{k: v.cpu() for k, v in batch.items()} for batch in batches]
        torch.save(saved[0] if len(saved) == 1 else saved, dump)
        raise UsageError(
            f"loss became NaN/inf at step {self.state.step + 1}; the batch is saved in '{dump}' and the last "
            "checkpoint is intact: lower --learning_rate, or pass --skip_nan_steps N to skip such steps"
        )

    def _due(self, every: int) -> bool:
        return every > 0 and (self.state.step % every == 0 or self.state.step == self.train_cfg.max_steps)

    def _save_due(self, seconds: float) -> bool:
        t = self.train_cfg
        if t.save_steps > 0 and self.state.step % t.save_steps == 0:
            return True
        if t.save_every_seconds <= 0:
            return False
        # the step's agreed clock: every rank sees the same mark
        mark = int(seconds // t.save_every_seconds)
        due, self.time_mark = mark > self.time_mark, max(self.time_mark, mark)
        return due

    def _elapsed(self) -> float:
        return self.state.elapsed_seconds + time.perf_counter() - self._clock

    # ---- before and after the loop ----------------------------------------------------------------------------
    def _start(self) -> MetricsLog:
        """Clear or resume the output_dir, load the held-out batches, print the banner."""
        acc, t = self.accelerator, self.train_cfg
        if acc.is_main_process:
            if t.overwrite_output_dir:
                ckpt.clear_previous_run(self.output_dir)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temp_dirs(self.output_dir)
        acc.wait_for_everyone()
        acc.init_trackers("pretrain", config={k: str(v) for k, v in vars(t).items()})
        if self.resume_dir is not None:
            self._resume(self.resume_dir)
        if t.eval_steps > 0:
            self.eval_batches = held_out_batches(
                self.corpus_cfg, self.data_cfg, self.tokenizer, t.seed, t.per_device_eval_batch_size
            )
        self._banner()
        return MetricsLog(acc, self.output_dir, self.state.step, run_info={"mixed_precision": acc.mixed_precision})

    def _finish(self, metrics_log: MetricsLog) -> None:
        """However the loop ended (steps, time budget, epochs, a signal): held-out score, checkpoint, final model."""
        # the checkpoint records the evaluation, so that resuming a finished run does not score it twice
        if self.train_cfg.eval_steps > 0 and self.state.last_eval_step != self.state.step:
            metrics_log.write({"step": self.state.step, **self._evaluate()})
        self._save_checkpoint()
        self.save_model(self.output_dir)
        if self.pusher and self.accelerator.is_main_process:
            card = pretraining_card(self.output_dir, self.pusher.repo_id)
            self.pusher.push_final(self.output_dir, card, self.state.step)
        self.accelerator.end_training()

    def _banner(self) -> None:
        t, d, acc = self.train_cfg, self.data_cfg, self.accelerator
        global_batch = t.per_device_train_batch_size * acc.num_processes * t.gradient_accumulation_steps
        ramp = (
            f" (from {t.per_device_train_batch_size * acc.num_processes} over the first {t.batch_size_warmup_ratio:g})"
            if t.batch_size_warmup_ratio > 0
            else ""
        )
        budget = f" or {t.max_train_time:g} s" if t.max_train_time > 0 else ""
        steps = self.schedule.warmup_in_steps
        warmup = (
            f"warmup {steps} steps" if steps or not t.max_train_time else f"warmup {t.warmup_ratio:g} of the budget"
        )
        decay = (
            f" ({t.wsd_decay_shape} decay over the last {t.wsd_decay_fraction:g})"
            if t.lr_scheduler_type == "wsd"
            else ""
        )
        logger.info(
            f"{count_parameters(self.bert) / 1e6:.1f}M params | {acc.num_processes} process(es), "
            f"{acc.distributed_type} | global batch {global_batch} seqs{ramp} = "
            f"{global_batch * d.max_seq_length:,} tokens/step at length {d.max_seq_length} | "
            f"{t.max_steps} steps{budget}, {warmup}, peak lr {t.learning_rate:g} {t.lr_scheduler_type}{decay} | "
            f"mixed precision {acc.mixed_precision}"
        )

    def _train_record(self, window: LogWindow, seconds: float, bar: tqdm) -> dict[str, Any]:
        means, tokens_per_second, data_wait = window.flush(self.accelerator)
        self._count_tokens()
        record = {
            "step": self.state.step,
            "epoch": self.stream.epoch,
            "loss": means["loss"],
            "mlm_loss": means["mlm_loss"],
            **({} if self.data_cfg.no_nsp else {"nsp_loss": means["nsp_loss"]}),
            # what the optimizer stepped with, read back from it (under DeepSpeed, the engine's optimizer)
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "tokens_per_second": tokens_per_second,
            "tokens_seen": self.state.tokens_seen,
            "elapsed_seconds": seconds,
            # this rank's time blocked on the data pipeline: above a few percent, training is starved
            "data_wait_fraction": data_wait,
            **self._data_counts(),
            **self._grad_norm(),
        }
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tokens_per_second:,.0f}")
        return record

    def _grad_norm(self) -> dict[str, float]:
        """The last step's gradient norm, read at the log line (DeepSpeed's from its engine)."""
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            norm = self.model.get_global_grad_norm() if self.train_cfg.max_grad_norm > 0 else None
        else:
            norm = self.grad_norm
        return {} if norm is None else {"grad_norm": float(norm)}

    def _data_counts(self) -> dict[str, Any]:
        """Training documents read and real tokens per source, by all ranks and workers together, up to the last
        step taken (not the batches drawn for the next)."""
        position = self.stream_position
        local = torch.tensor([position["documents_seen"], *position["source_tokens"]], dtype=torch.float64)
        documents, *tokens = self.accelerator.reduce(local.to(self.accelerator.device), "sum").tolist()
        per_source = {name: int(n) for name, n in zip(self.stream.source_names, tokens, strict=True)}
        return {"documents_seen": int(documents), "tokens_per_source": per_source}

    def _count_tokens(self) -> None:
        """Add the real tokens all ranks processed since the last call to tokens_seen."""
        local = torch.tensor(float(self.pending_tokens), dtype=torch.float64, device=self.accelerator.device)
        self.state.tokens_seen += int(self.accelerator.reduce(local, "sum").item())
        self.pending_tokens = 0

    # ---- checkpoints ------------------------------------------------------------------------------------------
    def _save_checkpoint(self) -> None:
        # decided from the step, the same on every rank: a look at the disk could differ between nodes and hang
        if self.state.step == self.last_saved_step:
            return
        acc = self.accelerator
        self._count_tokens()
        now = time.perf_counter()
        self.state.elapsed_seconds += now - self._clock
        self._clock = now
        # the position before the batches drawn for a step not taken yet
        self.state.epoch = self.stream_position["epoch"]
        states = {ckpt.data_state_file(acc.process_index): self.stream_position}
        final = ckpt.save_checkpoint(acc, self.output_dir, self.state.step, vars(self.state), states, self.save_model)
        self.last_saved_step = self.state.step
        if acc.is_main_process:
            ckpt.rotate_checkpoints(self.output_dir, self.train_cfg.save_total_limit)
            if self.pusher:
                self.pusher.push_checkpoint(final, self.state.step)
        logger.info(f"saved {final}")

    def save_model(self, directory: Path) -> None:
        """save_pretrained form: config, safetensors weights (gathered under ZeRO-3/FSDP), tokenizer, run config."""
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            weights = {k.removeprefix("model."): v for k, v in state_dict.items()}
            acc.unwrap_model(self.model).model.save_pretrained(directory, state_dict=weights, safe_serialization=True)
            self.tokenizer.save_pretrained(directory)
            configs = (self.corpus_cfg, self.data_cfg, self.model_cfg, self.train_cfg)
            save_config(directory / "training_args.yaml", *configs)

    def _layout(self) -> dict[str, Any]:
        """How this run is laid out: what a checkpoint records and a resume compares."""
        acc = self.accelerator
        plugin = acc.state.deepspeed_plugin
        return {
            "world_size": acc.num_processes,
            "num_workers": self.num_workers,
            "zero_stage": plugin.zero_stage if plugin is not None else 0,
            "fsdp": acc.distributed_type == DistributedType.FSDP,
            "mixed_precision": acc.mixed_precision,
        }

    def _resume(self, path: Path) -> None:
        acc, layout = self.accelerator, self._layout()
        saved = ckpt.read_trainer_state(path)
        ckpt.check_resumable_layout(path, saved, layout)
        saved_ranks = saved.get("world_size", 1)
        ckpt.load_accelerate_state(acc, path, with_random_state=acc.process_index < saved_ranks)
        if acc.process_index >= saved_ranks:
            # a rank the saved run did not have: no random state to restore, so one of its own
            set_seed(self.train_cfg.seed, device_specific=True)
        # Accelerate restores the saved run's micro-batch count; a checkpoint is always taken at an optimizer-step
        # boundary, and with another --gradient_accumulation_steps the restored count would put every sync point
        # off the step, so that the optimizer never updated the weights again
        acc.step = 0
        self.state = TrainerState(**{**saved, **layout})
        self.agreed_seconds = self.state.elapsed_seconds
        self.last_saved_step = self.state.step
        self._resume_stream(path / ckpt.STATE_DIR, saved)
        logger.info(f"resumed from {path} at step {self.state.step}")

    def _resume_stream(self, state_dir: Path, saved: dict[str, Any]) -> None:
        """Each rank's stream continues where it stopped. With another number of data slots (processes x
        workers) the saved positions do not map onto the new slots: the stream restarts with the next epoch, and the
        documents and tokens read so far carry over."""
        acc, workers = self.accelerator, self.num_workers
        positions = [ckpt.read_json(state_dir / ckpt.data_state_file(r)) for r in range(saved.get("world_size", 1))]
        was = (len(positions), saved.get("num_workers", loader_workers(positions[0]["loader"])))
        if was == (acc.num_processes, workers):
            self.stream.load_state_dict(positions[acc.process_index])
            return
        epoch = max(p["epoch"] for p in positions) + 1
        limit = self.train_cfg.num_train_epochs
        ends = (
            f" (epoch {epoch} reaches --num_train_epochs {limit}: nothing is left to train)"
            if 0 < limit <= epoch
            else ""
        )
        logger.warning(
            f"checkpoint was written by {was[0]} process(es) with {was[1]} DataLoader worker(s) each, resuming with "
            f"{acc.num_processes} and {workers}: the data stream restarts with the next epoch's order{ends}"
        )
        # the counts of every saved rank go to rank 0, so that their sums over ranks carry on
        self.stream.restart_at(epoch, positions if acc.is_main_process else [])
