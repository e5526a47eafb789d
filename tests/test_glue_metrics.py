"""The GLUE metric module (served by `evaluate` from the repo) equals scikit-learn and scipy."""

from __future__ import annotations

import evaluate
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bert_recipes.glue import glue_score
from bert_recipes.metrics import GLUE_METRIC

RNG = np.random.default_rng(0)
LABELS = RNG.integers(0, 2, 500)
PREDICTIONS = np.where(RNG.random(500) < 0.7, LABELS, 1 - LABELS)


def compute(task: str, predictions, references) -> dict[str, float]:
    return evaluate.load(GLUE_METRIC, task).compute(predictions=predictions, references=references)


def test_cola_is_matthews_correlation():
    assert compute("cola", PREDICTIONS, LABELS) == pytest.approx(
        {"matthews_correlation": matthews_corrcoef(LABELS, PREDICTIONS)}, abs=1e-12
    )


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_mrpc_and_qqp_are_accuracy_and_f1(task):
    expected = {"accuracy": accuracy_score(LABELS, PREDICTIONS), "f1": f1_score(LABELS, PREDICTIONS)}
    assert compute(task, PREDICTIONS, LABELS) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("task", ["sst2", "qnli", "rte", "wnli", "mnli"])
def test_accuracy_tasks(task):
    three_way = RNG.integers(0, 3, 300)
    guesses = np.where(RNG.random(300) < 0.5, three_way, RNG.integers(0, 3, 300))
    assert compute(task, guesses, three_way) == pytest.approx({"accuracy": accuracy_score(three_way, guesses)})


def test_stsb_is_pearson_and_spearman():
    gold = RNG.uniform(0, 5, 300)
    predicted = gold + RNG.normal(0, 1, 300)
    expected = {"pearson": pearsonr(predicted, gold)[0], "spearmanr": spearmanr(predicted, gold)[0]}
    assert compute("stsb", predicted, gold) == pytest.approx(expected, abs=1e-6)


def test_unknown_task_is_refused():
    with pytest.raises(KeyError, match="unknown GLUE task"):
        evaluate.load(GLUE_METRIC, "squad")


def test_glue_score_averages_tasks_and_counts_mnli_twice():
    results = {
        "cola": {"matthews_correlation": 0.5},
        "mrpc": {"accuracy": 0.8, "f1": 0.9},
        "mnli": {"accuracy_m": 0.7, "accuracy_mm": 0.6},
    }
    assert glue_score(results) == pytest.approx(100 * (0.5 + 0.85 + 0.7 + 0.6) / 4)
