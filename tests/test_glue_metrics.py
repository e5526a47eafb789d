"""The GLUE metric module, served by `evaluate` from the repo, equals scikit-learn and scipy; the GLUE average."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bert_recipes.glue import TASKS, glue_score
from bert_recipes.metrics import GLUE_METRIC


def compute(task: str, predictions, references) -> dict[str, float]:
    return evaluate.load(GLUE_METRIC, config_name=task).compute(predictions=predictions, references=references)


def noisy_labels(seed: int, classes: int, rows: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels and predictions that agree 70% of the time, so every metric lands away from 0 and 1."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, classes, rows)
    return np.where(rng.random(rows) < 0.7, gold, rng.integers(0, classes, rows)), gold


@pytest.mark.parametrize("task", ["cola", "ax"])
def test_cola_and_the_diagnostic_are_matthews_correlation(task):
    predictions, gold = noisy_labels(0, 3 if task == "ax" else 2)
    assert compute(task, predictions, gold) == {
        "matthews_correlation": pytest.approx(matthews_corrcoef(gold, predictions), abs=1e-12)
    }


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_mrpc_and_qqp_are_accuracy_and_positive_class_f1(task):
    predictions, gold = noisy_labels(1, 2)
    expected = {"accuracy": accuracy_score(gold, predictions), "f1": f1_score(gold, predictions, pos_label=1)}
    assert compute(task, predictions, gold) == pytest.approx(expected, abs=1e-12)
    assert 0.5 < expected["f1"] < 0.9


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "wnli", "mnli", "mnli_matched", "mnli_mismatched"])
def test_the_other_tasks_are_accuracy(task):
    predictions, gold = noisy_labels(2, 3 if task.startswith("mnli") else 2)
    assert compute(task, predictions, gold) == {"accuracy": pytest.approx(accuracy_score(gold, predictions), abs=1e-12)}


def test_stsb_is_pearson_and_spearman_on_float_scores():
    rng = np.random.default_rng(3)
    gold = rng.uniform(0, 5, 300)
    predicted = gold + rng.normal(0, 1.5, 300)
    expected = {"pearson": pearsonr(predicted, gold)[0], "spearmanr": spearmanr(predicted, gold)[0]}
    assert compute("stsb", predicted, gold) == pytest.approx(expected, abs=1e-12)


def test_every_task_spec_names_the_metrics_the_module_returns():
    predictions, gold = noisy_labels(4, 2, rows=50)
    for name, task in TASKS.items():
        assert set(compute(name, predictions, gold)) == set(task.metrics)


def test_unknown_task_is_refused():
    with pytest.raises(KeyError, match="unknown GLUE task 'squad'"):
        evaluate.load(GLUE_METRIC, config_name="squad")


def test_glue_score_is_the_leaderboard_average():
    # BERT-base's GLUE test-set row from the BERT paper and leaderboard, whose GLUE score is 78.3
    bert_base = {
        "cola": {"matthews_correlation": 0.521},
        "sst2": {"accuracy": 0.935},
        "mrpc": {"f1": 0.889, "accuracy": 0.848},
        "stsb": {"pearson": 0.871, "spearmanr": 0.858},
        "qqp": {"f1": 0.712, "accuracy": 0.892},
        "mnli": {"accuracy_m": 0.846, "accuracy_mm": 0.834},
        "qnli": {"accuracy": 0.905},
        "rte": {"accuracy": 0.664},
        "wnli": {"accuracy": 0.651},
    }
    assert round(glue_score(bert_base), 1) == 78.3
    assert glue_score({"mrpc": {"accuracy": 0.8, "f1": 0.9}, "cola": {"matthews_correlation": 0.5}}) == pytest.approx(
        67.5
    )
