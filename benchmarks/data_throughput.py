"""Tokens per CPU-second of the pretraining data pipeline and of what users ran before it, on the whole demo corpus:

- streamed: one epoch of the trainer's TrainingStream (read, split, tokenize, pair, mask) with 0, 1, 2 workers;
- recipes/prepare_data.py with 1 and 2 processes (Parquet shards written);
- (a) transformers 4.57.6's `TextDatasetForNextSentencePrediction` (the transformers-examples NSP dataset, removed
  in 5.x), in a throwaway venv under --cache_dir, with the same tokenizer (its fast version);
- (b) a port of google-research/bert's create_pretraining_data.py: its reading rules (one sentence per line,
  documents split by blank lines, all in memory, shuffled), its create_instances_from_document and its static,
  capped masking, with transformers' slow BertTokenizer standing in for its FullTokenizer.

Both baselines read the corpus already cut into their input format (one sentence per line): the sentence
splitting our pipeline does itself is not in their time. Per core = tokens / CPU seconds of the process and its
children (DataLoader workers, prepare_data's pool, the venv's process), so threads and workers count.

    python benchmarks/data_throughput.py [--corpus FILE] [--tokenizer DIR] [--cache_dir ~/.cache/bert-recipes]
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from reporting import DEMO_CORPUS, save_result
from transformers import AutoTokenizer, BertTokenizerLegacy

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig, load_corpus
from bert_recipes.data import DataConfig, TrainingStream, prepare_to_disk, split_sentences


@dataclass
class BenchConfig:
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "jsonl(.gz) corpus with a text column."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer directory."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example."})
    cache_dir: str = field(
        default="~/.cache/bert-recipes/data_throughput", metadata={"help": "Where the transformers 4.57.6 venv lives."}
    )


def write_sentences(corpus: str, path: Path) -> None:
    """The baselines' input format: one sentence per line, a blank line between documents (not after the last:
    TextDatasetForNextSentencePrediction keeps an empty last document and fails drawing a random segment from it)."""
    documents = (split_sentences(row["text"]) for row in load_corpus(CorpusConfig(train_files=[corpus])))
    path.write_text("\n\n".join("\n".join(sentences) for sentences in documents if sentences) + "\n")


# ---- (b) google-research/bert create_pretraining_data.py, ported --------------------------------------------------


def reference_masked(tokens: list[str], max_predictions: int, vocab: list[str], rng: random.Random) -> list[str]:
    """Static masking: 15% of the positions (at least 1, at most max_predictions), 80/10/10."""
    candidates = [k for k, token in enumerate(tokens) if token not in ("[CLS]", "[SEP]")]
    rng.shuffle(candidates)
    masked = list(tokens)
    for k in candidates[: min(max_predictions, max(1, round(len(tokens) * 0.15)))]:
        if rng.random() < 0.8:
            masked[k] = "[MASK]"
        elif rng.random() >= 0.5:
            masked[k] = vocab[rng.randint(0, len(vocab) - 1)]
    return masked


def reference_truncate(a: list[str], b: list[str], max_tokens: int, rng: random.Random) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def reference_random_segment(docs: list, index: int, target: int, rng: random.Random) -> list[str]:
    for _ in range(10):
        other = rng.randint(0, len(docs) - 1)
        if other != index:
            break
    segment: list[str] = []
    for sentence in docs[other][rng.randint(0, len(docs[other]) - 1) :]:
        segment.extend(sentence)
        if len(segment) >= target:
            break
    return segment


def reference_document_instances(
    docs: list[list[list[str]]], index: int, max_seq_length: int, vocab: list[str], rng: random.Random
) -> list[list[str]]:
    """create_instances_from_document: chunks up to a target length drawn once per document, cut into A and B; B
    random (always for a one-sentence chunk) with probability 0.5, the unused sentences read again."""
    document, max_tokens = docs[index], max_seq_length - 3
    target = rng.randint(2, max_tokens) if rng.random() < 0.1 else max_tokens
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a = [t for sentence in chunk[:a_end] for t in sentence]
            if len(chunk) == 1 or rng.random() < 0.5:
                b = reference_random_segment(docs, index, target - len(a), rng)
                i -= len(chunk) - a_end
            else:
                b = [t for sentence in chunk[a_end:] for t in sentence]
            reference_truncate(a, b, max_tokens, rng)
            tokens = ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
            instances.append(reference_masked(tokens, max_seq_length * 20 // 128, vocab, rng))
            chunk, length = [], 0
        i += 1
    return instances


def reference_port(sentences: Path, tokenizer_dir: str, max_seq_length: int) -> tuple[int, int]:
    """create_training_instances with dupe_factor 1, then the ids its writer converts the tokens to."""
    slow, rng = BertTokenizerLegacy.from_pretrained(tokenizer_dir), random.Random(12345)
    docs: list[list[list[str]]] = [[]]
    with sentences.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                docs.append([])
            elif tokens := slow.tokenize(line.strip()):
                docs[-1].append(tokens)
    docs = [d for d in docs if d]
    rng.shuffle(docs)
    vocab = list(slow.vocab)
    instances = [
        x for index in range(len(docs)) for x in reference_document_instances(docs, index, max_seq_length, vocab, rng)
    ]
    rng.shuffle(instances)
    ids = [slow.convert_tokens_to_ids(tokens) for tokens in instances]
    return len(ids), sum(map(len, ids))


# ---- (a) transformers 4.57.6 in a throwaway venv ---------------------------------------------------------------


def transformers_venv(cache_dir: str) -> Path:
    """A venv with transformers 4.57.6 and its own dependencies; torch borrowed from this interpreter."""
    venv = Path(cache_dir).expanduser() / "transformers-4.57.6"
    python = venv / "bin" / "python"
    if not (venv / "ready").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "transformers==4.57.6"], check=True)
        site = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        # appended after the venv's own packages: only what it lacks (torch) comes from here
        (Path(site) / "borrowed-torch.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
        (venv / "ready").touch()
    return python


def transformers_baseline(python: Path, tokenizer_dir: str, sentences: Path, max_seq_length: int) -> dict:
    script = Path(__file__).with_name("transformers_nsp_baseline.py")
    result = subprocess.run(
        [str(python), str(script), tokenizer_dir, str(sentences), str(max_seq_length)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- ours ------------------------------------------------------------------------------------------------------


def streamed(corpus: str, tokenizer, config: DataConfig, workers: int) -> tuple[int, int]:
    """One epoch of the trainer's stream, masked batches included."""
    stream = TrainingStream(
        CorpusConfig(train_files=[corpus]), config, tokenizer, seed=0, batch_size=32, max_epochs=1, num_workers=workers
    )
    examples = tokens = 0
    while (batch := stream.next_batch()) is not None:
        examples += len(batch["input_ids"])
        tokens += int(batch["attention_mask"].sum())
    return examples, tokens


