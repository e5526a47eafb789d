"""The pretraining loop: Accelerate, MLM + NSP with a sparse MLM head, exact resume, atomic checkpoints."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, InitProcessGroupKwargs, set_seed
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from bert_recipes import checkpointing as ckpt
from bert_recipes.config import save_config
from bert_recipes.corpus import CorpusConfig, check_corpus_given
from bert_recipes.errors import UsageError
from bert_recipes.hub import CheckpointPusher, HubConfig, check_hub_access
from bert_recipes.masking import PretrainingCollator
from bert_recipes.model_card import pretraining_card
from bert_recipes.modeling import (
    ModelConfig,
    SparsePretrainingLoss,
    build_bert_config,
    build_model,
    count_parameters,
)
from bert_recipes.pretraining_data import DataConfig, build_pretraining_datasets, validate_data_config
from bert_recipes.tokenization import load_tokenizer

logger = get_logger(__name__)


@dataclass
class TrainConfig:
    output_dir: str = field(default="runs/pretrain", metadata={"help": "Where checkpoints and the final model go."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in an output_dir with checkpoints."}
    )
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint-STEP directory to continue from exactly."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data pairing, masking and dropout."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sequences per process per micro-batch."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Sequences per process per eval batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=5.0e-4, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases or LayerNorm)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.98, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1.0e-6, metadata={"help": "AdamW epsilon."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Decay after warmup: linear or cosine."})
    warmup_steps: int = field(default=0, metadata={"help": "Warmup steps; 0 uses warmup_ratio."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Warmup as a fraction of max_steps."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps; also the length of the LR schedule."})
    num_train_epochs: int = field(default=0, metadata={"help": "Stop after this many passes (0: no limit)."})
    max_train_time: float = field(default=0.0, metadata={"help": "Wall-clock budget in seconds (0: no limit)."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss, lr and tokens/s every N steps."})
    eval_steps: int = field(default=100, metadata={"help": "Evaluate on held-out documents every N steps (0: never)."})
    save_steps: int = field(default=500, metadata={"help": "Write checkpoint-STEP every N steps (0: only at the end)."})
    save_total_limit: int = field(default=3, metadata={"help": "Checkpoints kept (0: all)."})
    report_to: str = field(default="tensorboard", metadata={"help": "Accelerate trackers: tensorboard, wandb, none."})
    skip_nan_steps: int = field(default=0, metadata={"help": "Steps with a NaN/inf loss to skip before stopping."})


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    tokens_seen: int = 0
    elapsed_seconds: float = 0.0
    skipped_nan_steps: int = 0
    world_size: int = 1


def launched_with_deepspeed() -> bool:
    """`accelerate launch` tells its workers about DeepSpeed through this variable."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(train: TrainConfig, no_nsp: bool) -> Accelerator:
    handlers: list[Any] = []
    on_cpu = not torch.cuda.is_available()
    if on_cpu and launched_with_deepspeed():
        # without CUDA accelerate picks no backend for DeepSpeed and miscounts processes; gloo works on CPU
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    if no_nsp:
        # the pooler and NSP head get no gradient without NSP; DDP must be told
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    return Accelerator(
        # a multi-GPU launch on a CPU-only machine becomes MULTI_CPU (gloo) only with cpu=True; DeepSpeed
        # brings its own CPU accelerator and is turned off by that flag
        cpu=on_cpu and not launched_with_deepspeed(),
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        log_with=None if train.report_to == "none" else train.report_to,
        project_dir=train.output_dir,
        kwargs_handlers=handlers,
    )


def check_sharding_applied(accelerator: Accelerator) -> None:
    """Accelerate silently trains plain DDP when FSDP is asked for on CPUs; say so instead of pretending."""
    fsdp_requested = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_requested and accelerator.distributed_type != DistributedType.FSDP:
        raise UsageError(
            f"FSDP was requested but Accelerate runs {accelerator.distributed_type} here: it applies FSDP on GPUs "
            "only; on CPUs use accelerate_configs/multi_cpu.yaml or a DeepSpeed config"
        )


