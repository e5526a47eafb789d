"""What every benchmark leaves behind: the machine it ran on, a JSON record and a markdown table; and the corpus
they read unless told otherwise."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

# the package has no default corpus; the benchmarks measure on the embedded one, wherever they are run from
DEMO_CORPUS = str(Path(__file__).resolve().parents[1] / "data" / "gutenberg-demo.jsonl.gz")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def save_json(path: str, result: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2))


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
