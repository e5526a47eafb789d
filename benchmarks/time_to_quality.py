"""Held-out MLM loss against wall-clock seconds: transformers' own way against this recipe, at equal time budgets.

(a) baseline: `benchmarks/mlm_trainer_baseline.py`, run_mlm.py's method (group_texts, DataCollatorForLanguageModeling,
    BertForMaskedLM, Trainer) at bf16, MLM only;
(b) recipe, `--no_nsp true` (MLM only, documents packed to full length);
(c) recipe with NSP (BERT's pairs); its MLM loss is compared, its NSP accuracy reported.
Same documents, tokenizer, architecture, batch, seed, linear schedule with 6% warmup, and the same budget per run; the
runs go one after the other. Each side picks the best of its --*_learning_rates by final loss; (c) uses (b)'s. Every
schedule is sized to its budget from a short calibration run of the same command. Checkpoints every
--checkpoint_every_seconds of training time are all scored by one evaluator (recipes/evaluate_mlm.py's) on the same
held-out documents and masked positions, packed to full length as (a) and (b) train.

    python benchmarks/time_to_quality.py --tokenizer runs/tokenizer-30522 \
        --corpus ../shared/data/gutenberg-large.jsonl.gz --budget_seconds 600

Writes benchmarks/results/time_to_quality.json and .png; the README shows both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from bench_setup import SIZES, split_corpus
from mlm_trainer_baseline import TIMELINE
from reporting import REPO_ROOT, RESULTS_DIR, save_result

from bert_recipes.checkpointing import list_checkpoints, read_trainer_state
from bert_recipes.config import parse_config
from bert_recipes.evaluation import HeldOutDataConfig, MlmEvalConfig, evaluate_checkpoints

SIDES = {"baseline": "(a) Trainer, run_mlm.py's way", "recipe": "(b) recipe, --no_nsp", "recipe_nsp": "(c) recipe, NSP"}


@dataclass
class QualityBenchConfig:
    corpus: str = field(
        default=str(REPO_ROOT.parent / "shared" / "data" / "gutenberg-large.jsonl.gz"),
        metadata={"help": "jsonl(.gz) corpus with a text field; its last documents are held out."},
    )
    tokenizer: str = field(default="runs/tokenizer-30522", metadata={"help": "Tokenizer every run uses."})
    train_characters: int = field(default=40_000_000, metadata={"help": "Characters of training text (a slice)."})
    held_out_documents: int = field(default=200, metadata={"help": "Documents at the corpus's end held out."})
    eval_sequences: int = field(default=1024, metadata={"help": "Held-out sequences scored per checkpoint."})
    size: str = field(default="mini", metadata={"help": "BERT size: tiny, mini or small."})
    batch_size: int = field(default=32, metadata={"help": "Sequences per step, every run."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence, every run."})
    budget_seconds: float = field(default=600.0, metadata={"help": "Training seconds per run."})
    checkpoint_every_seconds: float = field(default=120.0, metadata={"help": "Seconds between scored checkpoints."})
    calibration_steps: int = field(default=40, metadata={"help": "Steps timed to size each schedule to the budget."})
    baseline_learning_rates: str = field(default="5e-4,1e-3", metadata={"help": "Peak LRs tried for (a)."})
    recipe_learning_rates: str = field(default="1e-3,2e-3", metadata={"help": "Peak LRs tried for (b)."})
    nsp: bool = field(default=True, metadata={"help": "Also run (c), the recipe with NSP."})
    seed: int = field(default=42, metadata={"help": "Seed of every run and of the held-out masks' builder."})
    work_dir: str = field(default="runs/time_to_quality", metadata={"help": "Data slices, runs and checkpoints."})
    results_dir: str = field(default=str(RESULTS_DIR), metadata={"help": "Where the JSON record and PNG go."})


def side_command(side: str, config: QualityBenchConfig, train: Path, out: Path, rate: float, steps: int) -> list[str]:
    """The command of one run; a budget of 0 (calibration) runs `steps` steps with one checkpoint at the end."""
    layers, hidden = SIZES[config.size]
    common = {
        "--seed": config.seed,
        "--learning_rate": rate,
        "--max_steps": steps,
        "--max_seq_length": config.seq_length,
    }
    if side == "baseline":
        flags = {
            "--train_file": train, "--tokenizer": config.tokenizer, "--output_dir": out, "--hidden_size": hidden,
            "--num_hidden_layers": layers, "--batch_size": config.batch_size, "--warmup_ratio": 0.06,
            "--budget_seconds": config.budget_seconds, "--save_every_seconds": config.checkpoint_every_seconds,
        }  # fmt: skip
        script = REPO_ROOT / "benchmarks" / "mlm_trainer_baseline.py"
    else:
        flags = {
            "--train_files": train, "--tokenizer_name_or_path": config.tokenizer, "--output_dir": out,
            "--overwrite_output_dir": "true", "--hidden_size": hidden, "--num_hidden_layers": layers,
            "--per_device_train_batch_size": config.batch_size, "--warmup_ratio": 0.06, "--lr_scheduler_type": "linear",
            "--max_train_time": config.budget_seconds, "--save_every_seconds": config.checkpoint_every_seconds,
            "--save_steps": 0, "--save_total_limit": 0, "--eval_steps": 0, "--eval_every_nth_document": 0,
            "--logging_steps": 5, "--report_to": "none", "--no_nsp": str(side == "recipe").lower(),
        }  # fmt: skip
        script = REPO_ROOT / "recipes" / "pretrain.py"
    args = [str(a) for pair in {**flags, **common}.items() for a in pair]
    return [sys.executable, str(script), *args]


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def step_seconds(side: str, out: Path) -> list[tuple[int, float]]:
    """(step, training seconds) as the run recorded them."""
    if side == "baseline":
        return [(int(s), t) for s, t in json.loads((out / TIMELINE).read_text())["steps"]]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["elapsed_seconds"]) for r in records if "elapsed_seconds" in r]


def checkpoint_seconds(side: str, out: Path) -> list[tuple[Path, float]]:
    """Each checkpoint with the training second it was written at."""
    if side == "baseline":
        saves = json.loads((out / TIMELINE).read_text())["checkpoints"]
        return [(out / f"checkpoint-{int(step)}", seconds) for step, seconds in saves]
    return [(p, read_trainer_state(p)["elapsed_seconds"]) for p in list_checkpoints(out)]


def steps_per_second(side: str, config: QualityBenchConfig, train: Path, work: Path, rate: float) -> float:
    """Speed over the second half of a short run of the same command (the first steps warm up)."""
    out = work / f"calibrate-{side}"
    calibration = QualityBenchConfig(**{**asdict(config), "budget_seconds": 0.0, "checkpoint_every_seconds": 0.0})
    run(side_command(side, calibration, train, out, rate, config.calibration_steps))
    timeline = step_seconds(side, out)
    (first_step, first), (last_step, last) = timeline[len(timeline) // 2], timeline[-1]
    return (last_step - first_step) / (last - first)


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first second the held-out loss is at or below `target`, interpolated between checkpoints."""
    previous = None
    for seconds, loss in curve:
        if loss <= target:
            if previous is None:
                return seconds
            (s0, l0) = previous
            return s0 + (l0 - target) / (l0 - loss) * (seconds - s0)
        previous = (seconds, loss)
    return None


