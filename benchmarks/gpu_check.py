"""The first thing to run on a GPU machine (`make gpu-check`, a few minutes): does the recipe keep the GPU busy, and
does a run resume exactly under DDP and DeepSpeed?

1. The GPU's bf16 peak, measured in the same run: the mean of timed 8192^3 bf16 matmuls.
2. bert-base, bf16, length 128, `--dataloader_num_workers auto`, on one GPU through the recipe's `Pretrainer`: real
   (non-padding) tokens/s, MFU against that peak, data_wait_fraction, and host syncs per optimizer step counted
   with `torch.cuda.set_sync_debug_mode` (a long run less a short one, so set-up and the final save cancel out).
3. With 2 or more GPUs: DDP and DeepSpeed ZeRO-2 on 2 GPUs (`accelerate launch`), each saved at its middle step and
   resumed from there in a fresh directory: tokens/s, and how far each resumed step's loss is from the
   uninterrupted run's. The first resumed step must match to 1e-5 (same weights, batch and dropout state); later
   steps may drift by float atomics in CUDA's backward kernels (embedding and index_select gradients), within 5e-3.

Prints one table and writes benchmarks/results/gpu_check.json. The suite runs it on the CPU
(`--device cpu --size tiny --processes 2`, gloo) so that every part of it is tested where no GPU is.

    python benchmarks/gpu_check.py                      # on a GPU machine
    python benchmarks/gpu_check.py --device cpu --size tiny --processes 2 --results_dir /tmp/check
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, GradientState
from bench_setup import SIZES, VOCAB, model_flops_per_token
from reporting import DEMO_CORPUS, REPO_ROOT, RESULTS_DIR, save_result

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.modeling import ModelConfig
from bert_recipes.tokenization import TokenizerConfig, save_tokenizer, train_tokenizer
from bert_recipes.trainer import Pretrainer, TrainConfig

PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"
CONFIGS = REPO_ROOT / "accelerate_configs"
# (name, accelerate config on GPUs, on CPUs)
BACKENDS = {"ddp": ("multi_gpu.yaml", "multi_cpu.yaml"), "zero2": ("deepspeed_zero2.yaml", "deepspeed_zero2.yaml")}
FIRST_STEP_TOLERANCE, LATER_STEPS_TOLERANCE = 1e-5, 5e-3


@dataclass
class CheckConfig:
    device: str = field(default="cuda", metadata={"help": "cuda (the check) or cpu (the suite's test of it)."})
    size: str = field(default="base", metadata={"help": f"BERT size: {', '.join(SIZES)}."})
    batch_size: int = field(default=128, metadata={"help": "Sequences per process and optimizer step."})
    seq_length: int = field(default=128, metadata={"help": "Tokens per sequence."})
    short_steps: int = field(default=10, metadata={"help": "Steps of the short one-device run (sync baseline)."})
    long_steps: int = field(default=60, metadata={"help": "Steps of the long one-device run (measured)."})
    logging_steps: int = field(default=10, metadata={"help": "Steps per log line (the log line reads the device)."})
    resume_steps: int = field(default=10, metadata={"help": "Steps before and after the save of the 2-GPU runs."})
    processes: int = field(
        default=0, metadata={"help": "Processes of the DDP and ZeRO-2 runs (0: 2 where 2+ GPUs are, else none)."}
    )
    backends: str = field(default="ddp,zero2", metadata={"help": "Multi-process runs: ddp, zero2 or both."})
    tokenizer: str = field(default="", metadata={"help": "Tokenizer directory (default: one trained on the corpus)."})
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus to pretrain on."})
    work_dir: str = field(default="runs/gpu_check", metadata={"help": "Where the runs and the tokenizer go."})
    results_dir: str = field(default=str(RESULTS_DIR), metadata={"help": "Where gpu_check.json is written."})


def device_peak_flops(device: str) -> float:
    """bf16 FLOP/s of large matmuls on the device: the mean of 10 after 3 warm-ups (a CPU: the fastest of 5
    smaller ones, as benchmarks/pretrain_throughput.py measures)."""
    n, repeats = (8192, 10) if device == "cuda" else (1024, 5)
    a = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=device)
    for _ in range(3):
        a @ b
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ b
        end.record()
        end.synchronize()
        return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000)
    fastest = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        a @ b
        fastest = min(fastest, time.perf_counter() - began)
    return 2 * n**3 / fastest


def check_tokenizer(check: CheckConfig) -> str:
    if check.tokenizer:
        return check.tokenizer
    out = Path(check.work_dir) / "tokenizer"
    if not (out / "tokenizer.json").is_file():
        with gzip.open(check.corpus, "rt", encoding="utf-8") as lines:
            texts = (json.loads(line)["text"] for line in lines)
            batches = iter(lambda: list(itertools.islice(texts, 500)), [])
            save_tokenizer(train_tokenizer(batches, TokenizerConfig(vocab_size=8000)), out)
    return str(out)


def recipe_args(check: CheckConfig, tokenizer: str, out: Path, steps: int, *extra: str) -> list[str]:
    layers, hidden = SIZES[check.size]
    precision = "bf16" if check.device == "cuda" else "no"
    return [
        "--train_files", check.corpus, "--tokenizer_name_or_path", tokenizer, "--output_dir", str(out),
        "--hidden_size", str(hidden), "--num_hidden_layers", str(layers),
        "--num_attention_heads", str(hidden // 64), "--intermediate_size", str(4 * hidden),
        "--vocab_size", str(VOCAB), "--max_seq_length", str(check.seq_length),
        "--per_device_train_batch_size", str(check.batch_size), "--max_steps", str(steps),
        "--eval_steps", "0", "--save_steps", "0", "--report_to", "none", "--eval_every_nth_document", "0",
        "--mixed_precision", precision, "--dataloader_num_workers", "auto", "--seed", "1", *extra,
    ]  # fmt: skip


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def pretrain_counting_syncs(args: list[str], device: str) -> tuple[list[dict], int | None]:
    """One in-process run: its metrics records, and the host syncs CUDA saw in it (None on a CPU)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    configs = parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args)
    if device != "cuda":
        Pretrainer(*configs).run()
        return records(Path(configs[-1].output_dir)), None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            Pretrainer(*configs).run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return records(Path(configs[-1].output_dir)), syncs