def fill_deepspeed_auto_values(accelerator: Accelerator, train: TrainConfig) -> None:
    """Accelerate fills DeepSpeed's "auto" batch size from a prepared dataloader; ours is not prepared."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = train.per_device_train_batch_size
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = train.max_grad_norm


def build_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=train.learning_rate, betas=(train.adam_beta1, train.adam_beta2), eps=train.adam_epsilon
    )


def warmup_steps(train: TrainConfig) -> int:
    return train.warmup_steps or math.ceil(train.warmup_ratio * train.max_steps)


def batches_of(stream, batch_size: int, collator: PretrainingCollator) -> DataLoader:
    # its own generator: a DataLoader iterator otherwise draws a seed from the global RNG, so a resumed run
    # (which opens its loaders after restoring that RNG) would get different dropout masks
    return DataLoader(stream, batch_size=batch_size, collate_fn=collator, generator=torch.Generator())


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True


def validate_run(
    corpus_cfg: CorpusConfig, model_cfg: ModelConfig, data_cfg: DataConfig, train: TrainConfig, tokenizer
) -> Path | None:
    """Every check that can fail on user input, before any heavy work; returns the checkpoint to resume."""
    if not data_cfg.prepared_data_dir:
        check_corpus_given(corpus_cfg)
    validate_data_config(data_cfg, tokenizer)
    if data_cfg.max_seq_length > model_cfg.max_position_embeddings:
        raise UsageError(
            f"--max_seq_length {data_cfg.max_seq_length} exceeds --max_position_embeddings "
            f"{model_cfg.max_position_embeddings}: lower the first or raise the second"
        )
    for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(train, name) <= 0:
            raise UsageError(f"--{name} must be a positive number, got {getattr(train, name)}")
    ckpt.check_output_dir(train.output_dir, train.resume_from_checkpoint, train.overwrite_output_dir)
    resume = ckpt.resolve_resume_checkpoint(train.resume_from_checkpoint, train.output_dir)
    if resume is not None:
        saved_vocab = ckpt.read_json(resume / "config.json").get("vocab_size")
        if saved_vocab != max(len(tokenizer), model_cfg.vocab_size):
            raise UsageError(
                f"checkpoint '{resume}' has vocab_size {saved_vocab} but tokenizer "
                f"'{model_cfg.tokenizer_name_or_path}' has {len(tokenizer)} tokens: resume with the tokenizer it used"
            )
    return resume


class Pretrainer:
    """Holds what one pretraining run needs; `run()` trains to the first stopping rule and saves the model."""

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
        self.accelerator = make_accelerator(train, data.no_nsp)
        check_sharding_applied(self.accelerator)
        self.tokenizer = load_tokenizer(model.tokenizer_name_or_path)
        self.resume_dir = validate_run(corpus, model, data, train, self.tokenizer)
        repo_id = check_hub_access(self.hub_cfg) if self.accelerator.is_main_process else None
        self.pusher = CheckpointPusher(self.hub_cfg, train.output_dir, repo_id=repo_id) if repo_id else None
        self.output_dir = Path(train.output_dir)
        self.state = TrainerState(world_size=self.accelerator.num_processes)
        set_seed(train.seed)
        bert_config = build_bert_config(model, len(self.tokenizer), self.tokenizer.pad_token_id)
        self.bert = build_model(bert_config, model.attn_implementation)
        optimizer = build_optimizer(self.bert, train)
        fill_deepspeed_auto_values(self.accelerator, train)
        self.model, self.optimizer = self.accelerator.prepare(SparsePretrainingLoss(self.bert), optimizer)
        self.scheduler = get_scheduler(
            train.lr_scheduler_type, self.optimizer, warmup_steps(train), num_training_steps=train.max_steps
        )
        # the schedule counts global optimizer steps, so it is stepped by hand rather than prepared
        self.accelerator.register_for_checkpointing(self.scheduler)
        self.collator = PretrainingCollator(
            self.tokenizer,
            data.mlm_probability,
            data.whole_word_mask,
            pad_to_multiple_of=8,
            seed=self._rank_seed(),
        )
        self.data_state: dict[str, Any] | None = None
        self.train_stream = None
        self.eval_batches: list[dict[str, torch.Tensor]] = []
        self.pending_tokens = torch.zeros((), dtype=torch.float64)
        self._clock = time.perf_counter()

    def _rank_seed(self) -> int:
        return self.train_cfg.seed * 1000 + self.accelerator.process_index

    # ---- data -------------------------------------------------------------------------------------
    def _open_epoch(self, epoch: int):
        train, _ = build_pretraining_datasets(
            self.corpus_cfg, self.data_cfg, self.tokenizer, seed=self.train_cfg.seed, epoch=epoch
        )
        return split_dataset_by_node(train, self.accelerator.process_index, self.accelerator.num_processes)

    def _micro_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches epoch after epoch (each with new pairings) until num_train_epochs; resumes mid-epoch."""
        limit = self.train_cfg.num_train_epochs
        while limit <= 0 or self.state.epoch < limit:
            self.train_stream = self._open_epoch(self.state.epoch)
            if self.data_state is not None:
                self.train_stream.load_state_dict(self.data_state)
                self.data_state = None
            produced = 0
            for batch in batches_of(self.train_stream, self.train_cfg.per_device_train_batch_size, self.collator):
                produced += 1
                yield batch
            if produced == 0 and self.state.step == 0:
                raise UsageError("the corpus produced no training examples: give it more text or a lower batch size")
            self.state.epoch += 1

    def _load_eval_batches(self) -> list[dict[str, torch.Tensor]]:
        _, eval_stream = build_pretraining_datasets(
            self.corpus_cfg, self.data_cfg, self.tokenizer, seed=self.train_cfg.seed, epoch=0
        )
        # a fixed masking seed makes every evaluation score the same masked positions
        collator = PretrainingCollator(
            self.tokenizer,
            self.data_cfg.mlm_probability,
            self.data_cfg.whole_word_mask,
            8,
            seed=self.train_cfg.seed,
        )
        return list(batches_of(eval_stream, self.train_cfg.per_device_eval_batch_size, collator))

    # ---- checkpoints ------------------------------------------------------------------------------
    def _data_state_path(self, root: Path) -> Path:
        return root / ckpt.STATE_DIR / f"data_state_rank{self.accelerator.process_index}.json"

    def save_checkpoint(self) -> Path:
        """Write checkpoint-STEP atomically; a failed write (disk full) removes the partial one and stops."""
        acc, step = self.accelerator, self.state.step
        temp, final = ckpt.temp_checkpoint_dir(self.output_dir, step), ckpt.final_checkpoint_dir(self.output_dir, step)
        try:
            self._write_checkpoint(temp)
            if acc.is_main_process:
                ckpt.commit_checkpoint(temp, final, vars(self.state))
        # torch.save reports a full disk as RuntimeError ("iostream error"), the rest of the stack as OSError
        except (OSError, RuntimeError) as err:
            shutil.rmtree(temp, ignore_errors=True)
            free_mb = shutil.disk_usage(self.output_dir).free / 1e6
            raise UsageError(
                f"writing checkpoint-{step} in '{self.output_dir}' failed ({err}; {free_mb:.1f} MB free): the partial "
                "checkpoint was removed and earlier ones are intact; free disk space, then resume with "
                "--resume_from_checkpoint latest"
            ) from None
        if acc.is_main_process:
            ckpt.rotate_checkpoints(self.output_dir, self.train_cfg.save_total_limit)
            if self.pusher:
                self.pusher.push_checkpoint(final, step)
        acc.wait_for_everyone()
        logger.info(f"saved {final}")
        return final

    def _write_checkpoint(self, temp: Path) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            (temp / ckpt.STATE_DIR).mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(temp / ckpt.STATE_DIR))
        data_state = {
            "stream": self.train_stream.state_dict() if self.train_stream is not None else None,
            "collator_generator": self.collator.generator.get_state().tolist(),
        }
        ckpt.write_json(self._data_state_path(temp), data_state)
        self.save_model(temp)
        acc.wait_for_everyone()

    def save_model(self, directory: Path) -> None:
        """save_pretrained form: config, safetensors weights (gathered under ZeRO-3/FSDP), tokenizer, config."""
        acc = self.accelerator
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            weights = {k.removeprefix("model."): v for k, v in state_dict.items()}
            acc.unwrap_model(self.model).model.save_pretrained(directory, state_dict=weights, safe_serialization=True)
            self.tokenizer.save_pretrained(directory)
            save_config(
                directory / "training_args.yaml",
                self.corpus_cfg,
                self.data_cfg,
                self.model_cfg,
                self.train_cfg,
            )

    def load_checkpoint(self, path: Path) -> None:
        acc = self.accelerator
        try:
            acc.load_state(str(path / ckpt.STATE_DIR))
        except Exception as err:  # truncated or foreign files fail deep inside torch/safetensors
            raise UsageError(
                f"checkpoint '{path}' cannot be loaded ({type(err).__name__}: {str(err)[:160]}): it is corrupt, "
                "resume from an earlier checkpoint-STEP"
            ) from None
        saved = ckpt.read_json(path / ckpt.STATE_DIR / ckpt.TRAINER_STATE)
        self.state = TrainerState(**{**saved, "world_size": acc.num_processes})
        if saved.get("world_size", 1) != acc.num_processes:
            # stream positions are per rank; with another rank count the shards differ, so start a fresh epoch
            logger.warning(
                f"checkpoint was written by {saved.get('world_size')} processes, resuming with {acc.num_processes}: "
                "the data stream restarts with the next epoch's pairings"
            )
            self.state.epoch += 1
            return
        data_state = ckpt.read_json(self._data_state_path(path))
        self.data_state = data_state["stream"]
        self.collator.generator.set_state(torch.tensor(data_state["collator_generator"], dtype=torch.uint8))
        logger.info(f"resumed from {path} at step {self.state.step}")

    # ---- evaluation and logging -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        totals = torch.zeros(5, dtype=torch.float64)
        for batch in self.eval_batches:
            out = self.model(**{k: v.to(self.accelerator.device) for k, v in batch.items()})
            count = out["mlm_count"].double().cpu()
            nsp = batch.get("next_sentence_label")
            totals += torch.tensor(
                [
                    out["mlm_loss"].double().cpu() * count,
                    out["mlm_correct"].double().cpu(),
                    count,
                    out["nsp_correct"].double().cpu() if nsp is not None else 0.0,
                    float(nsp.numel()) if nsp is not None else 0.0,
                ],
                dtype=torch.float64,
            )
        self.model.train()
        loss_sum, correct, count, nsp_correct, nsp_count = totals.tolist()
        mlm_loss = loss_sum / max(count, 1.0)
        metrics = {
            "eval_mlm_loss": mlm_loss,
            "eval_mlm_accuracy": correct / max(count, 1.0),
            "eval_perplexity": math.exp(min(mlm_loss, 50.0)),
        }
        if nsp_count:
            metrics["eval_nsp_accuracy"] = nsp_correct / nsp_count
        return metrics

    def _write_metrics(self, record: dict[str, Any]) -> None:
        self.accelerator.log(record, step=record["step"])
        if self.accelerator.is_main_process:
            with (self.output_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def _banner(self) -> None:
        t, d = self.train_cfg, self.data_cfg
        global_batch = t.per_device_train_batch_size * self.accelerator.num_processes * t.gradient_accumulation_steps
        logger.info(
            f"{count_parameters(self.bert) / 1e6:.1f}M params | {self.accelerator.num_processes} process(es), "
            f"{self.accelerator.distributed_type} | global batch {global_batch} seqs = "
            f"{global_batch * d.max_seq_length:,} tokens/step at length {d.max_seq_length} | "
            f"{t.max_steps} steps, warmup {warmup_steps(t)}, peak lr {t.learning_rate:g}"
        )

    # ---- the loop ---------------------------------------------------------------------------------
    def _nonfinite(self, batch: dict[str, torch.Tensor]) -> None:
        """Skip the step while the budget lasts; otherwise save the batch and stop before training on garbage."""
        self.optimizer.zero_grad(set_to_none=True)
        self.state.skipped_nan_steps += 1
        if self.state.skipped_nan_steps <= self.train_cfg.skip_nan_steps:
            logger.warning(f"non-finite loss at step {self.state.step + 1}: step skipped")
            return
        dump = self.output_dir / f"nonfinite-step-{self.state.step + 1}-rank{self.accelerator.process_index}.pt"
        torch.save({k: v.cpu() for k, v in batch.items()}, dump)
        raise UsageError(
            f"loss became NaN/inf at step {self.state.step + 1}; the batch is saved in '{dump}' and the last "
            "checkpoint is intact: lower --learning_rate, or pass --skip_nan_steps N to skip such steps"
        )

    def _train_step(self, micro_batches: list[dict[str, torch.Tensor]], sums: torch.Tensor) -> tuple[bool, Any]:
        """One optimizer step over the micro-batches; adds loss parts and real tokens to `sums`.

        Returns whether the step was taken (False: skipped for a non-finite loss) and the gradient norm.
        """
        acc, device = self.accelerator, self.accelerator.device
        finite = True
        for batch in micro_batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with acc.accumulate(self.model):
                out = self.model(**batch)
                acc.backward(out["loss"])
            loss = out["loss"].detach().double().cpu()
            # on CPU this sync is free; on GPU one per step is small next to a BERT step
            finite = finite and bool(torch.isfinite(loss))
            nsp = out["nsp_loss"].detach().double().cpu() if "nsp_loss" in out else torch.zeros((), dtype=torch.float64)
            tokens = batch["attention_mask"].sum().double().cpu()
            sums += torch.stack([loss, out["mlm_loss"].detach().double().cpu(), nsp, tokens, torch.ones_like(loss)])
            self.pending_tokens += tokens
        if not self._all_ranks_agree(finite):
            self._nonfinite(micro_batches[-1])
            return False, None
        grad_norm = None
        if self.train_cfg.max_grad_norm > 0:
            grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.train_cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True, grad_norm

    def _all_ranks_agree(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor(float(flag), device=self.accelerator.device), "min") > 0)

    def _any_rank(self, flag: bool) -> bool:
        return not self._all_ranks_agree(not flag)

    def _count_tokens(self) -> None:
        """Add the real tokens all ranks processed since the last call to tokens_seen."""
        self.state.tokens_seen += int(self.accelerator.reduce(self.pending_tokens.to(self.accelerator.device)).item())
        self.pending_tokens.zero_()

    def _elapsed(self) -> float:
        return self.state.elapsed_seconds + time.perf_counter() - self._clock

    def _log_step(
        self, sums: torch.Tensor, grad_norm: Any, seconds: float, data_wait: float, bar: tqdm
    ) -> dict[str, Any]:
        totals = self.accelerator.reduce(sums.to(self.accelerator.device), "sum").cpu()
        loss, mlm, nsp, tokens, micro = totals.tolist()
        self._count_tokens()
        record = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "loss": loss / micro,
            "mlm_loss": mlm / micro,
            "learning_rate": self.scheduler.get_last_lr()[0],
            "tokens_per_second": tokens / max(seconds, 1e-9),
            "tokens_seen": self.state.tokens_seen,
            # this rank's time blocked on the data pipeline: above a few percent, training is starved
            "data_wait_fraction": data_wait / max(seconds, 1e-9),
        }
        if not self.data_cfg.no_nsp:
            record["nsp_loss"] = nsp / micro
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_second']:,.0f}")
        return record

    def _should_stop(self, exhausted: bool, stop: StopRequest) -> bool:
        budget = self.train_cfg.max_train_time
        out_of_time = budget > 0 and self._elapsed() >= budget
        return self._any_rank(exhausted or out_of_time or stop.requested)

    def _next_micro_batches(self, batches: Iterator) -> list[dict[str, torch.Tensor]] | None:
        group = [next(batches, None) for _ in range(self.train_cfg.gradient_accumulation_steps)]
        return None if any(b is None for b in group) else group

    def run(self) -> dict[str, float]:
        t, acc = self.train_cfg, self.accelerator
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temp_dirs(self.output_dir)
        acc.init_trackers("pretrain", config={k: str(v) for k, v in vars(t).items()})
        if self.resume_dir is not None:
            self.load_checkpoint(self.resume_dir)
        if t.eval_steps > 0:
            self.eval_batches = self._load_eval_batches()
        self._banner()
        stop = StopRequest()
        batches = self._micro_batches()
        sums = torch.zeros(5, dtype=torch.float64)
        bar = tqdm(total=t.max_steps, initial=self.state.step, disable=not acc.is_local_main_process, unit="step")
        self._clock = window_start = time.perf_counter()
        data_wait = 0.0
        eval_metrics: dict[str, float] = {}
        self.model.train()
        while self.state.step < t.max_steps:
            asked = time.perf_counter()
            micro_batches = self._next_micro_batches(batches)
            data_wait += time.perf_counter() - asked
            if self._should_stop(micro_batches is None, stop):
                break
            stepped, grad_norm = self._train_step(micro_batches, sums)
            if not stepped:
                continue
            self.state.step += 1
            bar.update(1)
            record: dict[str, Any] = {}
            if self.state.step % t.logging_steps == 0 or self.state.step == t.max_steps:
                record = self._log_step(sums, grad_norm, time.perf_counter() - window_start, data_wait, bar)
                sums.zero_()
                data_wait, window_start = 0.0, time.perf_counter()
            if t.eval_steps > 0 and (self.state.step % t.eval_steps == 0 or self.state.step == t.max_steps):
                eval_metrics = self.evaluate()
                record = {"step": self.state.step, **record, **eval_metrics}
            if record:
                self._write_metrics(record)
            if t.save_steps > 0 and self.state.step % t.save_steps == 0:
                self._checkpoint_now()
        bar.close()
        self._checkpoint_now()
        self.save_model(self.output_dir)
        if self.pusher and acc.is_main_process:
            card = pretraining_card(self.output_dir, self.pusher.repo_id)
            self.pusher.push_final(self.output_dir, card, self.state.step)
        acc.end_training()
        return eval_metrics

    def _checkpoint_now(self) -> None:
        if ckpt.final_checkpoint_dir(self.output_dir, self.state.step).exists():
            return
        self._count_tokens()
        now = time.perf_counter()
        self.state.elapsed_seconds += now - self._clock
        self._clock = now
        self.save_checkpoint()
