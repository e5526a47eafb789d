"""GLUE outputs: each run's record, a task's summary over seeds (median and min-max) with the kept model, dev
predictions, the leaderboard's submission files, and the GLUE score as markdown and JSON."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from bert_recipes.config import save_config
from bert_recipes.errors import UsageError
from bert_recipes.glue.config import GlueConfig
from bert_recipes.glue.tasks import TASKS, Task

RUN_RESULTS = "run_results.json"  # written last into a run's folder: the run is finished
RUN_PREDICTIONS = "predictions.json"
TASK_RUNS = "runs.json"  # written last into a task's folder: the task is finished
# what stays in a run's folder once the task is done (the kept model is copied to the task's folder)
RUN_RECORDS = (RUN_RESULTS, RUN_PREDICTIONS, "trainer_state.json")
GLUE_SCORE_CONVENTION = (
    "GLUE score: the leaderboard's macro-average over the tasks run; a task with two metrics (MRPC, QQP, STS-B) "
    "scores their mean, MNLI the mean of matched and mismatched accuracy (shown apart as MNLI-m and MNLI-mm, "
    "scored as one task); AX is not scored. Dev sets, not the hidden test sets; with several seeds, each metric's "
    "median over the seeds."
)


@dataclass
class RunRecord:
    learning_rate: float
    seed: int
    metrics: dict[str, float]
    resumed_from: str | None = None  # the checkpoint a killed run continued from


@dataclass
class TaskResult:
    median: dict[str, float]  # each metric's median over the seeds of the chosen learning rate
    low: dict[str, float]
    high: dict[str, float]
    learning_rate: float  # the one with the best median score
    kept_seed: int  # the median-scoring seed, whose model is kept
    runs: list[RunRecord]  # every run, of every learning rate

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TaskResult:
        """From its JSON form (runs.json, or a task of glue_results.json's `runs`)."""
        return cls(**{**saved, "runs": [RunRecord(**run) for run in saved["runs"]]})

    @property
    def seeds(self) -> int:
        """How many seeds the median and min-max are over: the runs of the chosen learning rate."""
        return sum(run.learning_rate == self.learning_rate for run in self.runs)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def task_score(metrics: dict[str, float]) -> float:
    """The leaderboard's score of one task: the mean of its metrics (MNLI: of matched and mismatched)."""
    return float(np.mean(list(metrics.values())))


# ---- runs and their summary --------------------------------------------------------------------------------------


def save_run(folder: Path, record: RunRecord, predictions: dict[str, np.ndarray]) -> None:
    write_json(folder / RUN_PREDICTIONS, {split: values.tolist() for split, values in predictions.items()})
    write_json(folder / RUN_RESULTS, dataclasses.asdict(record))
    for checkpoint in folder.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # they only served resuming; a bert-base one holds 1.3 GB of optimizer state


def read_run(folder: Path) -> RunRecord:
    return RunRecord(**json.loads((folder / RUN_RESULTS).read_text(encoding="utf-8")))


def median_run(runs: list[RunRecord]) -> RunRecord:
    """The run whose score is the median; of an even number, the lower of the two in the middle."""
    ranked = sorted(runs, key=lambda run: task_score(run.metrics))
    return ranked[(len(ranked) - 1) // 2]


def summarize_runs(records: list[RunRecord]) -> TaskResult:
    """The learning rate with the best median score, its metrics' median and min-max over seeds, its median seed."""
    by_rate: dict[float, list[RunRecord]] = {}
    for record in records:
        by_rate.setdefault(record.learning_rate, []).append(record)
    rate = max(by_rate, key=lambda r: float(np.median([task_score(run.metrics) for run in by_rate[r]])))
    runs = by_rate[rate]
    values = {name: [run.metrics[name] for run in runs] for name in runs[0].metrics}
    return TaskResult(
        median={name: float(np.median(v)) for name, v in values.items()},
        low={name: min(v) for name, v in values.items()},
        high={name: max(v) for name, v in values.items()},
        learning_rate=rate,
        kept_seed=median_run(runs).seed,
        runs=records,
    )


def read_task_result(task_dir: Path) -> TaskResult:
    return TaskResult.from_dict(json.loads((task_dir / TASK_RUNS).read_text(encoding="utf-8")))


# ---- a task's files ----------------------------------------------------------------------------------------------


def model_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.name not in RUN_RECORDS]


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


def write_task_outputs(
    config: GlueConfig, name: str, encoded: datasets.DatasetDict, result: TaskResult, kept: Path, runs: list[Path]
) -> None:
    """The kept run's model, eval_results.json (medians), its dev predictions and resolved config in the task folder,
    its test predictions in the shared submission/ folder (ready to zip), runs.json; then the other models go."""
    task, out = TASKS[name], Path(config.training.output_dir)
    task_dir = out / name
    if not (kept / "config.json").is_file():
        raise UsageError(
            f"{name}: the median seed is {result.kept_seed} (lr {result.learning_rate:g}), a run of an earlier "
            "finished sweep whose model was deleted then: run the task again without --resume_from_checkpoint"
        )
    for path in model_files(kept):
        shutil.copy2(path, task_dir / path.name)
    write_json(task_dir / "eval_results.json", result.median)
    chosen = dataclasses.replace(config.training, learning_rate=result.learning_rate, seed=result.kept_seed)
    save_config(task_dir / "finetune_args.yaml", dataclasses.replace(config.task, task_name=name), config.model, chosen)
    predictions = json.loads((kept / RUN_PREDICTIONS).read_text(encoding="utf-8"))
    for split, file in task.dev_files:
        stem = Path(file).stem.replace("dev", "dev_predictions")
        write_predictions(task_dir / f"{stem}.tsv", task, encoded[split], predictions[split])
    for split, _, submission in task.test_files:
        if split in predictions:
            write_predictions(out / "submission" / submission, task, encoded[split], predictions[split])
    write_json(task_dir / TASK_RUNS, dataclasses.asdict(result))
    for folder in runs:
        for path in model_files(folder):
            path.unlink()


# ---- the results table -------------------------------------------------------------------------------------------


def points_range(low: float, high: float) -> str:
    """`52.10 to 57.40` in points: "to", not a dash, as Matthews correlation can be negative."""
    return f"{100 * low:.2f} to {100 * high:.2f}"


def format_metrics(metrics: dict[str, float], low: dict | None = None, high: dict | None = None) -> str:
    """`accuracy 55.23`, or with a spread over seeds `accuracy 55.23 (52.10 to 57.40)`."""
    shown = []
    for name, value in metrics.items():
        spread = f" ({points_range(low[name], high[name])})" if low and high else ""
        shown.append(f"{name} {100 * value:.2f}{spread}")
    return ", ".join(shown)


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
