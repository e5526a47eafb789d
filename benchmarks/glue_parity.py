"""Do the recipe's GLUE dev scores match transformers' `run_glue.py` on the same files, model and hyperparameters?

(a) reference: a minimal port of `examples/pytorch/text-classification/run_glue.py` at its defaults: every row padded
    to max_seq_length (`--pad_to_max_length True`), `default_data_collator`, `AutoModelForSequenceClassification`
    (regression for STS-B), a plain `Trainer` with `TrainingArguments`, the dev set scored by `trainer.evaluate`
    with the GLUE metric (the repo's copy: `evaluate.load("glue")` needs the Hub);
(b) the recipe: `bert_recipes.glue.run_glue` (length-grouped batches, dynamic padding), the same seeds.
Both in fp32, with the same learning rate, batch, epochs, warmup, weight decay and seeds, on the GLUE samples in
data/glue. Without --model_name_or_path, a small BERT is pretrained first with the recipe's Pretrainer. Reports each
side's median (min-max) of each task's main metric over the seeds, and whether the medians differ by no more than the
larger of the two seed ranges; writes benchmarks/results/glue_parity.json.

    python benchmarks/glue_parity.py --tasks rte,mrpc,stsb,sst2 --seeds 1,2,3 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from accelerate import PartialState
from bench_setup import starting_model
from reporting import DEMO_CORPUS, REPO_ROOT, cell, save_result, spread
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EvalPrediction,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from bert_recipes.config import parse_config
from bert_recipes.glue import TASKS, GlueConfig, TaskConfig, majority_baseline, run_glue
from bert_recipes.glue.data import load_task_data
from bert_recipes.glue.tasks import main_metric_name
from bert_recipes.metrics import GLUE_METRIC


@dataclass
class BenchConfig:
    tasks: str = field(default="rte,mrpc,stsb,sst2", metadata={"help": "Comma list of GLUE tasks in --data_dir."})
    seeds: str = field(default="1,2,3", metadata={"help": "Fine-tuning seeds, the same on both sides."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint to fine-tune; default: pretrain a small one first."}
    )
    learning_rate: float = field(default=1.0e-4, metadata={"help": "Fine-tuning peak learning rate."})
    batch_size: int = field(default=16, metadata={"help": "Fine-tuning rows per step."})
    epochs: float = field(default=3.0, metadata={"help": "Fine-tuning epochs."})
    warmup: float = field(default=0.1, metadata={"help": "Warmup steps; below 1, a fraction of all steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_seq_length: int = field(default=128, metadata={"help": "run_glue.py's default, and the paper's."})
    data_dir: str = field(default=str(REPO_ROOT / "data" / "glue"), metadata={"help": "GLUE files, original layout."})
    pretrain_size: str = field(default="tiny", metadata={"help": "BERT size pretrained without a checkpoint."})
    pretrain_steps: int = field(default=300, metadata={"help": "Pretraining steps without a checkpoint."})
    pretrain_learning_rate: float = field(default=1.0e-3, metadata={"help": "Pretraining peak learning rate."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer of the pretrained model."})
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus to pretrain on."})


# ---- (a) run_glue.py at its defaults -----------------------------------------------------------------------------


def padded_to_max_length(data: datasets.DatasetDict, tokenizer, max_length: int) -> datasets.DatasetDict:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = (batch["text_a"],) if batch["text_b"][0] is None else (batch["text_a"], batch["text_b"])
        return tokenizer(*pairs, padding="max_length", max_length=max_length, truncation=True)

    return data.map(encode, batched=True)


def glue_metrics(name: str):
    """run_glue.py's compute_metrics: argmax of the logits (the squeezed score for STS-B) against the labels."""
    metric = evaluate.load(GLUE_METRIC, config_name=name, keep_in_memory=True)

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions
        values = np.squeeze(logits) if TASKS[name].is_regression else np.argmax(logits, axis=1)
        # lists, not arrays: the metric's numpy path would round STS-B scores to float32
        return metric.compute(predictions=values.tolist(), references=prediction.label_ids.tolist())

    return compute


def reference_run(bench: BenchConfig, model_dir: str, name: str, data: datasets.DatasetDict, seed: int) -> float:
    """One run_glue.py run; returns the main metric on the dev set."""
    task = TASKS[name]
    set_seed(seed)  # as run_glue.py: before the model, so the head is drawn from the seed
    config = AutoConfig.from_pretrained(model_dir, num_labels=task.num_labels, finetuning_task=name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, config=config)
    if task.labels:
        model.config.label2id = {label: i for i, label in enumerate(task.label_names)}
        model.config.id2label = dict(enumerate(task.label_names))
    encoded = padded_to_max_length(data, tokenizer, bench.max_seq_length)
    (dev, _), *_ = task.dev_files
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, learning_rate=bench.learning_rate, per_device_train_batch_size=bench.batch_size,
            num_train_epochs=bench.epochs, warmup_steps=bench.warmup, weight_decay=bench.weight_decay, seed=seed,
            # run_glue.py saves every 500 steps, more than these runs take; a save changes no score
            save_strategy="no", disable_tqdm=True, report_to="none",
        )  # fmt: skip
        trainer = Trainer(
            model=model, args=args, train_dataset=encoded["train"], eval_dataset=encoded[dev],
            compute_metrics=glue_metrics(name), processing_class=tokenizer, data_collator=default_data_collator,
        )  # fmt: skip
        trainer.train()
        return trainer.evaluate()[f"eval_{task.main_metric}"]


