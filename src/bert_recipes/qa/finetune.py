"""Fine-tuning on SQuAD with transformers' Trainer: the checkpoint under a span head, every learning rate and seed
run by the shared sweep, dev questions answered from their windows and scored as the official scripts score them."""

from __future__ import annotations

from pathlib import Path

import datasets
import evaluate
from accelerate import PartialState
from accelerate.logging import get_logger
from transformers import AutoModelForQuestionAnswering, PreTrainedTokenizerBase, Trainer, TrainingArguments

from bert_recipes.finetuning import (
    InOrderTrainer,
    ModelInputCollator,
    Sweep,
    TaskResult,
    learning_rates,
    load_checked_tokenizer,
    load_model,
    predict_in_order,
    seeds,
    write_json,
)
from bert_recipes.metrics import SQUAD_METRIC
from bert_recipes.qa.config import QaConfig, QaDataConfig, check_qa_settings
from bert_recipes.qa.data import load_squad, tokenize_squad
from bert_recipes.qa.spans import Answers, decode_answers

logger = get_logger(__name__)
TARGETS = ("start_positions", "end_positions")
LOGGED = ("exact_match", "exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh")


def metric_name(data: QaDataConfig) -> str:
    return "squad_v2" if data.version_2_with_negative else "squad"


def score_answers(data: QaDataConfig, questions: datasets.Dataset, answers: Answers) -> dict[str, float]:
    """The official metrics of the answers (in points, as the official scripts print them)."""
    metric = evaluate.load(SQUAD_METRIC, config_name=metric_name(data), keep_in_memory=True)
    predictions = [{"id": q, "prediction_text": text} for q, text in answers.texts.items()]
    if data.version_2_with_negative:
        for prediction in predictions:
            prediction["no_answer_probability"] = answers.null_odds[prediction["id"]]
    references = [{"id": row["id"], "answers": row["answers"]} for row in questions]
    return {
        name: float(value) for name, value in metric.compute(predictions=predictions, references=references).items()
    }


class SpanTrainer(InOrderTrainer):
    """Evaluates by answering every dev question and scoring the answers: the Trainer's compute_metrics would see
    window logits without the questions they belong to."""

    def __init__(self, *args, answer_dev_questions, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_dev_questions = answer_dev_questions

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics, _ = self.answer_dev_questions(self)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def qa_run(config: QaConfig, splits: datasets.DatasetDict, train, dev, tokenizer: PreTrainedTokenizerBase):
    """The sweep's `train_and_predict`: train on the windows, answer the dev questions, score the answers."""
    data = config.data

    def answer_dev_questions(trainer: Trainer) -> tuple[dict[str, float], Answers]:
        start, end = predict_in_order(trainer, dev, drop=("example_id", "offset_mapping"))
        answers = decode_answers(splits["validation"], dev, start, end, data)
        return score_answers(data, splits["validation"], answers), answers

    def train_and_predict(args: TrainingArguments, resume: str | None):
        questions = f"{len(splits['train']):,} questions in {len(train):,} training windows"
        dev_questions = f"{len(splits['validation']):,} dev questions in {len(dev):,} windows"
        logger.info(
            f"{metric_name(data)}: {questions}, {dev_questions}; lr {args.learning_rate:g}, seed {args.seed}",
            main_process_only=True,
        )
        trainer = SpanTrainer(
            model=load_model(AutoModelForQuestionAnswering, config.model, args.seed, "qa_outputs"),
            args=args,
            train_dataset=train,
            eval_dataset=dev,
            data_collator=ModelInputCollator(tokenizer, targets=TARGETS),
            processing_class=tokenizer,
            answer_dev_questions=answer_dev_questions,
        )
        trainer.train(resume_from_checkpoint=resume)
        metrics, answers = answer_dev_questions(trainer)
        return trainer, metrics, {"predictions": answers.texts, "null_odds": answers.null_odds}

    return train_and_predict


def run_qa(config: QaConfig) -> TaskResult:
    """Fine-tune and evaluate; writes the kept (median) run's model, predictions.json in the official format and
    eval_results.json with its scores; the medians and ranges over seeds are in runs.json."""
    state = PartialState(cpu=config.training.use_cpu)  # as TrainingArguments will set it up
    check_qa_settings(config)
    data, training = config.data, config.training
    tokenizer = load_checked_tokenizer(config.model, data.max_seq_length, needs_fast="cutting contexts into windows")
    sweep = Sweep(
        metric_name(data), Path(training.output_dir), training, learning_rates(data, training), seeds(data, training),
        main_metric="f1", scale=1, logged=LOGGED, kept_run_results=True,
    )  # fmt: skip
    finished = sweep.finished()
    if finished:
        return finished
    with state.main_process_first():
        splits = load_squad(data)
        train, dev = tokenize_squad(splits, tokenizer, data)
    result = sweep.run_all(qa_run(config, splits, train, dev, tokenizer))
    if state.is_main_process:

        def write_outputs(kept: dict) -> None:
            write_json(sweep.task_dir / "predictions.json", kept["predictions"])
            if data.version_2_with_negative:
                write_json(sweep.task_dir / "null_odds.json", kept["null_odds"])

        sweep.keep_median_model(result, (data, config.model), write_outputs)
    state.wait_for_everyone()
    return result
