"""The GLUE metrics as the benchmark defines them, an `evaluate` module loaded by path so nothing is fetched.

    evaluate.load("src/bert_recipes/metrics/glue", config_name="mrpc").compute(predictions=[...], references=[...])

Which metrics a task has comes from the task table, `bert_recipes/glue/tasks.py`.
CoLA (and the diagnostic AX): Matthews correlation. MRPC, QQP: accuracy and F1 of the positive class.
STS-B: Pearson and Spearman correlation. SST-2, MNLI (matched, mismatched), QNLI, RTE, WNLI: accuracy.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from bert_recipes.glue.tasks import METRIC_CONFIGS, REGRESSION_CONFIGS

_DESCRIPTION = "The official GLUE metric of each task; pass the task as config_name."
_CITATION = (
    "Wang, Singh, Michael, Hill, Levy, Bowman. GLUE: A Multi-Task Benchmark and Analysis Platform for Natural "
    "Language Understanding. ICLR 2019."
)
_KWARGS = """
Args:
    predictions: predicted class ids (scores for stsb).
    references: gold class ids (scores for stsb).
Returns:
    a dict of the task's metrics: matthews_correlation, accuracy, f1, pearson, spearmanr.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in METRIC_CONFIGS:
            raise KeyError(f"unknown GLUE task '{self.config_name}': use one of {', '.join(METRIC_CONFIGS)}")
        kind = "float64" if self.config_name in REGRESSION_CONFIGS else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind)}),
        )

    def _compute(self, predictions, references):
        # Python lists in, not format="numpy": datasets' numpy formatter casts float64 scores to float32
        predictions, references = np.asarray(predictions), np.asarray(references)
        scores = {
            "matthews_correlation": lambda: matthews_corrcoef(references, predictions),
            "accuracy": lambda: np.mean(predictions == references),
            "f1": lambda: f1_score(references, predictions),
            "pearson": lambda: pearsonr(predictions, references)[0],
            "spearmanr": lambda: spearmanr(predictions, references)[0],
        }
        return {name: float(scores[name]()) for name in METRIC_CONFIGS[self.config_name]}