def reference_scores(bench: BenchConfig, model_dir: str, names: list[str], seeds: list[int]) -> dict[str, list]:
    scores = {}
    for name in names:
        data = load_task_data(TaskConfig(task_name=name, data_dir=bench.data_dir), name)
        scores[name] = [reference_run(bench, model_dir, name, data, seed) for seed in seeds]
    return scores


# ---- (b) the recipe ----------------------------------------------------------------------------------------------


def recipe_scores(bench: BenchConfig, model_dir: str, names: list[str], out: Path) -> dict[str, list]:
    config = GlueConfig.from_values(
        model_name_or_path=model_dir, task_name=",".join(names), data_dir=bench.data_dir, output_dir=str(out),
        seeds=bench.seeds, learning_rate=bench.learning_rate, per_device_train_batch_size=bench.batch_size,
        num_train_epochs=bench.epochs, warmup_steps=bench.warmup, weight_decay=bench.weight_decay,
        max_seq_length=bench.max_seq_length, mixed_precision="no", disable_tqdm=True, report_to="none",
    )  # fmt: skip
    results = run_glue(config)
    return {name: [run.metrics[main_metric_name(name)] for run in results[name].runs] for name in names}


# ---- comparison --------------------------------------------------------------------------------------------------


def baseline_score(bench: BenchConfig, name: str) -> float:
    """The dev score of always predicting the most frequent training label: a run at it has learned nothing."""
    config = GlueConfig.from_values(model_name_or_path="unused", task_name=name, data_dir=bench.data_dir)
    return majority_baseline(config, name)[main_metric_name(name)]


def compare(name: str, seeds: list[int], reference: list[float], recipe: list[float], baseline: float) -> dict:
    ours, theirs = spread(recipe), spread(reference)
    noise = max(ours["max"] - ours["min"], theirs["max"] - theirs["min"])
    difference = ours["median"] - theirs["median"]
    return {
        "task": name,
        "metric": TASKS[name].main_metric,
        "seeds": seeds,
        "run_glue": {**theirs, "scores": reference},
        "recipe": {**ours, "scores": recipe},
        "median_difference": difference,
        "seed_noise": noise,
        "within_seed_noise": abs(difference) <= noise,
        "majority_baseline": baseline,
        # every run of both sides at the baseline: equal, but the comparison says nothing
        "all_at_baseline": all(score == baseline for score in reference + recipe),
    }


def verdict(row: dict) -> str:
    if row["all_at_baseline"]:
        return "yes, but every run predicts the majority class"
    return "yes" if row["within_seed_noise"] else f"no (noise {row['seed_noise']:.3f})"


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    # scores, not speed, are measured: one thread is 8x faster than two on a CPU other jobs share (measured)
    torch.set_num_threads(1)
    names, seeds = bench.tasks.split(","), [int(seed) for seed in bench.seeds.split(",")]
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise SystemExit(f"--tasks names unknown GLUE tasks {unknown}: use some of {', '.join(TASKS)}")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = starting_model(bench, Path(tmp) / "pretrained")
        start = time.perf_counter()
        reference = reference_scores(bench, model_dir, names, seeds)
        reference_seconds = time.perf_counter() - start
        recipe = recipe_scores(bench, model_dir, names, Path(tmp) / "glue")
        recipe_seconds = time.perf_counter() - start - reference_seconds
    rows = [compare(name, seeds, reference[name], recipe[name], baseline_score(bench, name)) for name in names]
    result = {
        "config": asdict(bench),
        "run_glue_seconds": round(reference_seconds, 1),
        "recipe_seconds": round(recipe_seconds, 1),
        "rows": rows,
    }
    print(f"fine-tuning time: run_glue.py port {reference_seconds:.0f} s, recipe {recipe_seconds:.0f} s")
    save_result(
        "glue_parity",
        result,
        ["task", "metric", "run_glue.py: median (min-max)", "recipe: median (min-max)", "recipe - run_glue.py",
         "within seed noise", "dev majority baseline"],
        [[r["task"], r["metric"], cell(r["run_glue"]), cell(r["recipe"]), f"{r['median_difference']:+.3f}",
          verdict(r), f"{r['majority_baseline']:.3f}"]
         for r in rows],
    )  # fmt: skip


if __name__ == "__main__":
    main()
