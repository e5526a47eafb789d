"""Atomic, rotating checkpoints: `checkpoint-STEP/` appears only once everything in it is written.

Layout of a checkpoint:
    checkpoint-STEP/                 config.json, model.safetensors, tokenizer files, training_args.yaml
    checkpoint-STEP/training_state/  accelerate state (model, optimizer, RNG), each rank's data position,
                                     trainer_state.json (step, tokens, training time, the run's layout; written
                                     last). The learning rate is a function of step and time: no scheduler state.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import load
from accelerate.utils.constants import (
    FSDP_MODEL_NAME,
    MODEL_NAME,
    OPTIMIZER_NAME,
    RNG_STATE_NAME,
    SAFE_MODEL_NAME,
    SCALER_NAME,
)

from bert_recipes.errors import UsageError

PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
STATE_DIR = "training_state"
TRAINER_STATE = "trainer_state.json"
# what a run leaves in its output_dir besides checkpoints: --overwrite_output_dir removes these
RUN_OUTPUTS = (
    "metrics.jsonl", "config.json", "model.safetensors", "generation_config.json", "training_args.yaml",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "README.md",
    "training_curve.png", "pretrain",
)  # fmt: skip


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(PREFIX) :])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (their trainer_state.json exists), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
        if (p / STATE_DIR / TRAINER_STATE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def check_output_dir(output_dir: str | Path, resume_from_checkpoint: str | None, overwrite: bool) -> None:
    """Refuse to train over earlier checkpoints unless told to resume or overwrite."""
    if list_checkpoints(output_dir) and not resume_from_checkpoint and not overwrite:
        raise UsageError(
            f"output_dir '{output_dir}' already holds checkpoints: pass --resume_from_checkpoint latest to "
            "continue, --overwrite_output_dir true to start over, or another --output_dir"
        )


# the names accelerate's save_state, save_fsdp_model and save_fsdp_optimizer give, and the folder DeepSpeed's
# save_checkpoint fills: `_1`, `_2`... for further models or optimizers, `_rankN` for per-rank sharded files,
# FSDP's sharded (DCP) state in `pytorch_model_fsdp_0/` and `optimizer_0/`
_INDEX, _RANK = r"(_\d+)?", r"(_rank\d+)?"
_DEEPSPEED_FOLDER = rf"{MODEL_NAME}{_INDEX}"
WEIGHT_FILES = re.compile(
    rf"{SAFE_MODEL_NAME}{_INDEX}\.safetensors|{MODEL_NAME}{_INDEX}\.bin|{FSDP_MODEL_NAME}{_INDEX}{_RANK}\.bin"
)
OPTIMIZER_FILES = re.compile(rf"{OPTIMIZER_NAME}{_INDEX}{_RANK}\.bin")
# DeepSpeed keeps weights and optimizer shards together in pytorch_model/
WEIGHT_FOLDERS = re.compile(rf"{FSDP_MODEL_NAME}_\d+|{_DEEPSPEED_FOLDER}")
OPTIMIZER_FOLDERS = re.compile(rf"{OPTIMIZER_NAME}_\d+|{_DEEPSPEED_FOLDER}")


def _holds(state: Path, files: re.Pattern, folders: re.Pattern) -> bool:
    for entry in state.iterdir():
        if entry.is_file() and files.fullmatch(entry.name):
            return True
        if entry.is_dir() and folders.fullmatch(entry.name) and any(f.is_file() for f in entry.rglob("*")):
            return True
    return False


def validate_checkpoint(path: Path) -> None:
    """Refuse, in one line, a checkpoint without its completion marker, model weights or optimizer state."""
    state = path / STATE_DIR
    if not (state / TRAINER_STATE).is_file():
        raise UsageError(f"checkpoint '{path}' is incomplete (no {STATE_DIR}/{TRAINER_STATE}): resume from another")
    has_weights = _holds(state, WEIGHT_FILES, WEIGHT_FOLDERS)
    has_optimizer = _holds(state, OPTIMIZER_FILES, OPTIMIZER_FOLDERS)
    if not has_weights or not has_optimizer:
        missing = "model weights" if not has_weights else "optimizer state"
        raise UsageError(f"checkpoint '{path}' has no {missing} in {STATE_DIR}/: resume from another checkpoint")


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> Path | None:
    """`latest` means the newest complete checkpoint in output_dir (None when there is none yet)."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            return None
        path = checkpoints[-1]
    else:
        path = Path(resume_from_checkpoint)
        if not path.is_dir():
            raise UsageError(f"--resume_from_checkpoint '{path}' is not a directory: pass a checkpoint-STEP dir")
    validate_checkpoint(path)
    return path


