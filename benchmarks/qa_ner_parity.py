"""Do the QA and NER recipes score as transformers' `run_qa.py` and `run_ner.py` do, on the same files, checkpoint and
hyperparameters, and how long does each take?

(a) reference: minimal ports of `examples/pytorch/question-answering/run_qa.py` (with its `utils_qa.py`
    post-processing) and `examples/pytorch/token-classification/run_ner.py` at their defaults: QA windows padded to
    max_seq_length (`--pad_to_max_length True`) with `default_data_collator`, a plain `Trainer`, spans decoded from
    the n-best start and end logits with the null answer for v2.0; NER labels on the first piece of each word,
    `DataCollatorForTokenClassification`, scored by `trainer.evaluate` with seqeval (the repo's conlleval module:
    `evaluate.load("seqeval")` needs the Hub); labels sorted as run_ner.py sorts them;
(b) the recipes: `bert_recipes.qa.run_qa` and `bert_recipes.ner.run_ner` (length-grouped batches, dynamic padding),
    the same seeds.
Both in fp32 with the same learning rate, batch, epochs, warmup and weight decay, on the SQuAD v1.1 and v2.0 and
WNUT-17 samples in data/. Without --model_name_or_path, a small BERT is pretrained first with the recipe's
Pretrainer. Reports each side's median (min-max) of F1 over the seeds, whether the medians differ by no more than the
larger seed range, and the time each side took; writes benchmarks/results/qa_ner_parity.json.

    python benchmarks/qa_ner_parity.py --seeds 1,2,3 --tokenizer runs/demo/tokenizer
"""

from __future__ import annotations

import collections
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
    AutoModelForQuestionAnswering,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    EvalPrediction,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from bert_recipes.config import parse_config
from bert_recipes.finetuning import CheckpointConfig
from bert_recipes.metrics import NER_METRIC, SQUAD_METRIC
from bert_recipes.ner import NerConfig, NerDataConfig, NerTrainingArguments, read_conll, run_ner
from bert_recipes.qa import QaConfig, QaDataConfig, QaTrainingArguments, read_squad_json, run_qa

DATA = REPO_ROOT / "data"
TASK_FILES = {
    "squad": (DATA / "squad" / "v1.1" / "train.json", DATA / "squad" / "v1.1" / "dev.json"),
    "squad_v2": (DATA / "squad" / "v2.0" / "train.json", DATA / "squad" / "v2.0" / "dev.json"),
    "wnut17": (DATA / "ner" / "wnut17" / "train.txt", DATA / "ner" / "wnut17" / "dev.txt"),
}
F1 = {"squad": "f1", "squad_v2": "f1", "wnut17": "overall_f1"}


