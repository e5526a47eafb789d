"""The pretraining loop: MLM + NSP with a sparse MLM head under Accelerate, exact resume, atomic checkpoints.

`Pretrainer.run()` reads top to bottom: forward (and backward) over the micro-batches -> draw the next step's batches
-> one all-reduce (finite on every rank? the clock, stop flags) -> learning rate -> last backward -> clip -> step ->
log -> evaluate -> save -> stop?; however the run ends, it ends with a held-out evaluation, a checkpoint and the final
model. The rest lives where it belongs: the settings, their checks and the optimizer in train_config.py, what a step
moves between host and device in step_io.py, what a checkpoint records and how a run resumes in run_state.py (the
files in checkpointing.py), launch quirks in distributed.py, the learning rate over steps or a time budget in
schedule.py, the resumable per-epoch stream in the data package (data/).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, set_seed
from tqdm.auto import tqdm

from bert_recipes import checkpointing as ckpt
from bert_recipes import step_io
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig, TrainingStream, held_out_batches
from bert_recipes.distributed import (
    check_optimizer_steps,
    cores_per_process,
    discard_gradients,
    make_accelerator,
    resolve_num_workers,
)
from bert_recipes.errors import UsageError
from bert_recipes.evaluation import mlm_metrics
from bert_recipes.from_checkpoint import build_or_load_model, resolve_model_config
from bert_recipes.hub import CheckpointPusher, HubConfig, check_hub_access
from bert_recipes.metrics_log import MetricsLog
from bert_recipes.model_card import pretraining_card
from bert_recipes.modeling import ModelConfig, count_parameters
from bert_recipes.run_state import TrainerState, resume_state, resume_stream, run_layout, save_model
from bert_recipes.schedule import ramped_accumulation
from bert_recipes.step_io import Drawn, LogWindow, StepSignals, StopRequest, loss_parts, on_device, to_device
from bert_recipes.train_config import (
    TrainConfig,
    build_schedule,
    describe_run,
    prepare_model_and_optimizer,
    validate_run,
)

logger = get_logger(__name__)


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
            train.gradient_accumulation_steps, train.report_to, train.output_dir, find_unused_parameters=data.no_nsp,
            mixed_precision=train.mixed_precision, torch_compile=train.torch_compile, ddp_timeout=train.ddp_timeout,
        )  # fmt: skip
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
        self.model, self.optimizer = prepare_model_and_optimizer(acc, self.bert, train)
        self.stream = TrainingStream(
            corpus, data, self.tokenizer, train.seed, train.per_device_train_batch_size,
            max_epochs=train.num_train_epochs, rank=acc.process_index, world_size=acc.num_processes,
            num_workers=self.num_workers,
        )  # fmt: skip
        self.state = TrainerState(**run_layout(acc, self.num_workers))
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
        step_io.save_batches(batches, dump)
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
        ckpt.prepare_output_dir(acc, self.output_dir, t.overwrite_output_dir)
        acc.init_trackers("pretrain", config={k: str(v) for k, v in vars(t).items()})
        if self.resume_dir is not None:
            self._resume(self.resume_dir)
        if t.eval_steps > 0:
            self.eval_batches = held_out_batches(
                self.corpus_cfg, self.data_cfg, self.tokenizer, t.seed, t.per_device_eval_batch_size
            )
        logger.info(describe_run(t, self.data_cfg.max_seq_length, acc, count_parameters(self.bert), self.schedule))
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

    def _train_record(self, window: LogWindow, seconds: float, bar: tqdm) -> dict[str, Any]:
        acc = self.accelerator
        window_record = window.flush(acc, with_nsp=not self.data_cfg.no_nsp)
        self._count_tokens()
        record = {
            "step": self.state.step,
            "epoch": self.stream.epoch,
            **window_record,
            # what the optimizer stepped with, read back from it (under DeepSpeed, the engine's optimizer)
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "tokens_seen": self.state.tokens_seen,
            "elapsed_seconds": seconds,
            # up to the last step taken (not the batches drawn for the next)
            **step_io.data_counts(acc, self.stream_position, self.stream.source_names),
            **step_io.grad_norm_record(acc, self.model, self.grad_norm, self.train_cfg.max_grad_norm),
        }
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:,.0f}")
        return record

    def _count_tokens(self) -> None:
        """Add the real tokens all ranks processed since the last call to tokens_seen."""
        self.state.tokens_seen += int(step_io.summed_over_ranks(self.accelerator, [self.pending_tokens])[0])
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
        configs = (self.corpus_cfg, self.data_cfg, self.model_cfg, self.train_cfg)
        save_model(self.accelerator, self.model, self.tokenizer, directory, configs)

    def _resume(self, path: Path) -> None:
        acc, t = self.accelerator, self.train_cfg
        self.state, saved = resume_state(acc, path, run_layout(acc, self.num_workers), t.seed)
        self.agreed_seconds = self.state.elapsed_seconds
        self.last_saved_step = self.state.step
        resume_stream(acc, self.stream, path, saved, self.num_workers, t.num_train_epochs)
        logger.info(f"resumed from {path} at step {self.state.step}")
