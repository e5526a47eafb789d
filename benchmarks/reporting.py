"""What every benchmark leaves behind: `benchmarks/results/NAME.json` with the machine it ran on, library versions,
the exact command, the raw numbers and the table the README shows (`benchmarks/report.py` copies it there)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from bert_recipes.finetuning import TaskResult
from bert_recipes.glue.report import task_score

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# the package has no default corpus; the benchmarks measure on the embedded one, wherever they are run from
DEMO_CORPUS = str(REPO_ROOT / "data" / "gutenberg-demo.jsonl.gz")


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def versions() -> dict[str, str]:
    return {name: version(name) for name in ("torch", "transformers", "accelerate", "datasets", "tokenizers")}


def command() -> str:
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO_ROOT) if script.is_relative_to(REPO_ROOT) else script
    return " ".join(["python", str(shown), *sys.argv[1:]])


def median_and_range(values: list[float]) -> str:
    """`median (min to max)`, one decimal: "to" because the values may be negative."""
    return f"{statistics.median(values):.1f} ({min(values):.1f} to {max(values):.1f})"


def spread(scores: list[float]) -> dict[str, float]:
    return {"median": statistics.median(scores), "min": min(scores), "max": max(scores)}


def cell(side: dict) -> str:
    """A spread as a table cell: `median (min-max)`, three decimals."""
    return f"{side['median']:.3f} ({side['min']:.3f}-{side['max']:.3f})"


def seed_points(result: TaskResult) -> dict[int, float]:
    """Each seed's task score (GLUE's convention, in points) of a fine-tuned task."""
    return {run.seed: 100 * task_score(run.metrics) for run in result.runs}


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def save_result(
    name: str, result: dict[str, Any], header: list[str], rows: list[list[Any]], directory: Path = RESULTS_DIR
) -> Path:
    """Write the record and print its table; `rows` are formatted cells, `result` the raw numbers behind them."""
    record = {
        "name": name,
        "command": command(),
        "machine": machine(),
        "versions": versions(),
        **result,
        "table": {"header": header, "rows": [[str(cell) for cell in row] for row in rows]},
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(header, rows))
    return path
