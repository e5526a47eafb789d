"""The runs of one task: every learning rate with every seed, each trained in OUTPUT/TASK/runs/lr<rate>-seed<seed>/
(run_results.json there marks it finished), a killed run resumed, the best learning rate's median seed kept.

A recipe gives the sweep one function, `train_and_predict(args, resume)`, that trains a model with those
TrainingArguments and returns the trainer, the dev metrics and the predictions to keep (as JSON); everything else
(folders, resuming, medians, the kept model, the files that mark a run or a task finished) is here, once.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import PartialState
from accelerate.logging import get_logger
from transformers import Trainer, TrainingArguments

from bert_recipes.config import save_config
from bert_recipes.errors import UsageError
from bert_recipes.finetuning.arguments import MAIN_METRIC

logger = get_logger(__name__)
RUN_RESULTS = "run_results.json"  # written last into a run's folder: the run is finished
RUN_PREDICTIONS = "predictions.json"
TASK_RUNS = "runs.json"  # written last into a task's folder: the task is finished
CHECKPOINT_STATE = "trainer_state.json"  # the last file the Trainer writes into a checkpoint
# what stays in a run's folder once the task is done (the kept model is copied to the task's folder)
RUN_RECORDS = (RUN_RESULTS, RUN_PREDICTIONS, CHECKPOINT_STATE)


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


Score = Callable[[dict[str, float]], float]


def mean_score(metrics: dict[str, float]) -> float:
    """The GLUE leaderboard's score of one task: the mean of its metrics (MNLI: of matched and mismatched)."""
    return float(np.mean(list(metrics.values())))


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def median_run(runs: list[RunRecord], score: Score = mean_score) -> RunRecord:
    """The run whose score is the median; of an even number, the lower of the two in the middle."""
    ranked = sorted(runs, key=lambda run: score(run.metrics))
    return ranked[(len(ranked) - 1) // 2]


def summarize_runs(records: list[RunRecord], score: Score = mean_score) -> TaskResult:
    """The learning rate with the best median score, its metrics' median and min-max over seeds, its median seed."""
    by_rate: dict[float, list[RunRecord]] = {}
    for record in records:
        by_rate.setdefault(record.learning_rate, []).append(record)
    rate = max(by_rate, key=lambda r: float(np.median([score(run.metrics) for run in by_rate[r]])))
    runs = by_rate[rate]
    values = {name: [run.metrics[name] for run in runs] for name in runs[0].metrics}
    return TaskResult(
        median={name: float(np.median(v)) for name, v in values.items()},
        low={name: min(v) for name, v in values.items()},
        high={name: max(v) for name, v in values.items()},
        learning_rate=rate,
        kept_seed=median_run(runs, score).seed,
        runs=records,
    )


def read_task_result(task_dir: Path) -> TaskResult:
    return TaskResult.from_dict(json.loads((task_dir / TASK_RUNS).read_text(encoding="utf-8")))


def newest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint the Trainer finished writing: a kill during a save leaves one without its state."""
    finished = [path for path in folder.glob("checkpoint-*") if (path / CHECKPOINT_STATE).is_file()]
    return max(finished, key=lambda path: int(path.name.rsplit("-", 1)[1]), default=None)


def model_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and p.name not in RUN_RECORDS]


TrainAndPredict = Callable[[TrainingArguments, str | None], tuple[Trainer, dict[str, float], Any]]


@dataclass
class Sweep:
    """One task's runs, as a recipe asks for them."""

    name: str  # the task, in logs
    task_dir: Path
    training: TrainingArguments
    learning_rates: list[float]
    seeds: list[int]
    main_metric: str  # what MAIN_METRIC stands for: picks the best checkpoint during a run
    # ranks runs (the median seed, the best learning rate); None: the main metric itself
    score: Score | None = None
    scale: float = 100  # shown in points: GLUE's and seqeval's fractions times 100, SQuAD's points as they are
    logged: tuple[str, ...] = ()  # the metrics a run's log line shows (all when empty)
    # eval_results.json: each metric's median over the seeds (GLUE's report), or with this the kept run's own
    # metrics, those its predictions file next to them scores
    kept_run_results: bool = False

    @property
    def resuming(self) -> bool:
        return (self.training.resume_from_checkpoint or "false").lower() != "false"

    def folder(self, learning_rate: float, seed: int) -> Path:
        return self.task_dir / "runs" / f"lr{learning_rate:g}-seed{seed}"

    def resume_point(self, folder: Path) -> str | None:
        """The checkpoint a run continues from: `true` takes the run's newest, a path (one run only) itself."""
        if not self.resuming:
            return None
        wanted = self.training.resume_from_checkpoint
        if wanted.lower() != "true":
            return wanted
        newest = newest_checkpoint(folder)
        return str(newest) if newest else None

    def arguments(self, learning_rate: float, seed: int) -> TrainingArguments:
        metric = self.training.metric_for_best_model
        return dataclasses.replace(
            self.training,
            output_dir=str(self.folder(learning_rate, seed)),
            learning_rate=learning_rate,
            seed=seed,
            metric_for_best_model=self.main_metric if metric == MAIN_METRIC else metric,
            # the recipe pushes the kept model once, after every run: the Trainer would push each run
            push_to_hub=False,
        )

    def finished(self) -> TaskResult | None:
        """When resuming: the task's result if exactly these runs finished before (other seeds or rates: None, and
        the finished runs among them are read back one by one)."""
        if not (self.resuming and (self.task_dir / TASK_RUNS).is_file()):
            return None
        result = read_task_result(self.task_dir)
        wanted = sorted((rate, seed) for rate in self.learning_rates for seed in self.seeds)
        if sorted((run.learning_rate, run.seed) for run in result.runs) != wanted:
            return None
        logger.info(f"{self.name}: finished before, not redone", main_process_only=True)
        return result

    def run(self, learning_rate: float, seed: int, train_and_predict: TrainAndPredict) -> RunRecord:
        """Train, predict and save one run; when resuming, a finished run is read back and a killed one continues."""
        folder = self.folder(learning_rate, seed)
        if self.resuming and (folder / RUN_RESULTS).is_file():
            logger.info(
                f"{self.name} lr {learning_rate:g} seed {seed}: finished before, not redone", main_process_only=True
            )
            return RunRecord(**json.loads((folder / RUN_RESULTS).read_text(encoding="utf-8")))
        state = PartialState()
        resume = self.resume_point(folder)
        if resume is None and state.is_main_process:
            shutil.rmtree(folder, ignore_errors=True)  # a fresh run: an earlier run's checkpoints must not mix in
        state.wait_for_everyone()
        trainer, metrics, predictions = train_and_predict(self.arguments(learning_rate, seed), resume)
        shown = {name: value for name, value in metrics.items() if not self.logged or name in self.logged}
        logger.info(
            f"{self.name} lr {learning_rate:g} seed {seed}: {format_metrics(shown, scale=self.scale)}",
            main_process_only=True,
        )
        record = RunRecord(learning_rate, seed, metrics, Path(resume).name if resume else None)
        trainer.save_model(str(folder))
        trainer.save_state()  # trainer_state.json: the evaluations during training and the best checkpoint
        if state.is_main_process:
            write_json(folder / RUN_PREDICTIONS, predictions)
            write_json(folder / RUN_RESULTS, dataclasses.asdict(record))
            for checkpoint in folder.glob("checkpoint-*"):
                shutil.rmtree(checkpoint)  # they only served resuming; a bert-base one holds 1.3 GB of optimizer state
        state.wait_for_everyone()
        return record

    def run_all(self, train_and_predict: TrainAndPredict) -> TaskResult:
        records = [self.run(rate, seed, train_and_predict) for rate in self.learning_rates for seed in self.seeds]
        return summarize_runs(records, self.score or (lambda metrics: metrics[self.main_metric]))

    def keep_median_model(self, result: TaskResult, config_parts: tuple, write_outputs: Callable[[Any], None]) -> None:
        """Into the task folder: the kept run's model, eval_results.json, finetune_args.yaml (with the
        kept rate and seed), the recipe's own files from its predictions (`write_outputs`), and runs.json last;
        then the other runs' models go. On the main process only."""
        kept = self.folder(result.learning_rate, result.kept_seed)
        if not (kept / "config.json").is_file():
            raise UsageError(
                f"{self.name}: the median seed is {result.kept_seed} (lr {result.learning_rate:g}), a run of an "
                "earlier finished sweep whose model was deleted then: run the task again without "
                "--resume_from_checkpoint"
            )
        for path in model_files(kept):
            shutil.copy2(path, self.task_dir / path.name)
        kept_run = next(r for r in result.runs if (r.learning_rate, r.seed) == (result.learning_rate, result.kept_seed))
        write_json(self.task_dir / "eval_results.json", kept_run.metrics if self.kept_run_results else result.median)
        chosen = dataclasses.replace(self.training, learning_rate=result.learning_rate, seed=result.kept_seed)
        save_config(self.task_dir / "finetune_args.yaml", *config_parts, chosen)
        write_outputs(json.loads((kept / RUN_PREDICTIONS).read_text(encoding="utf-8")))
        write_json(self.task_dir / TASK_RUNS, dataclasses.asdict(result))
        for run in result.runs:
            for path in model_files(self.folder(run.learning_rate, run.seed)):
                path.unlink()


def points_range(low: float, high: float, scale: float = 100) -> str:
    """`52.10 to 57.40` in points: "to", not a dash, as Matthews correlation can be negative."""
    return f"{scale * low:.2f} to {scale * high:.2f}"


def format_metrics(
    metrics: dict[str, float], low: dict | None = None, high: dict | None = None, scale: float = 100
) -> str:
    """`accuracy 55.23`, or with a spread over seeds `accuracy 55.23 (52.10 to 57.40)`; fractions shown in points
    (`scale` 1 for metrics already in points)."""
    shown = []
    for name, value in metrics.items():
        spread = f" ({points_range(low[name], high[name], scale)})" if low and high else ""
        shown.append(f"{name} {scale * value:.2f}{spread}")
    return ", ".join(shown)
