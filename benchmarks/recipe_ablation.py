"""What each lever of the budget recipes (cramming, MosaicBERT, ModernBERT) buys at equal wall-clock.

Every run is recipes/pretrain.py with recipes/configs/bert-mini.yaml and `--no_nsp true` (the baseline), changed by
one lever, for the same `--max_train_time`; then the winning levers together. Every final model is scored by
recipes/evaluate_mlm.py's evaluator on the same held-out documents at 15% masking (whatever rate it trained with).
The baseline runs twice: the difference of the two is the run-to-run noise, and a lever wins only when it beats the
better baseline by more than that. Checkpoints every `--checkpoint_every_seconds` of the baseline and the combination
are scored too, for the plot of held-out loss against minutes.

Runs recorded in the results file under the same settings are kept (and a trained model in --work_dir is scored
rather than trained again), so the ablation can be run in parts, a few levers per call:

    python benchmarks/recipe_ablation.py --corpus ../shared/data/gutenberg-large.jsonl.gz --budget_seconds 600

Writes benchmarks/results/recipe_ablation.json and .png; the README shows both. The same levers together against
one baseline at a longer budget, in a record of its own:

    python benchmarks/recipe_ablation.py --budget_seconds 1800 --checkpoint_every_seconds 300 --levers "" \
        --combine dropout_0,mask_30,wsd --baseline_runs 1 --name recipe_ablation_30min
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench_setup import split_corpus
from reporting import REPO_ROOT, RESULTS_DIR, save_result

from bert_recipes.checkpointing import list_checkpoints, read_trainer_state
from bert_recipes.config import parse_config
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.evaluation import HeldOutDataConfig, MlmEvalConfig, evaluate_checkpoints

BASELINE = ("--config", "recipes/configs/bert-mini.yaml", "--no_nsp", "true")
# each lever as the flags it adds to the baseline; bert-mini.yaml's peak rate is already 1e-3
LEVERS = {
    "dropout_0": ("--hidden_dropout_prob", "0", "--attention_probs_dropout_prob", "0"),
    "mask_20": ("--mlm_probability", "0.2"),
    "mask_30": ("--mlm_probability", "0.3"),
    "mask_40": ("--mlm_probability", "0.4"),
    "wsd": ("--lr_scheduler_type", "wsd"),
    "budget_triangle": ("--lr_scheduler_type", "linear", "--warmup_ratio", "0.75"),
    "lr_2e-3": ("--learning_rate", "2e-3"),
    # 2e-3 stalls on the unigram plateau (training loss 6.5 from step 150 on): is 1e-3 already past the best rate?
    "lr_5e-4": ("--learning_rate", "5e-4"),
    # the same global batch of 32 as the baseline, reached from 8 over the first 60% of the budget
    "batch_warmup": (
        "--per_device_train_batch_size",
        "8",
        "--gradient_accumulation_steps",
        "4",
        "--batch_size_warmup_ratio",
        "0.6",
    ),
    "clip_0.5": ("--max_grad_norm", "0.5"),
    # half the global batch: twice the optimizer steps in the budget, which early training may use better
    "batch_16": ("--per_device_train_batch_size", "16"),
    "nsp": ("--no_nsp", "false"),
}
# the settings a recorded run must share with this call to count
SETTINGS = ("corpus", "tokenizer", "train_characters", "held_out_documents", "eval_sequences", "budget_seconds",
            "checkpoint_every_seconds", "extra", "seed")  # fmt: skip
# levers that set the same flag: only the best of each family joins the combination
FAMILIES = ({"mask_20", "mask_30", "mask_40"}, {"wsd", "budget_triangle"})


@dataclass
class AblationConfig:
    corpus: str = field(
        default=str(REPO_ROOT.parent / "shared" / "data" / "gutenberg-large.jsonl.gz"),
        metadata={"help": "jsonl(.gz) corpus with a text field; its last --held_out_documents are held out."},
    )
    tokenizer: str = field(
        default="runs/quality/tokenizer-30522",
        metadata={"help": "Tokenizer of every run; trained on the training slice when it does not exist."},
    )
    train_characters: int = field(default=40_000_000, metadata={"help": "Characters of training text (a slice)."})
    held_out_documents: int = field(default=300, metadata={"help": "Documents at the corpus's end held out."})
    eval_sequences: int = field(default=1024, metadata={"help": "Held-out sequences scored per model."})
    budget_seconds: float = field(default=600.0, metadata={"help": "Training seconds per run."})
    checkpoint_every_seconds: float = field(default=60.0, metadata={"help": "Seconds between plotted checkpoints."})
    levers: str = field(default=",".join(LEVERS), metadata={"help": "Comma list of the levers to run."})
    extra: str = field(
        default="", metadata={"help": "key=value,... added to every run's flags (the suite's tiny model)."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of every run and of the held-out masks."})
    combine: str = field(
        default="", metadata={"help": "Levers trained together after those alone (comma list); empty: the winners."}
    )
    baseline_runs: int = field(
        default=2,
        metadata={"help": "Baseline runs: 2 measure the run-to-run noise that decides winners; 1 saves a long run."},
    )
    name: str = field(
        default="recipe_ablation", metadata={"help": "Name of the results file and plot (another budget, another)."}
    )
    work_dir: str = field(default="", metadata={"help": "Data slices, runs and their scores; empty: runs/NAME."})
    results_dir: str = field(default=str(RESULTS_DIR), metadata={"help": "Where the JSON record and PNG go."})


def ensure_tokenizer(config: AblationConfig, train_file: Path) -> None:
    """The 30,522-entry tokenizer of every run, trained on the training slice when --tokenizer does not exist yet
    (so the held-out documents never shape the vocabulary)."""
    if (Path(config.tokenizer) / "tokenizer.json").is_file():
        return
    command = [sys.executable, str(REPO_ROOT / "tokenizer" / "train_tokenizer.py"), "--train_files", str(train_file),
               "--vocab_size", "30522", "--min_frequency", "2", "--output_dir", config.tokenizer]  # fmt: skip
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def extra_flags(extra: str) -> list[str]:
    """`hidden_size=32,num_hidden_layers=2` as `--hidden_size 32 --num_hidden_layers 2`."""
    pairs = [item.split("=", 1) for item in extra.split(",") if item]
    return [token for key, value in pairs for token in (f"--{key}", value)]


def train(config: AblationConfig, train_file: Path, out: Path, flags: tuple[str, ...]) -> None:
    """One run for the budget, unless a finished one is there (its final model, saved after the last checkpoint)."""
    if (out / "model.safetensors").is_file():
        return
    command = [
        sys.executable, str(REPO_ROOT / "recipes" / "pretrain.py"), *BASELINE, "--train_files", str(train_file),
        "--tokenizer_name_or_path", config.tokenizer, "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--max_steps", "100000000", "--max_train_time", str(config.budget_seconds),
        "--save_every_seconds", str(config.checkpoint_every_seconds), "--save_steps", "0", "--save_total_limit", "0",
        "--eval_steps", "0", "--eval_every_nth_document", "0", "--report_to", "none", "--seed", str(config.seed),
        *flags, *extra_flags(config.extra),
    ]  # fmt: skip
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def held_out_losses(config: AblationConfig, held_out: Path, models: list[Path]) -> list[float]:
    """recipes/evaluate_mlm.py's MLM loss of each model on the same held-out blocks and masked positions (15%)."""
    metrics = evaluate_checkpoints(
        MlmEvalConfig(model_name_or_path=[str(m) for m in models], validation_files=[str(held_out)],
                      tokenizer_name_or_path=config.tokenizer, seed=config.seed),
        HeldOutDataConfig(no_nsp=True, max_seq_length=128, eval_examples=config.eval_sequences),
    )  # fmt: skip
    return [m["eval_mlm_loss"] for m in metrics]


