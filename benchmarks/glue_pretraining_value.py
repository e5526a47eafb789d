"""What pretraining buys downstream: GLUE dev scores of a pretrained BERT against the very same architecture with
random weights, both fine-tuned by recipes/finetune_glue.py with the same settings, tasks and seeds.

    python benchmarks/glue_pretraining_value.py --model runs/bert-mini-60min --data_dir data/glue \
        --tasks cola,sst2,mrpc,stsb,rte --seeds 1,2,3,4,5

The random twin gets the pretrained model's config and tokenizer, weights drawn by BertForPreTraining's own
initialisation. Each task reports the median over seeds of its score (the mean of its metrics, as GLUE averages
them), with the min-max; the last row is the GLUE-style average of the medians. Writes
benchmarks/results/glue_pretraining_value.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from reporting import RESULTS_DIR, median_and_range, save_result, seed_points
from transformers import AutoTokenizer, BertConfig, BertForPreTraining

from bert_recipes.card_files import newest_trainer_state
from bert_recipes.config import parse_config
from bert_recipes.glue import GlueConfig, TaskResult, glue_score, run_glue
from bert_recipes.tokenization import save_tokenizer


@dataclass
class ValueBenchConfig:
    model: str = field(default="runs/bert-mini-60min", metadata={"help": "The pretrained BERT (a recipe output)."})
    data_dir: str = field(default="data/glue", metadata={"help": "GLUE tasks in the original layout."})
    tasks: str = field(default="cola,sst2,mrpc,stsb,rte", metadata={"help": "Comma list of GLUE tasks."})
    seeds: str = field(default="1,2,3,4,5", metadata={"help": "Fine-tuning seeds, the same for both models."})
    # a 4-layer model on a few hundred rows needs more and larger steps than bert-base's 2e-5 for 3 epochs
    learning_rate: float = field(default=3e-4, metadata={"help": "Fine-tuning peak LR, both models."})
    num_train_epochs: float = field(default=10.0, metadata={"help": "Fine-tuning epochs, both models."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Fine-tuning batch, both models."})
    max_seq_length: int = field(default=128, metadata={"help": "Fine-tuning length, both models."})
    init_seed: int = field(default=0, metadata={"help": "Seed of the random twin's weights."})
    work_dir: str = field(default="runs/glue_pretraining_value", metadata={"help": "Models and GLUE outputs."})
    results_dir: str = field(default=str(RESULTS_DIR), metadata={"help": "Where the JSON record goes."})


def random_twin(model: Path, out: Path, seed: int) -> Path:
    """The pretrained model's architecture and tokenizer with freshly initialised weights."""
    torch.manual_seed(seed)
    BertForPreTraining(BertConfig.from_pretrained(model)).save_pretrained(out)
    save_tokenizer(AutoTokenizer.from_pretrained(model), out)
    return out


def finetune(bench: ValueBenchConfig, model: Path, out: Path, task: str) -> TaskResult:
    """One task over every seed; runs finished by an earlier, stopped invocation are read back, not redone."""
    config = GlueConfig.from_values(
        model_name_or_path=str(model), task_name=task, data_dir=bench.data_dir, output_dir=str(out),
        seeds=bench.seeds, learning_rate=bench.learning_rate, num_train_epochs=bench.num_train_epochs,
        per_device_train_batch_size=bench.per_device_train_batch_size, max_seq_length=bench.max_seq_length,
        save_strategy="no", report_to="none", disable_tqdm=True, resume_from_checkpoint="true",
    )  # fmt: skip
    return run_glue(config)[task]


def task_summary(result: TaskResult) -> dict[str, float]:
    """Median and min-max over seeds of the task's score, in points."""
    scores = list(seed_points(result).values())
    return {"median": float(np.median(scores)), "low": min(scores), "high": max(scores), "scores": scores}


def pretraining_facts(model: Path) -> dict:
    """How much pretraining the model had, from its last checkpoint."""
    state = newest_trainer_state(model)
    return {key: state[key] for key in ("step", "tokens_seen", "elapsed_seconds") if key in state}


def main() -> None:
    (bench,) = parse_config([ValueBenchConfig])
    work, model = Path(bench.work_dir), Path(bench.model)
    models = {"pretrained": model, "random": random_twin(model, work / "random-init", bench.init_seed)}
    tasks = bench.tasks.split(",")
    # task by task, both models: a benchmark stopped early still leaves whole comparisons
    results = {side: {} for side in models}
    for task in tasks:
        for side, source in models.items():
            results[side][task] = finetune(bench, source, work / f"glue-{side}", task)
    summary = {side: {t: task_summary(r[t]) for t in tasks} for side, r in results.items()}
    average = {side: glue_score({t: r[t].median for t in tasks}) for side, r in results.items()}
    rows = []
    for t in tasks:
        p, r = summary["pretrained"][t], summary["random"][t]
        rows.append([t, *(median_and_range(s["scores"]) for s in (p, r)),
                     f"{p['median'] - r['median']:+.1f}"])  # fmt: skip
    rows.append(["GLUE-style average", f"{average['pretrained']:.1f}", f"{average['random']:.1f}",
                 f"{average['pretrained'] - average['random']:+.1f}"])  # fmt: skip
    header = [
        f"task (dev score, median (min to max) over {len(bench.seeds.split(','))} seeds)",
        "pretrained",
        "random init",
        "difference",
    ]
    record = {
        "config": asdict(bench),
        "pretraining": pretraining_facts(model),
        "tasks": summary,
        "glue_average": average,
        "runs": {side: {t: [asdict(run) for run in r[t].runs] for t in tasks} for side, r in results.items()},
    }
    save_result("glue_pretraining_value", record, header, rows, Path(bench.results_dir))


if __name__ == "__main__":
    main()
