"""What several benchmarks set up alike: the BERT sizes they measure and the work each does per token, an in-process
pretraining run of the recipe (its metrics, or the pretrained model the fine-tuning parities start from), per-step
timing of a transformers `Trainer`, and slices of a corpus (a first few megabytes; training text and held-out
documents). What they leave behind is reporting.py's job."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from accelerate.state import AcceleratorState, GradientState
from transformers import TrainerCallback

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig

# (layers, hidden size) of the sizes of Turc et al. 2019 and BERT-base; heads hidden/64, feed-forward 4x hidden
SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
VOCAB = 30522


def model_flops_per_token(layers: int, hidden: int, seq: int, mlm_fraction: float = 0.15) -> float:
    """Training FLOPs (3x forward) per real token of the work the model must do: the encoder (dense layers and
    attention), the pooler and NSP head per sequence, and the MLM head on the masked positions only."""
    encoder = layers * (2 * 12 * hidden * hidden + 2 * 2 * seq * hidden)
    pooler_nsp = (2 * hidden * hidden + 2 * 2 * hidden) / seq
    mlm_head = mlm_fraction * (2 * hidden * hidden + 2 * hidden * VOCAB)
    return 3 * (encoder + pooler_nsp + mlm_head)


def reset_accelerate_state() -> None:
    """Forget the Accelerator of a run made in this process: the next run (a Pretrainer or a Trainer) sets up its
    own, and Accelerate's state is a process-wide singleton."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def pretrain_records(
    size: str, out: Path, tokenizer: str, batch_size: int, seq_length: int, steps: int, *extra: str
) -> list[dict]:
    """Run the recipe's Pretrainer for `steps` steps of one BERT size and return its metrics.jsonl records."""
    layers, hidden = SIZES[size]
    args = [
        "--tokenizer_name_or_path", tokenizer, "--output_dir", str(out), "--overwrite_output_dir", "true",
        "--hidden_size", str(hidden), "--num_hidden_layers", str(layers), "--vocab_size", str(VOCAB),
        "--max_seq_length", str(seq_length), "--per_device_train_batch_size", str(batch_size),
        "--max_steps", str(steps), "--logging_steps", "1", "--eval_steps", "0", "--save_steps", "0",
        "--report_to", "none", "--eval_every_nth_document", "0", *extra,
    ]  # fmt: skip
    reset_accelerate_state()
    Pretrainer(*parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args)).run()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def starting_model(bench, folder: Path) -> str:
    """The model a fine-tuning parity starts from: `bench.model_name_or_path`, or one the recipe pretrains in `folder`
    (`bench.pretrain_size` for `bench.pretrain_steps` steps at `bench.pretrain_learning_rate` on `bench.corpus`;
    fp32, batch 32, length 128, seed 42)."""
    if bench.model_name_or_path:
        return bench.model_name_or_path
    pretrain_records(
        bench.pretrain_size, folder, bench.tokenizer, 32, 128, bench.pretrain_steps, "--train_files", bench.corpus,
        "--learning_rate", str(bench.pretrain_learning_rate), "--mixed_precision", "no", "--seed", "42",
    )  # fmt: skip
    reset_accelerate_state()
    return str(folder)


class StepTimer(TrainerCallback):
    """Seconds of each optimizer step of a transformers Trainer."""

    def __init__(self):
        self.seconds: list[float] = []
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds.append(now - self.last)
        self.last = now


def first_megabytes(source: str, megabytes: float, folder: Path) -> tuple[str, int, int]:
    """The first documents of `source` holding at least `megabytes` of text, as an uncompressed jsonl file."""
    path, chars, documents = folder / "corpus.jsonl", 0, 0
    with gzip.open(source, "rt", encoding="utf-8") as src, path.open("w", encoding="utf-8") as out:
        for line in src:
            out.write(line)
            chars += len(json.loads(line)["text"])
            documents += 1
            if chars >= megabytes * 1e6:
                break
    return str(path), chars, documents


def split_corpus(corpus: str, train_characters: int, held_out_documents: int, work: Path) -> tuple[Path, Path]:
    """train.jsonl: the first documents up to `train_characters`; held_out.jsonl: the last `held_out_documents`
    (so that no run trains on a held-out document, nor its tokenizer)."""
    opener = gzip.open if corpus.endswith(".gz") else open
    with opener(corpus, "rt", encoding="utf-8") as handle:
        lines = handle.readlines()
    held_out, rest = lines[-held_out_documents:], lines[:-held_out_documents]
    train, characters = [], 0
    for line in rest:
        if characters >= train_characters:
            break
        train.append(line)
        characters += len(json.loads(line)["text"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "train.jsonl").write_text("".join(train), encoding="utf-8")
    (work / "held_out.jsonl").write_text("".join(held_out), encoding="utf-8")
    return work / "train.jsonl", work / "held_out.jsonl"
