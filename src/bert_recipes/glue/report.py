"""GLUE outputs: the kept model's dev predictions, the leaderboard's submission files, and the GLUE score as
markdown and JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import datasets
import numpy as np

from bert_recipes.finetuning import Sweep, TaskResult, format_metrics, write_json
from bert_recipes.finetuning import mean_score as task_score
from bert_recipes.glue.config import GlueConfig
from bert_recipes.glue.tasks import TASKS, Task

GLUE_SCORE_CONVENTION = (
    "GLUE score: the leaderboard's macro-average over the tasks run; a task with two metrics (MRPC, QQP, STS-B) "
    "scores their mean, MNLI the mean of matched and mismatched accuracy (shown apart as MNLI-m and MNLI-mm, "
    "scored as one task); AX is not scored. Dev sets, not the hidden test sets; with several seeds, each metric's "
    "median over the seeds."
)


# ---- a task's files ----------------------------------------------------------------------------------------------


def shown_prediction(task: Task, value: float) -> str:
    """As the leaderboard wants it: the GLUE files' label (names for MNLI, QNLI, RTE), a 0-5 score for STS-B."""
    if task.is_regression:
        return f"{min(5.0, max(0.0, float(value))):.3f}"
    return task.labels[int(value)]


def write_predictions(path: Path, task: Task, split: datasets.Dataset, predictions: list) -> None:
    """`index<TAB>prediction` rows; dev files add the gold `label` column."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled = any(label != -1 for label in split["label"])
    lines = ["index\tprediction" + ("\tlabel" if labelled else "")]
    for idx, value, label in zip(split["idx"], predictions, split["label"], strict=True):
        gold = f"\t{shown_prediction(task, label)}" if labelled else ""
        lines.append(f"{idx}\t{shown_prediction(task, value)}{gold}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_task_outputs(config: GlueConfig, sweep: Sweep, encoded: datasets.DatasetDict, result: TaskResult) -> None:
    """The kept run's model and files in the task folder (Sweep.keep_median_model), with its dev predictions as
    tsv files and its test predictions in the shared submission/ folder (ready to zip)."""
    task, out = TASKS[sweep.name], Path(config.training.output_dir)

    def write_outputs(predictions: dict[str, list]) -> None:
        for split, file in task.dev_files:
            stem = Path(file).stem.replace("dev", "dev_predictions")
            write_predictions(sweep.task_dir / f"{stem}.tsv", task, encoded[split], predictions[split])
        for split, _, submission in task.test_files:
            if split in predictions:
                write_predictions(out / "submission" / submission, task, encoded[split], predictions[split])

    task_config = dataclasses.replace(config.task, task_name=sweep.name)
    sweep.keep_median_model(result, (task_config, config.model), write_outputs)


# ---- the results table -------------------------------------------------------------------------------------------


def glue_score(results: dict[str, dict[str, float]]) -> float:
    """The GLUE average in points (0-100), as the leaderboard computes it; see GLUE_SCORE_CONVENTION."""
    if not results:
        raise ValueError("glue_score needs the results of at least one task")
    return 100 * float(np.mean([task_score(metrics) for metrics in results.values()]))


def leaderboard_cells(name: str, metrics: dict[str, float]) -> list[tuple[str, str]]:
    """(column, value) in the leaderboard's style: two metrics as `a/b`, MNLI-m and MNLI-mm in their own columns."""
    if name == "mnli":
        return [(f"MNLI-{s[1:]}", f"{100 * metrics[f'accuracy{s}']:.1f}") for s in ("_m", "_mm")]
    return [(TASKS[name].folder, "/".join(f"{100 * v:.1f}" for v in metrics.values()))]


def runs_markdown(results: dict[str, TaskResult]) -> list[str]:
    """Every run's numbers, one row per task, learning rate and seed."""
    lines = ["", "| task | learning rate | seed | metrics (dev) | score |", "|---|---|---|---|---|"]
    for name, result in results.items():
        for run in result.runs:
            kept = " (kept)" if (run.learning_rate, run.seed) == (result.learning_rate, result.kept_seed) else ""
            lines.append(
                f"| {name} | {run.learning_rate:g} | {run.seed}{kept} | {format_metrics(run.metrics)} | "
                f"{100 * task_score(run.metrics):.2f} |"
            )
    return lines


def results_markdown(results: dict[str, TaskResult]) -> str:
    """One row per task (median (min-max) over seeds), the leaderboard-style line, the GLUE score, every run."""
    medians = {name: result.median for name, result in results.items()}
    several = any(len(result.runs) > 1 for result in results.values())
    lines = ["| task | metrics (dev) | score | learning rate | seeds |", "|---|---|---|---|---|"]
    for name, r in results.items():
        spread = (r.low, r.high) if r.seeds > 1 else (None, None)
        lines.append(
            f"| {name} | {format_metrics(r.median, *spread)} | {100 * task_score(r.median):.2f} | "
            f"{r.learning_rate:g} | {r.seeds} (model: seed {r.kept_seed}) |"
        )
    score = glue_score(medians)
    lines.append(f"| **GLUE score** | average of {len(results)} of {len(TASKS)} tasks | {score:.2f} | | |")
    cells = [cell for name, metrics in medians.items() for cell in leaderboard_cells(name, metrics)]
    cells.append(("Score", f"{score:.1f}"))
    lines += ["", "| " + " | ".join(c for c, _ in cells) + " |", "|" + "---|" * len(cells)]
    lines += ["| " + " | ".join(v for _, v in cells) + " |", "", GLUE_SCORE_CONVENTION]
    return "\n".join(lines + (runs_markdown(results) if several else [])) + "\n"


def write_glue_results(output_dir: Path, results: dict[str, TaskResult]) -> None:
    """glue_results.json (`tasks`: each task's median metrics; `runs`: everything) and glue_results.md."""
    output_dir.mkdir(parents=True, exist_ok=True)
    medians = {name: result.median for name, result in results.items()}
    summary = {
        "tasks": medians,
        "glue_score": glue_score(medians),
        "convention": GLUE_SCORE_CONVENTION,
        "runs": {name: dataclasses.asdict(result) for name, result in results.items()},
    }
    write_json(output_dir / "glue_results.json", summary)
    (output_dir / "glue_results.md").write_text(results_markdown(results), encoding="utf-8")
