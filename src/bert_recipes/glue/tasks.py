"""The nine GLUE tasks: the only place a task is described (files, columns, labels, metrics).

The metric module (`bert_recipes/metrics/glue/`) reads METRIC_CONFIGS from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    folder: str  # the task's folder in the GLUE release, also its name on the leaderboard
    text_columns: tuple[str, ...]  # in the GLUE tsv files
    hub_columns: tuple[str, ...]  # in the Hub dataset
    label_column: str  # in the GLUE train/dev tsv files
    labels: tuple[str, ...]  # labels as the GLUE files write them, in Hub id order; () for regression
    label_names: tuple[str, ...]  # the Hub's names for the same ids, shown in the model's config
    metrics: tuple[str, ...]
    # the one number the BERT paper reports (F1 for MRPC and QQP, Spearman for STS-B): picks the best checkpoint
    main_metric: str
    dev_files: tuple[tuple[str, str], ...] = (("validation", "dev.tsv"),)  # (split, file)
    test_files: tuple[tuple[str, str, str], ...] = ()  # (split, file, leaderboard submission file)
    headerless_columns: tuple[str, ...] = ()  # column names of train/dev files written without a header
    test_id_column: str = "index"

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    @property
    def is_regression(self) -> bool:
        return not self.labels


def _test(folder: str) -> tuple[tuple[str, str, str], ...]:
    return (("test", "test.tsv", f"{folder}.tsv"),)


ACCURACY = ("accuracy",)
ACCURACY_F1 = ("accuracy", "f1")
BINARY = ("0", "1")
NLI = ("entailment", "not_entailment")
TASKS: dict[str, Task] = {
    "cola": Task(
        "CoLA", ("sentence",), ("sentence",), "label", BINARY, ("unacceptable", "acceptable"),
        ("matthews_correlation",), "matthews_correlation", test_files=_test("CoLA"),
        headerless_columns=("source", "label", "author_label", "sentence"),
    ),
    "sst2": Task(
        "SST-2", ("sentence",), ("sentence",), "label", BINARY, ("negative", "positive"), ACCURACY, "accuracy",
        test_files=_test("SST-2"),
    ),
    "mrpc": Task(
        "MRPC", ("#1 String", "#2 String"), ("sentence1", "sentence2"), "Quality", BINARY,
        ("not_equivalent", "equivalent"), ACCURACY_F1, "f1", test_files=_test("MRPC"),
    ),
    "stsb": Task(
        "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", (), (), ("pearson", "spearmanr"),
        "spearmanr", test_files=_test("STS-B"),
    ),
    "qqp": Task(
        "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate", BINARY,
        ("not_duplicate", "duplicate"), ACCURACY_F1, "f1", test_files=_test("QQP"), test_id_column="id",
    ),
    "mnli": Task(
        "MNLI", ("sentence1", "sentence2"), ("premise", "hypothesis"), "gold_label",
        ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"), ACCURACY, "accuracy",
        dev_files=(("validation_matched", "dev_matched.tsv"), ("validation_mismatched", "dev_mismatched.tsv")),
        # the diagnostic set AX is predicted by the MNLI model; its file sits in the release's diagnostic/ folder
        test_files=(
            ("test_matched", "test_matched.tsv", "MNLI-m.tsv"),
            ("test_mismatched", "test_mismatched.tsv", "MNLI-mm.tsv"),
            ("ax", "../diagnostic/diagnostic.tsv", "AX.tsv"),
        ),
    ),
    "qnli": Task(
        "QNLI", ("question", "sentence"), ("question", "sentence"), "label", NLI, NLI, ACCURACY, "accuracy",
        test_files=_test("QNLI"),
    ),
    "rte": Task(
        "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", NLI, NLI, ACCURACY, "accuracy",
        test_files=_test("RTE"),
    ),
    "wnli": Task(
        "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label", BINARY,
        ("not_entailment", "entailment"), ACCURACY, "accuracy", test_files=_test("WNLI"),
    ),
}  # fmt: skip
# MNLI's two dev sets report their metrics as accuracy_m and accuracy_mm, as the leaderboard's MNLI-m and MNLI-mm
SPLIT_SUFFIX = {"validation_matched": "_m", "validation_mismatched": "_mm"}

# the metric module's config names: every task, MNLI's dev sets by name, and the diagnostic AX (Matthews corr.)
METRIC_CONFIGS: dict[str, tuple[str, ...]] = {
    **{name: task.metrics for name, task in TASKS.items()},
    "mnli_matched": TASKS["mnli"].metrics,
    "mnli_mismatched": TASKS["mnli"].metrics,
    "ax": ("matthews_correlation",),
}
REGRESSION_CONFIGS = {name for name, task in TASKS.items() if task.is_regression}


def main_metric_name(name: str) -> str:
    """The main metric as the results name it: MNLI's is matched accuracy (`accuracy_m`)."""
    task = TASKS[name]
    (split, _), *_ = task.dev_files
    return f"{task.main_metric}{SPLIT_SUFFIX.get(split, '')}"