def scored_run(config: AblationConfig, files: tuple[Path, Path], name: str, flags: tuple[str, ...], curve: bool):
    """Train (or find in --work_dir) one run and score its final model, and with `curve` each of its checkpoints."""
    out = Path(config.work_dir) / name
    train(config, files[0], out, flags)
    checkpoints = list_checkpoints(out)
    # one evaluator call: the held-out blocks are built and masked once for the final model and its checkpoints
    final_loss, *losses = held_out_losses(config, files[1], [out, *(checkpoints if curve else [])])
    record = {"run": name, "flags": list(flags), "steps": read_trainer_state(checkpoints[-1])["step"],
              "final_loss": final_loss}  # fmt: skip
    if curve:
        seconds = [read_trainer_state(c)["elapsed_seconds"] for c in checkpoints]
        record["curve"] = [list(point) for point in zip(seconds, losses, strict=True)]
    return record


def recorded_runs(path: Path, config: AblationConfig) -> dict[str, dict]:
    """The runs an earlier call recorded in the results file under the same settings: the ablation runs in parts,
    also on another day or machine, from the committed results."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    same = all(setting(record["config"], name) == setting(asdict(config), name) for name in SETTINGS)
    return record["runs"] if same else {}


def setting(config: dict, name: str) -> object:
    # files by name: the same corpus or tokenizer sits at another path on another machine or in another checkout
    return Path(config.get(name, "")).name if name in ("corpus", "tokenizer") else config.get(name)


def winners(runs: dict[str, dict], noise: float, best_baseline: float) -> list[str]:
    """Levers that beat the better baseline by more than the baseline's run-to-run difference, the best of each
    family of levers setting the same flag."""
    won = [name for name in LEVERS if name in runs and runs[name]["final_loss"] < best_baseline - noise]
    for family in FAMILIES:
        members = [name for name in won if name in family]
        won = [n for n in won if n not in members or n == min(members, key=lambda m: runs[m]["final_loss"])]
    return won


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    for r in runs:
        axes.plot([s / 60 for s, _ in r["curve"]], [loss for _, loss in r["curve"]], marker="o", label=r["run"])
    axes.set(xlabel="training minutes", ylabel="held-out MLM loss (15% masked)", title="bert-mini at equal wall-clock")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def lever_names(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in LEVERS]
    if unknown:
        raise UsageError(f"unknown lever(s) {', '.join(unknown)}: choose from {', '.join(LEVERS)}")
    return names


def verdict(runs: dict[str, dict], levers: list[str]) -> tuple[float | None, float | None, list[str] | None]:
    """The better baseline's loss, the run-to-run noise (the two baselines' difference) and the winning levers;
    each None while the runs it needs are pending."""
    baselines = [runs[name]["final_loss"] for name in ("baseline", "baseline_2") if name in runs]
    best_baseline = min(baselines) if baselines else None
    noise = abs(baselines[0] - baselines[1]) if len(baselines) == 2 else None
    complete = noise is not None and all(name in runs for name in levers)
    return best_baseline, noise, winners(runs, noise, best_baseline) if complete else None


def report(config: AblationConfig, runs: dict[str, dict]) -> None:
    """The results file, table and plot of the runs so far (written after every run, so a stopped call loses none)."""
    levers = lever_names(config.levers)
    best_baseline, noise, decided = verdict(runs, levers)
    complete, chosen = decided is not None, decided or []
    results_dir = Path(config.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    plot([r for r in runs.values() if "curve" in r], results_dir / f"{config.name}.png")
    header = ["run", "flags", "steps", "held-out MLM loss (15%)", "vs better baseline", "won"]
    rows = [
        [name, " ".join(r["flags"]) or "(bert-mini.yaml --no_nsp true)", f"{r['steps']:,}", f"{r['final_loss']:.3f}",
         "-" if best_baseline is None else f"{r['final_loss'] - best_baseline:+.3f}",
         "yes" if name in chosen else "-" if complete or config.baseline_runs < 2 else "pending"]
        for name, r in runs.items()
    ]  # fmt: skip
    baselines = ["baseline", "baseline_2"][: config.baseline_runs]
    pending = [name for name in (*baselines, *levers) if name not in runs]
    record = {"config": asdict(config), "noise": noise, "best_baseline": best_baseline, "winners": chosen,
              "pending": pending, "runs": runs}  # fmt: skip
    noise_text = "pending" if noise is None else f"{noise:.3f} nats"
    print(f"run-to-run noise (the two baselines): {noise_text}; winners: {', '.join(chosen) or 'none'}")
    save_result(config.name, record, header, rows, results_dir)


def main(argv: list[str] | None = None) -> None:
    (config,) = parse_config([AblationConfig], argv)
    levers, together = lever_names(config.levers), lever_names(config.combine)
    # a run folder holds a finished model that is scored, not retrained: another budget needs other folders
    config.work_dir = config.work_dir or f"runs/{config.name}"
    runs = recorded_runs(Path(config.results_dir) / f"{config.name}.json", config)
    files = split_corpus(config.corpus, config.train_characters, config.held_out_documents, Path(config.work_dir))
    ensure_tokenizer(config, files[0])

    def run(name: str, flags: tuple[str, ...], curve: bool = False, folder: str = "", **facts) -> None:
        kept = runs.get(name)
        if kept is None or (curve and "curve" not in kept) or any(kept.get(k) != v for k, v in facts.items()):
            runs[name] = {**scored_run(config, files, folder or name, flags, curve), **facts}
            report(config, runs)

    run("baseline", (), curve=True)
    if config.baseline_runs > 1:
        run("baseline_2", ())
    for name in levers:
        run(name, LEVERS[name])
    together = together or verdict(runs, levers)[2]
    if together:
        # another set of levers (winners added since) trains the combination again
        flags = tuple(flag for name in together for flag in LEVERS[name])
        run("combined", flags, curve=True, folder="combined+" + "+".join(together), levers=together)
    report(config, runs)


if __name__ == "__main__":
    run_cli(main)
