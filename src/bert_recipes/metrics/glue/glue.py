"""GLUE metrics as the benchmark defines them, as an `evaluate` module loaded by path (nothing is fetched).

evaluate.load("src/bert_recipes/metrics/glue", "mrpc").compute(predictions=[...], references=[...])
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "ax")

_DESCRIPTION = (
    "GLUE: CoLA Matthews correlation; MRPC and QQP accuracy and F1; STS-B Pearson and Spearman; accuracy else."
)
_CITATION = "Wang et al., GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding, 2019."
_KWARGS = "predictions: predicted labels (floats for stsb); references: gold labels."


def accuracy(predictions, references) -> float:
    return float(sum(int(p == r) for p, r in zip(predictions, references, strict=True)) / len(references))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise KeyError(f"unknown GLUE task '{self.config_name}': use one of {', '.join(TASKS)}")
        kind = "float32" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind)}),
            format="numpy",
        )

    def _compute(self, predictions, references):
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        if self.config_name in ("mrpc", "qqp"):
            return {"accuracy": accuracy(predictions, references), "f1": float(f1_score(references, predictions))}
        return {"accuracy": accuracy(predictions, references)}