@dataclass
class BenchConfig:
    tasks: str = field(default="squad,squad_v2,wnut17", metadata={"help": "Comma list of squad, squad_v2, wnut17."})
    seeds: str = field(default="1,2,3", metadata={"help": "Fine-tuning seeds, the same on both sides."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint to fine-tune; default: pretrain a small one first."}
    )
    learning_rate: float = field(default=1.0e-4, metadata={"help": "Fine-tuning peak learning rate."})
    batch_size: int = field(default=16, metadata={"help": "Fine-tuning windows or sentences per step."})
    epochs: float = field(default=3.0, metadata={"help": "Fine-tuning epochs."})
    warmup: float = field(default=0.1, metadata={"help": "Warmup steps; below 1, a fraction of all steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    qa_max_seq_length: int = field(default=384, metadata={"help": "run_qa.py's default window."})
    doc_stride: int = field(default=128, metadata={"help": "run_qa.py's default overlap."})
    ner_max_seq_length: int = field(default=128, metadata={"help": "Longest NER input, in pieces."})
    pretrain_size: str = field(default="tiny", metadata={"help": "BERT size pretrained without a checkpoint."})
    pretrain_steps: int = field(default=300, metadata={"help": "Pretraining steps without a checkpoint."})
    pretrain_learning_rate: float = field(default=1.0e-3, metadata={"help": "Pretraining peak learning rate."})
    tokenizer: str = field(default="runs/demo/tokenizer", metadata={"help": "Tokenizer of the pretrained model."})
    corpus: str = field(default=DEMO_CORPUS, metadata={"help": "Corpus to pretrain on."})


def reference_arguments(bench: BenchConfig, out: str, seed: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=out, learning_rate=bench.learning_rate, per_device_train_batch_size=bench.batch_size,
        num_train_epochs=bench.epochs, warmup_steps=bench.warmup, weight_decay=bench.weight_decay, seed=seed,
        # the scripts save every 500 steps, more than these runs take; a save changes no score
        save_strategy="no", disable_tqdm=True, report_to="none", use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip


# ---- (a) run_qa.py at its defaults -------------------------------------------------------------------------------


def qa_windows(questions: datasets.Dataset, tokenizer, bench: BenchConfig, training: bool) -> datasets.Dataset:
    """run_qa.py's prepare_train_features / prepare_validation_features: padded windows, answer tokens or offsets."""

    def encode(rows: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            [q.lstrip() for q in rows["question"]], rows["context"], truncation="only_second",
            max_length=bench.qa_max_seq_length, stride=bench.doc_stride, return_overflowing_tokens=True,
            return_offsets_mapping=True, padding="max_length",
        )  # fmt: skip
        sample_of = encoded.pop("overflow_to_sample_mapping")
        starts, ends, ids = [], [], []
        for i, offsets in enumerate(encoded["offset_mapping"]):
            sequence = encoded.sequence_ids(i)
            answers = rows["answers"][sample_of[i]]
            ids.append(rows["id"][sample_of[i]])
            if training:
                start, end = 0, 0  # [CLS]
                if answers["answer_start"]:
                    first = answers["answer_start"][0]
                    last = first + len(answers["text"][0])
                    lo = sequence.index(1)
                    hi = len(sequence) - 1 - sequence[::-1].index(1)
                    if offsets[lo][0] <= first and offsets[hi][1] >= last:
                        while lo < len(offsets) and offsets[lo][0] <= first:
                            lo += 1
                        while offsets[hi][1] >= last:
                            hi -= 1
                        start, end = lo - 1, hi + 1
                starts.append(start)
                ends.append(end)
            else:
                encoded["offset_mapping"][i] = [o if sequence[k] == 1 else None for k, o in enumerate(offsets)]
        if training:
            encoded["start_positions"], encoded["end_positions"] = starts, ends
            encoded.pop("offset_mapping")
        else:
            encoded["example_id"] = ids
        return encoded

    return questions.map(encode, batched=True, remove_columns=questions.column_names)


def qa_postprocess(questions, windows, start_logits, end_logits, version_2: bool) -> tuple[dict, dict]:
    """utils_qa.py's postprocess_qa_predictions at its defaults (n-best 20, 30 tokens, threshold 0)."""
    by_question = collections.defaultdict(list)
    for row, question_id in enumerate(windows["example_id"]):
        by_question[question_id].append(row)
    texts, odds = {}, {}
    for question in questions:
        null_score, candidates = None, []
        for row in by_question[question["id"]]:
            start, end, offsets = start_logits[row], end_logits[row], windows[row]["offset_mapping"]
            window_null = start[0] + end[0]
            null_score = window_null if null_score is None or window_null < null_score else null_score
            for s in np.argsort(start)[-1:-21:-1]:
                for e in np.argsort(end)[-1:-21:-1]:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > 30:
                        continue
                    text = question["context"][offsets[s][0] : offsets[e][1]]
                    candidates.append((float(start[s] + end[e]), text))
        best_score, best_text = max(candidates, default=(-np.inf, ""))
        odds[question["id"]] = float(null_score - best_score) if candidates else 1e9
        texts[question["id"]] = "" if version_2 and odds[question["id"]] > 0.0 else best_text
    return texts, odds


def reference_qa(bench: BenchConfig, model_dir: str, task: str, seed: int) -> float:
    version_2 = task == "squad_v2"
    train_file, dev_file = TASK_FILES[task]
    train_questions = read_squad_json(str(train_file), "train")
    dev_questions = read_squad_json(str(dev_file), "dev")
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    train = qa_windows(train_questions, tokenizer, bench, training=True)
    dev = qa_windows(dev_questions, tokenizer, bench, training=False)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model, args=reference_arguments(bench, out, seed), train_dataset=train,
            processing_class=tokenizer, data_collator=default_data_collator,
        )  # fmt: skip
        trainer.train()
        start, end = trainer.predict(dev.remove_columns(["example_id", "offset_mapping"])).predictions
    texts, odds = qa_postprocess(dev_questions, dev, start, end, version_2)
    metric = evaluate.load(SQUAD_METRIC, config_name=task, keep_in_memory=True)
    predictions = [{"id": q, "prediction_text": t, **({"no_answer_probability": odds[q]} if version_2 else {})}
                   for q, t in texts.items()]  # fmt: skip
    references = [{"id": row["id"], "answers": row["answers"]} for row in dev_questions]
    return metric.compute(predictions=predictions, references=references)["f1"]


# ---- (a) run_ner.py at its defaults ------------------------------------------------------------------------------


def reference_ner(bench: BenchConfig, model_dir: str, task: str, seed: int) -> float:
    train_file, dev_file = TASK_FILES[task]
    splits = {"train": read_conll(str(train_file), "train", -1), "validation": read_conll(str(dev_file), "dev", -1)}
    labels = sorted({tag for tags in splits["train"]["tags"] for tag in tags})  # run_ner.py's get_label_list
    index = {label: i for i, label in enumerate(labels)}
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=index
    )

    def encode(rows: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(rows["tokens"], truncation=True, max_length=bench.ner_max_seq_length,
                            is_split_into_words=True)  # fmt: skip
        encoded["labels"] = []
        for i, tags in enumerate(rows["tags"]):
            previous, row_labels = None, []
            for word in encoded.word_ids(i):
                # a dev tag the training file lacks is scored as O by the label list; none in these samples
                row_labels.append(-100 if word is None or word == previous else index.get(tags[word], index["O"]))
                previous = word
            encoded["labels"].append(row_labels)
        return encoded

    encoded = {
        name: split.map(encode, batched=True, remove_columns=split.column_names) for name, split in splits.items()
    }
    metric = evaluate.load(NER_METRIC, keep_in_memory=True)

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        guesses = np.argmax(prediction.predictions, axis=2)
        pairs = [[(labels[g], labels[t]) for g, t in zip(guess, gold, strict=True) if t != -100]
                 for guess, gold in zip(guesses, prediction.label_ids, strict=True)]  # fmt: skip
        scores = metric.compute(
            predictions=[[g for g, _ in p] for p in pairs], references=[[t for _, t in p] for p in pairs]
        )
        return {"f1": scores["overall_f1"]}

    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model, args=reference_arguments(bench, out, seed), train_dataset=encoded["train"],
            eval_dataset=encoded["validation"], processing_class=tokenizer, compute_metrics=compute,
            data_collator=DataCollatorForTokenClassification(tokenizer),
        )  # fmt: skip
        trainer.train()
        return trainer.evaluate()["eval_f1"]


# ---- (b) the recipes ---------------------------------------------------------------------------------------------


def recipe_scores(bench: BenchConfig, model_dir: str, task: str, out: Path) -> list[float]:
    train_file, dev_file = TASK_FILES[task]
    common = dict(
        learning_rate=bench.learning_rate, per_device_train_batch_size=bench.batch_size, num_train_epochs=bench.epochs,
        warmup_steps=bench.warmup, weight_decay=bench.weight_decay, mixed_precision="no", disable_tqdm=True,
        report_to="none", output_dir=str(out / task), save_strategy="no",
    )  # fmt: skip
    model = CheckpointConfig(model_name_or_path=model_dir)
    if task == "wnut17":
        data = NerDataConfig(train_file=str(train_file), validation_file=str(dev_file), seeds=bench.seeds,
                             max_seq_length=bench.ner_max_seq_length)  # fmt: skip
        result = run_ner(NerConfig(data, model, NerTrainingArguments(**common)))
    else:
        data = QaDataConfig(train_file=str(train_file), validation_file=str(dev_file), seeds=bench.seeds,
                            version_2_with_negative=task == "squad_v2", max_seq_length=bench.qa_max_seq_length,
                            doc_stride=bench.doc_stride)  # fmt: skip
        result = run_qa(QaConfig(data, model, QaTrainingArguments(**common)))
    return [run.metrics[F1[task]] for run in result.runs]


# ---- comparison --------------------------------------------------------------------------------------------------

HEADER = ["task", "metric", "run_qa.py / run_ner.py: median (min-max)", "recipe: median (min-max)",
          "recipe - reference", "within seed noise", "seconds for the 3 runs (reference / recipe)"]  # fmt: skip


def verdict(row: dict) -> str:
    if not any(row["reference"]["scores"] + row["recipe"]["scores"]):
        return "yes, but every run scores 0: the comparison says nothing"
    return "yes" if row["within_seed_noise"] else f"no (noise {row['seed_noise']:.3f})"


def table_rows(rows: list[dict]) -> list[list[str]]:
    return [
        [r["task"], r["metric"], cell(r["reference"]), cell(r["recipe"]), f"{r['median_difference']:+.3f}", verdict(r),
         f"{r['reference']['seconds']:.0f} / {r['recipe']['seconds']:.0f}"]
        for r in rows
    ]  # fmt: skip


def main() -> None:
    PartialState()
    (bench,) = parse_config([BenchConfig])
    # scores, not speed, are compared; one thread is much faster than two on a CPU other jobs share (measured)
    torch.set_num_threads(1)
    tasks, seeds = bench.tasks.split(","), [int(seed) for seed in bench.seeds.split(",")]
    unknown = [task for task in tasks if task not in TASK_FILES]
    if unknown:
        raise SystemExit(f"--tasks names unknown tasks {unknown}: use some of {', '.join(TASK_FILES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = starting_model(bench, Path(tmp) / "pretrained")
        for task in tasks:
            reference_run = reference_ner if task == "wnut17" else reference_qa
            start = time.perf_counter()
            theirs = [reference_run(bench, model_dir, task, seed) for seed in seeds]
            their_seconds = time.perf_counter() - start
            ours = recipe_scores(bench, model_dir, task, Path(tmp) / "recipe")
            our_seconds = time.perf_counter() - start - their_seconds
            theirs_spread, ours_spread = spread(theirs), spread(ours)
            noise = max(s["max"] - s["min"] for s in (theirs_spread, ours_spread))
            difference = ours_spread["median"] - theirs_spread["median"]
            rows.append({
                "task": task, "metric": F1[task], "seeds": seeds,
                "reference": {**theirs_spread, "scores": theirs, "seconds": round(their_seconds, 1)},
                "recipe": {**ours_spread, "scores": ours, "seconds": round(our_seconds, 1)},
                "median_difference": difference, "seed_noise": noise, "within_seed_noise": abs(difference) <= noise,
            })  # fmt: skip
    save_result("qa_ner_parity", {"config": asdict(bench), "rows": rows}, HEADER, table_rows(rows))


if __name__ == "__main__":
    main()
