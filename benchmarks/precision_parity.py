"""Does bf16 cost quality? The same pretraining run (size, data, seed, steps) in fp32 and in bf16, compared on held-out
masked-LM loss, and one GLUE sample task fine-tuned from the fp32 model in both precisions over several seeds.

    python benchmarks/precision_parity.py --size mini --steps 300 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import PartialState
from bench_setup import pretrain_records
from reporting import DEMO_CORPUS, REPO_ROOT, median_and_range, save_result, seed_points

from bert_recipes.config import parse_config
from bert_recipes.glue import GlueConfig, run_glue
from bert_recipes.glue.tasks import TASKS


@dataclass
class BenchConfig:
    size: str = field(default="mini", metadata={"help": "BERT size to pretrain."})
    steps: int = field(default=300, metadata={"help": "Pretraining steps per precision."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    eval_examples: int = field(default=1024, metadata={"help": "Held-out examples scored at the end."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus to pretrain on."})
    glue_task: str = field(
        default="stsb",
        metadata={"help": "GLUE sample task fine-tuned in both precisions (STS-B: a regression, the most sensitive)."},
    )
    glue_seeds: str = field(default="1,2,3", metadata={"help": "Fine-tuning seeds per precision."})
    glue_epochs: float = field(default=10.0, metadata={"help": "Fine-tuning epochs."})
    glue_learning_rate: float = field(default=3e-4, metadata={"help": "Fine-tuning peak learning rate."})


def final_eval(precision: str, bench: BenchConfig, out: Path) -> dict:
    records = pretrain_records(
        bench.size, out, bench.tokenizer, bench.batch_size, bench.seq_length, bench.steps,
        "--train_files", bench.corpus, "--mixed_precision", precision, "--eval_steps", str(bench.steps),
        "--eval_every_nth_document", "20", "--eval_examples", str(bench.eval_examples), "--learning_rate", "1.0e-3",
        "--warmup_steps", "30",
    )  # fmt: skip
    evaluation = [r for r in records if "eval_mlm_loss" in r][-1]
    tokens_per_second = [r["tokens_per_second"] for r in records if "tokens_per_second" in r]
    return {**evaluation, "median_tokens_per_second": sorted(tokens_per_second)[len(tokens_per_second) // 2]}


def finetune(model_dir: Path, precision: str, bench: BenchConfig, out: Path) -> dict:
    config = GlueConfig.from_values(
        model_name_or_path=str(model_dir), task_name=bench.glue_task, data_dir=str(REPO_ROOT / "data" / "glue"),
        output_dir=str(out), seeds=bench.glue_seeds, num_train_epochs=bench.glue_epochs,
        learning_rate=bench.glue_learning_rate, per_device_train_batch_size=16, max_seq_length=128,
        mixed_precision=precision, save_strategy="no", report_to="none", disable_tqdm=True,
    )  # fmt: skip
    result = run_glue(config)[bench.glue_task]
    return {"median": result.median, "low": result.low, "high": result.high, "points_by_seed": seed_points(result)}


def within_seed_noise(a: list[float], b: list[float]) -> bool:
    """Each side's median score lies inside the other side's min-max over seeds."""
    return min(b) <= statistics.median(a) <= max(b) and min(a) <= statistics.median(b) <= max(a)


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    with tempfile.TemporaryDirectory() as tmp:
        runs = {precision: final_eval(precision, bench, Path(tmp) / precision) for precision in ("no", "bf16")}
        # both fine-tunings start from the fp32 model: only the fine-tuning precision differs
        glue = {p: finetune(Path(tmp) / "no", p, bench, Path(tmp) / f"glue-{p}") for p in ("no", "bf16")}
    fp32, bf16 = runs["no"], runs["bf16"]
    relative = (bf16["eval_mlm_loss"] - fp32["eval_mlm_loss"]) / fp32["eval_mlm_loss"]
    # the table's cells and the noise check read the same per-seed points
    points = {precision: list(g["points_by_seed"].values()) for precision, g in glue.items()}
    noise = within_seed_noise(points["no"], points["bf16"])
    result = {
        "config": asdict(bench), "fp32": fp32, "bf16": bf16, "relative_mlm_loss_difference": relative,
        "glue": {"fp32": glue["no"], "bf16": glue["bf16"], "within_seed_noise": noise},
    }  # fmt: skip
    task = TASKS[bench.glue_task].folder
    header = ["precision", "held-out MLM loss", "MLM accuracy", "NSP accuracy", "median tokens/s",
              f"{task} dev score, fine-tuned from the fp32 model in this precision (median (min to max), "
              f"{len(points['no'])} seeds)"]  # fmt: skip
    rows = [
        [name, f"{run['eval_mlm_loss']:.4f}", f"{run['eval_mlm_accuracy']:.4f}", f"{run['eval_nsp_accuracy']:.4f}",
         f"{run['median_tokens_per_second']:,.0f}", median_and_range(points[precision])]
        for name, precision, run in (("fp32", "no", fp32), ("bf16", "bf16", bf16))
    ]  # fmt: skip
    speed = bf16["median_tokens_per_second"] / fp32["median_tokens_per_second"]
    rows.append(
        ["bf16 vs fp32", f"{relative:+.2%}", "", "", f"{speed:.2f}x", "within seed noise" if noise else "NOT within"]
    )
    save_result("precision_parity", result, header, rows)


if __name__ == "__main__":
    main()