def held_out_metrics(config: QualityBenchConfig, held_out: Path, models: list[Path], nsp: bool) -> list[dict]:
    """recipes/evaluate_mlm.py's numbers for each model on the same held-out examples and masked positions."""
    return evaluate_checkpoints(
        MlmEvalConfig(
            model_name_or_path=[str(path) for path in models], validation_files=[str(held_out)],
            tokenizer_name_or_path=config.tokenizer, seed=config.seed,
        ),
        HeldOutDataConfig(no_nsp=not nsp, max_seq_length=config.seq_length, eval_examples=config.eval_sequences),
    )  # fmt: skip


def score(config: QualityBenchConfig, held_out: Path, runs: list[dict]) -> None:
    """Adds each run's curve: every checkpoint scored on the same full-length held-out blocks; a run trained with
    NSP also gets its final checkpoint's NSP accuracy on held-out sentence pairs."""
    points = [(r, path, seconds) for r in runs for path, seconds in r.pop("checkpoints")]
    metrics = held_out_metrics(config, held_out, [path for _, path, _ in points], nsp=False)
    for r in runs:
        r["curve"] = []
    for (r, path, seconds), m in zip(points, metrics, strict=True):
        r["curve"].append({"checkpoint": path.name, "step": int(path.name.split("-")[1]), "seconds": seconds, **m})
    for r in runs:
        r["steps"] = r["curve"][-1]["step"]
        if r["side"] == "recipe_nsp":
            final = Path(r["output_dir"]) / r["curve"][-1]["checkpoint"]
            r["held_out_nsp_accuracy"] = held_out_metrics(config, held_out, [final], nsp=True)[0]["eval_nsp_accuracy"]


