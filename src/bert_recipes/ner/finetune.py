"""Fine-tuning for named-entity recognition with transformers' Trainer: the checkpoint under a token-classification
head, every learning rate and seed run by the shared sweep, each dev word tagged by its first piece and scored
entity by entity as conlleval scores it."""

from __future__ import annotations

from pathlib import Path

import datasets
import evaluate
import numpy as np
from accelerate import PartialState
from accelerate.logging import get_logger
from transformers import (
    AutoModelForTokenClassification,
    DataCollatorForTokenClassification,
    EvalPrediction,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from bert_recipes.finetuning import (
    ModelInputCollator,
    Sweep,
    TaskResult,
    learning_rates,
    load_checked_tokenizer,
    load_model,
    predict_in_order,
    prediction_trainer,
    seeds,
)
from bert_recipes.metrics import NER_METRIC
from bert_recipes.ner.config import NerConfig, check_ner_settings
from bert_recipes.ner.data import IGNORED, label_list, load_sentences, tokenize_sentences

logger = get_logger(__name__)
PREDICTIONS_FILE = "predictions.txt"
LOGGED = ("overall_precision", "overall_recall", "overall_f1", "overall_accuracy")


def score_tags(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    metric = evaluate.load(NER_METRIC, keep_in_memory=True)
    return {name: float(v) for name, v in metric.compute(predictions=predictions, references=references).items()}


def evaluation_metrics(labels: list[str]):
    """The Trainer's compute_metrics during training: tags of the labelled (first) pieces, in any row order."""

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        guesses, golds = np.argmax(prediction.predictions, axis=-1), prediction.label_ids
        kept = [gold != IGNORED for gold in golds]
        return score_tags(
            [[labels[i] for i in guess[keep]] for guess, keep in zip(guesses, kept, strict=True)],
            [[labels[i] for i in gold[keep]] for gold, keep in zip(golds, kept, strict=True)],
        )

    return compute


def word_tags(logits: np.ndarray, word_ids: list[int], words: int, labels: list[str]) -> list[str]:
    """A tag per word from its first piece's logits; words cut off by --max_seq_length are tagged O."""
    tags, seen = ["O"] * words, set()
    for piece, word in enumerate(word_ids):
        if word >= 0 and word not in seen:
            seen.add(word)
            tags[word] = labels[int(np.argmax(logits[piece]))]
    return tags


def write_predictions(path: Path, sentences: datasets.Dataset, predicted: list[list[str]]) -> None:
    """`token gold predicted` per line, a blank line after each sentence: the input conlleval reads."""
    lines = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        lines += [f"{t} {g} {p}" for t, g, p in zip(sentence["tokens"], sentence["tags"], tags, strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def ner_run(config: NerConfig, encoded: datasets.DatasetDict, labels: list[str], tokenizer: PreTrainedTokenizerBase):
    """The sweep's `train_and_predict`: train, tag every dev word, score the tags."""
    dev = encoded["validation"]
    collator = ModelInputCollator(tokenizer, targets=("labels",), padder=DataCollatorForTokenClassification)
    # read once: a Dataset decodes a column on every access
    dev_pieces, dev_words, dev_tags = dev["word_ids"], [len(tokens) for tokens in dev["tokens"]], dev["tags"]
    truncated = sum(max(ids) + 1 < words for ids, words in zip(dev_pieces, dev_words, strict=True))

    def train_and_predict(args: TrainingArguments, resume: str | None):
        logger.info(
            f"ner: {len(encoded['train']):,} training and {len(dev):,} dev sentences, {len(labels)} labels; "
            f"{truncated} dev sentences cut by --max_seq_length; lr {args.learning_rate:g}, seed {args.seed}",
            main_process_only=True,
        )
        head = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {t: i for i, t in enumerate(labels)},
        }
        trainer = Trainer(
            model=load_model(AutoModelForTokenClassification, config.model, args.seed, "classifier", **head),
            args=args,
            train_dataset=encoded["train"],
            eval_dataset=dev,
            compute_metrics=evaluation_metrics(labels),
            data_collator=collator,
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        predictor = prediction_trainer(trainer.model, args, collator, tokenizer)
        logits = predict_in_order(predictor, dev, drop=("labels",))
        predicted = [
            word_tags(row_logits, ids, words, labels)
            for row_logits, ids, words in zip(logits, dev_pieces, dev_words, strict=True)
        ]
        return trainer, score_tags(predicted, dev_tags), predicted

    return train_and_predict


def run_ner(config: NerConfig) -> TaskResult:
    """Fine-tune and evaluate; writes the kept (median) run's model, predictions.txt and eval_results.json with its
    scores; the medians and ranges over seeds are in runs.json."""
    state = PartialState(cpu=config.training.use_cpu)  # as TrainingArguments will set it up
    check_ner_settings(config)
    data, training = config.data, config.training
    tokenizer = load_checked_tokenizer(config.model, data.max_seq_length, needs_fast="matching pieces to words")
    sweep = Sweep(
        "ner", Path(training.output_dir), training, learning_rates(data, training), seeds(data, training),
        main_metric="overall_f1", logged=LOGGED, kept_run_results=True,
    )  # fmt: skip
    finished = sweep.finished()
    if finished:
        return finished
    with state.main_process_first():
        splits = load_sentences(data)
        labels = label_list(splits)
        encoded = tokenize_sentences(splits, tokenizer, labels, data)
    result = sweep.run_all(ner_run(config, encoded, labels, tokenizer))
    if state.is_main_process:

        def write_outputs(predicted: list[list[str]]) -> None:
            write_predictions(sweep.task_dir / PREDICTIONS_FILE, splits["validation"], predicted)

        sweep.keep_median_model(result, (data, config.model), write_outputs)
    state.wait_for_everyone()
    return result
