"""A run's own files as the model cards read them (arguments, metrics.jsonl, trainer state), and the card
templates shipped with the package."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bert_recipes.checkpointing import list_checkpoints, read_trainer_state

ARGS_FILES = ("training_args.yaml", "finetune_args.yaml")


def read_template(name: str) -> str:
    # read as package data, not through a path next to the source: a pip-installed package has no repo around it
    return resources.files("bert_recipes").joinpath("model_cards", name).read_text(encoding="utf-8")


def read_yaml(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}


def read_run_args(folder: Path) -> dict[str, Any]:
    return next((read_yaml(folder / name) for name in ARGS_FILES if (folder / name).is_file()), {})


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """One record per logging step; a line cut short by a killed run is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict) and "step" in r]


def newest_trainer_state(output_dir: Path) -> dict[str, Any]:
    """The newest checkpoint's trainer state: elapsed seconds, tokens seen, processes."""
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return {}
    return read_trainer_state(checkpoints[-1])