def steady(values: list[float], skip: int = 1) -> float:
    # the first log windows hold CUDA's and the workers' start
    return statistics.median(values[skip:] or values)


def one_device_row(check: CheckConfig, tokenizer: str, peak: float) -> dict:
    work = Path(check.work_dir)
    logging = ("--logging_steps", str(check.logging_steps), "--overwrite_output_dir", "true")
    _, short = pretrain_counting_syncs(recipe_args(check, tokenizer, work / "short", check.short_steps, *logging),
                                       check.device)  # fmt: skip
    logged, long = pretrain_counting_syncs(recipe_args(check, tokenizer, work / "long", check.long_steps, *logging),
                                           check.device)  # fmt: skip
    tokens_per_second = steady([r["tokens_per_second"] for r in logged])
    layers, hidden = SIZES[check.size]
    return {
        "run": f"1 {check.device}",
        "processes": 1,
        "tokens_per_second": tokens_per_second,
        "mfu": tokens_per_second * model_flops_per_token(layers, hidden, check.seq_length) / peak,
        "data_wait_fraction": steady([r["data_wait_fraction"] for r in logged]),
        "host_syncs_per_step": None if long is None else (long - short) / (check.long_steps - check.short_steps),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(check: CheckConfig, backend: str, processes: int, args: list[str]) -> None:
    config = BACKENDS[backend][0 if check.device == "cuda" else 1]
    precision = ("--mixed_precision", "no") if check.device == "cpu" else ()
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
        "--num_processes", str(processes), "--main_process_port", str(free_port()), *precision, str(PRETRAIN), *args,
    ]  # fmt: skip
    # two CPU processes on a small machine: one thread each, or they fight over the cores
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if check.device == "cpu" else None
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"error: {backend} run failed ({' '.join(command)}):\n{done.stderr[-3000:]}")