def prepared(corpus: str, tokenizer, config: DataConfig, num_proc: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        counts = prepare_to_disk(CorpusConfig(train_files=[corpus]), config, tokenizer, out, 0, num_proc=num_proc)
    return counts["train"]


def cpu_seconds() -> float:
    """CPU time of this process's threads and of its children that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measured(name: str, run: Callable[[], tuple[int, int]]) -> dict:
    start, cpu = time.perf_counter(), cpu_seconds()
    examples, tokens = run()
    return row(name, time.perf_counter() - start, cpu_seconds() - cpu, examples, tokens)


def row(name: str, seconds: float, cpu: float, examples: int, tokens: int) -> dict:
    return {
        "pipeline": name,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "examples": examples,
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds),
        "tokens_per_cpu_second": round(tokens / cpu),
    }


def main() -> None:
    PartialState()
    # a cache hit would time a file copy: every run must build its examples
    datasets.disable_caching()
    (bench,) = parse_config([BenchConfig])
    tokenizer = AutoTokenizer.from_pretrained(bench.tokenizer)
    config = DataConfig(max_seq_length=bench.max_seq_length, eval_every_nth_document=0)
    python = transformers_venv(bench.cache_dir)
    with tempfile.TemporaryDirectory() as folder:
        sentences = Path(folder) / "sentences.txt"
        write_sentences(bench.corpus, sentences)
        a = transformers_baseline(python, bench.tokenizer, sentences, bench.max_seq_length)
        rows = [
            row(f"(a) transformers {a['transformers']} TextDatasetForNextSentencePrediction", a["seconds"],
                a["cpu_seconds"], a["examples"], a["tokens"]),
            measured("(b) google-research/bert create_pretraining_data port, slow BertTokenizer",
                     lambda: reference_port(sentences, bench.tokenizer, bench.max_seq_length)),
        ]  # fmt: skip
        for workers in (0, 1, 2):
            rows.append(
                measured(f"streamed, {workers} workers", lambda w=workers: streamed(bench.corpus, tokenizer, config, w))
            )
        streamed_tokens = rows[2]["tokens"]
        for num_proc in (1, 2):
            # prepare_data writes the examples the stream yields with one process (a test checks they are identical)
            count = lambda n=num_proc: (prepared(bench.corpus, tokenizer, config, n), streamed_tokens)  # noqa: E731
            rows.append(measured(f"prepare_data.py, {num_proc} process{'es' if num_proc > 1 else ''}", count))
    base = rows[0]["tokens_per_cpu_second"]
    for r in rows:
        r["per_core_vs_a"] = round(r["tokens_per_cpu_second"] / base, 2)
    save_result(
        "data_throughput",
        {"corpus": bench.corpus, "config": asdict(bench), "rows": rows},
        ["pipeline", "seconds", "CPU seconds", "examples", "tokens/s", "tokens per CPU-second", "per core vs (a)"],
        [[r["pipeline"], r["seconds"], r["cpu_seconds"], f"{r['examples']:,}", f"{r['tokens_per_second']:,}",
          f"{r['tokens_per_cpu_second']:,}", f"{r['per_core_vs_a']}x"] for r in rows],
    )  # fmt: skip


if __name__ == "__main__":
    main()