def train_side(side: str, config: QualityBenchConfig, train: Path, work: Path, rates: list[float]) -> list[dict]:
    speed = steps_per_second(side, config, train, work, rates[0])
    runs = []
    for rate in rates:
        out = work / f"{side}-lr{rate:g}"
        steps = int(speed * config.budget_seconds)
        run(side_command(side, config, train, out, rate, steps))
        runs.append({"side": side, "learning_rate": rate, "max_steps": steps, "steps_per_second": speed,
                     "output_dir": str(out), "checkpoints": checkpoint_seconds(side, out)})  # fmt: skip
    return runs


def final_loss(run_record: dict) -> float:
    return run_record["curve"][-1]["eval_mlm_loss"]


def plot(runs: list[dict], path: Path, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for r in runs:
        seconds = [p["seconds"] / 60 for p in r["curve"]]
        losses = [p["eval_mlm_loss"] for p in r["curve"]]
        axes.plot(seconds, losses, marker="o", label=f"{SIDES[r['side']]}, lr {r['learning_rate']:g}")
    axes.axhline(target, color="grey", linestyle=":", linewidth=1, label="(a)'s final loss")
    axes.set(xlabel="training minutes", ylabel="held-out MLM loss", title="Held-out MLM loss at equal wall-clock")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    (config,) = parse_config([QualityBenchConfig])
    work = REPO_ROOT / config.work_dir
    train, held_out = split_corpus(config.corpus, config.train_characters, config.held_out_documents, work)
    runs = train_side("baseline", config, train, work, [float(r) for r in config.baseline_learning_rates.split(",")])
    runs += train_side("recipe", config, train, work, [float(r) for r in config.recipe_learning_rates.split(",")])
    score(config, held_out, runs)
    best = {side: min((r for r in runs if r["side"] == side), key=final_loss) for side in ("baseline", "recipe")}
    if config.nsp:
        nsp = train_side("recipe_nsp", config, train, work, [best["recipe"]["learning_rate"]])
        score(config, held_out, nsp)
        runs += nsp
        best["recipe_nsp"] = nsp[0]
    target = final_loss(best["baseline"])
    for r in runs:
        points = [(p["seconds"], p["eval_mlm_loss"]) for p in r["curve"]]
        r["seconds_to_baseline_loss"] = time_to_reach(points, target)
        r["chosen"] = r is best[r["side"]]
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    plot([best[side] for side in best], results_dir / "time_to_quality.png", target)
    header = ["run", "peak LR", "steps (of schedule)", "final held-out MLM loss", "perplexity", "NSP accuracy",
              "minutes to (a)'s final loss"]  # fmt: skip
    rows = [
        [SIDES[r["side"]] + (" (chosen)" if r["chosen"] else ""), f"{r['learning_rate']:g}",
         f"{r['steps']:,} ({r['max_steps']:,})",
         f"{final_loss(r):.3f}", f"{np.exp(final_loss(r)):.1f}",
         f"{r['held_out_nsp_accuracy']:.3f}" if "held_out_nsp_accuracy" in r else "-",
         "never" if r["seconds_to_baseline_loss"] is None else f"{r['seconds_to_baseline_loss'] / 60:.1f}"]
        for r in runs
    ]  # fmt: skip
    record = {"config": asdict(config), "baseline_final_loss": target, "runs": runs}
    save_result("time_to_quality", record, header, rows, results_dir)


if __name__ == "__main__":
    main()