def resume_row(check: CheckConfig, tokenizer: str, backend: str, processes: int, peak: float) -> dict:
    """The run saved at its middle step, and resumed from that checkpoint in a fresh directory."""
    n, work = check.resume_steps, Path(check.work_dir) / backend
    flags = ("--save_steps", str(n), "--logging_steps", "1")
    whole, resumed = work / "whole", work / "resumed"
    launch(
        check, backend, processes, recipe_args(check, tokenizer, whole, 2 * n, *flags, "--overwrite_output_dir", "true")
    )
    shutil.rmtree(resumed, ignore_errors=True)
    shutil.copytree(whole / f"checkpoint-{n}", resumed / f"checkpoint-{n}")
    resume = recipe_args(check, tokenizer, resumed, 2 * n, *flags, "--resume_from_checkpoint", "latest")
    launch(check, backend, processes, resume)
    expected = {r["step"]: r["loss"] for r in records(whole)}
    got = {r["step"]: r["loss"] for r in records(resumed)}
    if sorted(got) != list(range(n + 1, 2 * n + 1)):
        raise SystemExit(f"error: the resumed {backend} run logged steps {sorted(got)}, not {n + 1} to {2 * n}")
    differences = [abs(got[s] - expected[s]) for s in sorted(got)]
    layers, hidden = SIZES[check.size]
    logged = records(whole)
    tokens_per_second = steady([r["tokens_per_second"] for r in logged], skip=2)
    return {
        "run": f"{backend} x{processes}",
        "processes": processes,
        "tokens_per_second": tokens_per_second,
        "mfu": tokens_per_second * model_flops_per_token(layers, hidden, check.seq_length) / (peak * processes),
        "data_wait_fraction": steady([r["data_wait_fraction"] for r in logged], skip=2),
        "resumed_loss_differences": differences,
        "resume_exact": differences[0] <= FIRST_STEP_TOLERANCE and max(differences) <= LATER_STEPS_TOLERANCE,
    }


def multi_process_runs(check: CheckConfig) -> tuple[int, list[str]]:
    """How many processes the DDP and ZeRO-2 runs get, and what is not run (with why)."""
    gpus = torch.cuda.device_count() if check.device == "cuda" else 0
    processes = check.processes or (2 if gpus >= 2 else 0)
    if check.device == "cuda" and processes > gpus:
        return 0, [f"DDP and ZeRO-2 on {processes} GPUs: this machine has {gpus}"]
    if processes == 0:
        return 0, [f"DDP and ZeRO-2 on 2 GPUs: this machine has {gpus}"]
    not_run = []
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        not_run.append("ZeRO-2: deepspeed is not installed (pip install -e .[deepspeed])")
    return processes, not_run


def main(argv: list[str]) -> None:
    (check,) = parse_config([CheckConfig], argv)
    if check.device not in ("cuda", "cpu") or check.size not in SIZES:
        raise UsageError(f"--device is cuda or cpu and --size one of {', '.join(SIZES)}")
    if check.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA GPU: run on a GPU machine or pass --device cpu")
    began = time.perf_counter()
    tokenizer = check_tokenizer(check)
    peak = device_peak_flops(check.device)
    rows = [one_device_row(check, tokenizer, peak)]
    processes, not_run = multi_process_runs(check)
    for backend in check.backends.split(",") if processes else []:
        if backend == "zero2" and any(reason.startswith("ZeRO-2") for reason in not_run):
            continue
        rows.append(resume_row(check, tokenizer, backend, processes, peak))
    name = torch.cuda.get_device_name() if check.device == "cuda" else "cpu"
    result = {
        "device": name,
        "bf16_peak_tflops": peak / 1e12,
        "config": asdict(check),
        "not_run": not_run,
        "minutes": (time.perf_counter() - began) / 60,
        "rows": rows,
    }
    header = ["run", "tokens/s", "MFU (bf16 peak)", "data_wait_fraction", "host syncs / step",
              "resumed loss - uninterrupted (first / largest)", "resume"]  # fmt: skip
    table = [
        [r["run"], f"{r['tokens_per_second']:,.0f}", f"{r['mfu']:.1%}", f"{r['data_wait_fraction']:.3f}",
         "-" if r.get("host_syncs_per_step") is None else f"{r['host_syncs_per_step']:.2f}",
         f"{r['resumed_loss_differences'][0]:.1e} / {max(r['resumed_loss_differences']):.1e}"
         if "resumed_loss_differences" in r else "-",
         ("exact" if r["resume_exact"] else "DIFFERS") if "resume_exact" in r else "-"]
        for r in rows
    ]  # fmt: skip
    print(f"{name}: bf16 peak {peak / 1e12:.1f} TFLOP/s; bert-{check.size}, length {check.seq_length}, "
          f"{check.batch_size} sequences per process; {result['minutes']:.1f} minutes")  # fmt: skip
    for reason in not_run:
        print(f"not run: {reason}")
    save_result("gpu_check", result, header, table, directory=Path(check.results_dir))
    if not all(r.get("resume_exact", True) for r in rows):
        raise SystemExit("error: a resumed run's losses differ from the uninterrupted run's (table above)")


if __name__ == "__main__":
    run_cli(main)
