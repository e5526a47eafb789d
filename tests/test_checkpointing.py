"""Checkpoint validation against the layouts accelerate and DeepSpeed really write: files and folders are produced
by accelerate's own save functions (or named from its and DeepSpeed's constants), never typed here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from accelerate.checkpointing import save_accelerator_state
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.constants import MODEL_NAME
from accelerate.utils.fsdp_utils import save_fsdp_model, save_fsdp_optimizer

from bert_recipes.checkpointing import STATE_DIR, TRAINER_STATE, validate_checkpoint, write_json
from bert_recipes.errors import UsageError

# one process of one: what the save functions read from the Accelerator
SINGLE_PROCESS = SimpleNamespace(process_index=0, num_processes=1)
# two models and two optimizers, so the `_1` names appear beside the first ones
COPIES = 2


def tiny_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))


def trained(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """One step, so the optimizer has state to save."""
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def save_plain(state: Path, part: str, safe_serialization: bool) -> None:
    """What save_state writes without FSDP or DeepSpeed (one process or DDP)."""
    pairs = [trained(tiny_model()) for _ in range(COPIES)]
    weights = [m.state_dict() for m, _ in pairs] if part == "weights" else []
    optimizers = [o for _, o in pairs] if part == "optimizer" else []
    save_accelerator_state(state, weights, optimizers, [], [], 0, 0, safe_serialization=safe_serialization)


@pytest.fixture(scope="module")
def process_group() -> Iterator[None]:
    """FSDP2 needs a process group; gloo with one rank and an in-memory store needs no port."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def save_fsdp(state: Path, part: str, state_dict_type: str, use_dcp: bool) -> None:
    from torch.distributed.fsdp import fully_shard

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type=state_dict_type)
    for index in range(COPIES):
        model = tiny_model()
        fully_shard(model)
        model, optimizer = trained(model)
        if part == "weights":
            save_fsdp_model(plugin, SINGLE_PROCESS, model, state, index, use_dcp=use_dcp)
        else:
            save_fsdp_optimizer(plugin, SINGLE_PROCESS, optimizer, model, state, index, use_dcp=use_dcp)


Layout = Callable[[Path, str], None]
LAYOUTS: dict[str, Layout] = {
    "plain-safetensors": lambda state, part: save_plain(state, part, safe_serialization=True),
    "plain-pickle": lambda state, part: save_plain(state, part, safe_serialization=False),
    "fsdp-full": lambda state, part: save_fsdp(state, part, "FULL_STATE_DICT", use_dcp=True),
    "fsdp-sharded-dcp": lambda state, part: save_fsdp(state, part, "SHARDED_STATE_DICT", use_dcp=True),
    "fsdp-sharded-per-rank": lambda state, part: save_fsdp(state, part, "SHARDED_STATE_DICT", use_dcp=False),
}


def checkpoint(root: Path, layout: Layout | None = None, *parts: str) -> Path:
    state = root / STATE_DIR
    state.mkdir(parents=True)
    for part in parts:
        layout(state, part)
    write_json(state / TRAINER_STATE, {"step": 1})
    return root


def assert_refused(path: Path, missing: str) -> None:
    with pytest.raises(UsageError, match=f"has no {missing} in {STATE_DIR}/") as err:
        validate_checkpoint(path)
    assert "\n" not in str(err.value)


@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize("name", LAYOUTS)
def test_every_layout_accelerate_writes_is_accepted_and_each_half_alone_refused(name, tmp_path):
    layout = LAYOUTS[name]
    complete = checkpoint(tmp_path / "complete", layout, "weights", "optimizer")
    validate_checkpoint(complete)
    assert_refused(checkpoint(tmp_path / "weights-only", layout, "weights"), "optimizer state")
    assert_refused(checkpoint(tmp_path / "optimizer-only", layout, "optimizer"), "model weights")


def deepspeed_folder(state: Path, index: int) -> Path:
    """Named as accelerate's save_state names DeepSpeed's checkpoint tag; DeepSpeed puts its shards inside."""
    return state / (MODEL_NAME if index == 0 else f"{MODEL_NAME}_{index}")


def test_deepspeed_folders_with_their_shards_are_accepted_and_an_empty_one_refused(tmp_path):
    constants = pytest.importorskip("deepspeed.checkpoint.constants", reason="pip install -e .[deepspeed]")
    shard = f"{constants.MODEL_FILE_PREFIX}00"
    path = checkpoint(tmp_path / "zero")
    for index in range(COPIES):
        folder = deepspeed_folder(path / STATE_DIR, index)
        folder.mkdir()
        (folder / f"{shard}{constants.MODEL_FILE_SUFFIX}").write_bytes(b"weights")
        (folder / f"{constants.BF16_ZERO_FILE_PREFIX}0_{shard}{constants.OPTIM_FILE_SUFFIX}").write_bytes(b"adam")
    validate_checkpoint(path)

    empty = checkpoint(tmp_path / "empty")
    deepspeed_folder(empty / STATE_DIR, 0).mkdir()
    assert_refused(empty, "model weights")


def test_a_checkpoint_without_its_completion_marker_is_incomplete(tmp_path):
    path = checkpoint(tmp_path / "run", LAYOUTS["plain-safetensors"], "weights", "optimizer")
    (path / STATE_DIR / TRAINER_STATE).unlink()
    with pytest.raises(UsageError, match="is incomplete"):
        validate_checkpoint(path)