def temp_checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{TEMP_PREFIX}{step}"


def final_checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{PREFIX}{step}"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"'{path}' cannot be read ({err}): the checkpoint is corrupt, resume from another") from None


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's step, epoch, tokens seen and training seconds, as it was saved."""
    return read_json(checkpoint / STATE_DIR / TRAINER_STATE)


def commit_checkpoint(temp_dir: Path, final_dir: Path, trainer_state: dict[str, Any]) -> None:
    """Write the completion marker, then rename: a crash before the rename leaves only a temp dir."""
    write_json(temp_dir / STATE_DIR / TRAINER_STATE, trainer_state)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    temp_dir.rename(final_dir)


def remove_stale_temp_dirs(output_dir: str | Path) -> None:
    root = Path(output_dir)
    if root.is_dir():
        for stale in root.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)


def prepare_output_dir(accelerator: Accelerator, output_dir: Path, overwrite: bool) -> None:
    """The main process clears an earlier run (with overwrite) and half-written checkpoints; every rank waits."""
    if accelerator.is_main_process:
        if overwrite:
            clear_previous_run(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_dirs(output_dir)
    accelerator.wait_for_everyone()


def rotate_checkpoints(output_dir: str | Path, save_total_limit: int) -> None:
    """Keep the newest `save_total_limit` checkpoints (0 keeps all)."""
    if save_total_limit <= 0:
        return
    for old in list_checkpoints(output_dir)[:-save_total_limit]:
        shutil.rmtree(old, ignore_errors=True)


def clear_previous_run(output_dir: str | Path) -> None:
    """What --overwrite_output_dir promises: no checkpoint, metric or model of an earlier run survives."""
    root = Path(output_dir)
    if not root.is_dir():
        return
    leftovers = [
        *root.glob(f"{PREFIX}*"),
        *root.glob(f"{TEMP_PREFIX}*"),
        *root.glob("nonfinite-step-*.pt"),
        *(root / name for name in RUN_OUTPUTS),
    ]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def data_state_file(rank: int) -> str:
    """The name of a rank's stream position inside the checkpoint's state folder."""
    return f"data_state_rank{rank}.json"


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: Path,
    step: int,
    trainer_state: dict[str, Any],
    states: dict[str, dict[str, Any]],
    save_model: Callable[[Path], None],
) -> Path:
    """Write checkpoint-STEP atomically: everything goes to a temp dir that the main process renames at the end.

    `states` are JSON files of this rank (the data position) or of the run (the LR schedule), by file name.
    A failed write (disk full) removes the partial checkpoint and stops with one line; earlier ones stay intact.
    """
    temp, final = temp_checkpoint_dir(output_dir, step), final_checkpoint_dir(output_dir, step)
    try:
        if accelerator.is_main_process:
            (temp / STATE_DIR).mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temp / STATE_DIR))
        for name, payload in states.items():
            write_json(temp / STATE_DIR / name, payload)
        save_model(temp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            commit_checkpoint(temp, final, trainer_state)
    # torch.save reports a full disk as RuntimeError ("iostream error"), the rest of the stack as OSError
    except (OSError, RuntimeError) as err:
        shutil.rmtree(temp, ignore_errors=True)
        free_mb = shutil.disk_usage(output_dir).free / 1e6
        raise UsageError(
            f"writing checkpoint-{step} in '{output_dir}' failed ({err}; {free_mb:.1f} MB free): the partial "
            "checkpoint was removed and earlier ones are intact; free disk space, then resume with "
            "--resume_from_checkpoint latest"
        ) from None
    accelerator.wait_for_everyone()
    return final


@contextmanager
def fresh_scaler_unless_saved(accelerator: Accelerator, state_dir: Path) -> Iterator[None]:
    """Accelerate reads scaler.pt whenever this run has an fp16 loss scaler, without looking whether the checkpoint
    (written in bf16 or fp32) has one: then the scaler starts fresh."""
    scaler = accelerator.scaler
    if scaler is not None and not (state_dir / SCALER_NAME).is_file():
        accelerator.scaler = None
    try:
        yield
    finally:
        accelerator.scaler = scaler


def load_accelerate_state(accelerator: Accelerator, path: Path, with_random_state: bool = True) -> None:
    """Model, optimizer and RNG states; a failure names its cause (a tensor's shape, or corrupt files).

    `with_random_state` False: this rank did not exist in the saved run (more processes now), so it has no random
    state file and keeps its own.
    """
    rng_states = path / STATE_DIR / f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl"
    try:
        # accelerate only logs a random-state file it cannot read (a resume that is silently not exact): read it first
        if with_random_state:
            load(rng_states)
        with fresh_scaler_unless_saved(accelerator, path / STATE_DIR):
            accelerator.load_state(str(path / STATE_DIR))
    except Exception as err:  # truncated or foreign files fail deep inside torch/safetensors
        message = " ".join(str(err).split())
        if "size mismatch" in message:
            mismatch = message[message.index("size mismatch") :][:300]
            raise UsageError(
                f"checkpoint '{path}' does not fit this model ({mismatch}): resume with the model settings "
                "it was trained with (its training_args.yaml)"
            ) from None
        raise UsageError(
            f"checkpoint '{path}' cannot be loaded ({type(err).__name__}: {message[:200]}): it is corrupt, "
            "resume from an earlier checkpoint-STEP"
        ) from None


MODEL_SHAPE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size",
)  # fmt: skip


def check_same_model(path: Path, model_config: dict[str, Any]) -> None:
    """Before any weight is read: a checkpoint of another shape names the field that differs."""
    saved = read_json(path / "config.json")
    for name in MODEL_SHAPE_FIELDS:
        if name in saved and saved[name] != model_config.get(name):
            flag = "the tokenizer's size" if name == "vocab_size" else f"--{name}"
            raise UsageError(
                f"checkpoint '{path}' has {name} {saved[name]} but this run has {model_config.get(name)} "
                f"(from {flag}): resume with the settings it was trained with (its training_args.yaml)"
            )


def describe_layout(layout: dict[str, Any]) -> str:
    processes = f"{layout['world_size']} process(es) in {layout['mixed_precision']}"
    if layout["zero_stage"]:
        return f"DeepSpeed ZeRO-{layout['zero_stage']} on {processes}"
    return f"{'FSDP' if layout.get('fsdp') else 'no DeepSpeed'}, {processes}"


def check_resumable_layout(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Under plain DDP anything may change between stop and resume (processes, workers, accumulation, batch size,
    precision). DeepSpeed keeps its optimizer state partitioned by ZeRO stage and process count, in its precision's
    layout, in files only it reads, and FSDP writes files of its own: a checkpoint of another DeepSpeed layout, or
    one crossing between DDP, FSDP and DeepSpeed, is one clear error."""
    if "zero_stage" not in saved:  # written before layouts were recorded
        return
    keys = ("zero_stage", "world_size", "mixed_precision") if saved["zero_stage"] or now["zero_stage"] else ()
    if all(saved[key] == now[key] for key in keys) and saved.get("fsdp", False) == now["fsdp"]:
        return
    raise UsageError(
        f"checkpoint '{path}' was written with {describe_layout(saved)}, this run has {describe_layout(now)}: "
        "DeepSpeed's and FSDP's optimizer state only loads into the layout that wrote it; resume with the checkpoint's "
        f"accelerate config, process count and precision, or start from its weights with --model_name_or_path {path} "
        "(a new optimizer state and schedule)"
    )
