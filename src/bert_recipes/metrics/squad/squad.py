"""The SQuAD metrics as the official evaluation scripts compute them (evaluate-v1.1.py and evaluate-v2.0.py), an
`evaluate` module loaded by path so nothing is fetched.

    evaluate.load("src/bert_recipes/metrics/squad", config_name="squad_v2").compute(
        predictions=[{"id": ..., "prediction_text": ..., "no_answer_probability": ...}],
        references=[{"id": ..., "answers": {"text": [...], "answer_start": [...]}}])

Answers are compared after normalisation (lower case, no punctuation, no articles a/an/the, single spaces); each
question scores its best match over its gold answers. Scores are in points (0-100), as the official scripts print.
v1.1: exact_match, f1. v2.0 (an empty prediction is "no answer"; a question without gold answers is only
answered right by one): exact, f1, total, HasAns_* and NoAns_* over the questions with and without an answer, and
best_exact/best_f1 with the no-answer threshold on no_answer_probability that reaches them.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1 (config squad) and v2.0 (config squad_v2) exact match and F1, as the official scripts."
_CITATION = (
    "Rajpurkar, Zhang, Lopyrev, Liang. SQuAD: 100,000+ Questions for Machine Comprehension of Text. EMNLP 2016. "
    "Rajpurkar, Jia, Liang. Know What You Don't Know: Unanswerable Questions for SQuAD. ACL 2018."
)
_KWARGS = """
Args:
    predictions: {"id", "prediction_text"} per question; squad_v2 adds "no_answer_probability" (any score where
        higher means "no answer" is likelier: the best-threshold search only uses its order).
    references: {"id", "answers": {"text": [...], "answer_start": [...]}} per question.
Returns:
    squad: exact_match, f1. squad_v2: exact, f1, total, HasAns_exact, HasAns_f1, HasAns_total, NoAns_exact, NoAns_f1,
    NoAns_total (the groups present), best_exact, best_exact_thresh, best_f1, best_f1_thresh.
"""
ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, articles removed, whitespace collapsed: the official scripts' order."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact(gold: str, prediction: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(prediction))


def f1_v1(gold: str, prediction: str) -> float:
    """Token-overlap F1 of v1.1: no common token (an empty side included) scores 0."""
    gold_tokens, predicted = normalize_answer(gold).split(), normalize_answer(prediction).split()
    common = sum((collections.Counter(gold_tokens) & collections.Counter(predicted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_v2(gold: str, prediction: str) -> float:
    """v2.0's F1: as v1.1, except that an empty side scores 1 when both are empty (a right "no answer")."""
    if not normalize_answer(gold).split() or not normalize_answer(prediction).split():
        return float(normalize_answer(gold).split() == normalize_answer(prediction).split())
    return f1_v1(gold, prediction)


def best_threshold(scores: dict, no_answer: dict, has_answer: dict, predicted: dict) -> tuple[float, float]:
    """The best score reachable by answering "no answer" for every question whose no-answer score is above a
    threshold, and that threshold: walk the questions by rising no-answer score, each one answered in turn."""
    total = sum(not has for has in has_answer.values())  # everything abstains: the unanswerable ones are right
    best, best_at = total, 0.0
    for question in sorted(no_answer, key=no_answer.get):
        if question not in scores:
            continue
        if has_answer[question]:
            total += scores[question]
        elif predicted[question]:
            total -= 1
        if total > best:
            best, best_at = total, no_answer[question]
    return 100.0 * best / len(scores), best_at


def squad_v1(predictions: dict, golds: dict) -> dict:
    em = [max(exact(g, predictions[q]) for g in golds[q]) for q in golds]
    f1 = [max(f1_v1(g, predictions[q]) for g in golds[q]) for q in golds]
    return {"exact_match": 100.0 * sum(em) / len(golds), "f1": 100.0 * sum(f1) / len(golds)}


def squad_v2(predictions: dict, golds: dict, no_answer: dict) -> dict:
    answers = {q: [g for g in gold if normalize_answer(g)] or [""] for q, gold in golds.items()}
    has_answer = {q: answers[q] != [""] for q in golds}
    em = {q: max(exact(g, predictions[q]) for g in answers[q]) for q in golds}
    f1 = {q: max(f1_v2(g, predictions[q]) for g in answers[q]) for q in golds}
    out = {"exact": 100.0 * sum(em.values()) / len(golds), "f1": 100.0 * sum(f1.values()) / len(golds)}
    out["total"] = len(golds)
    for group, wanted in (("HasAns", True), ("NoAns", False)):
        members = [q for q in golds if has_answer[q] == wanted]
        if members:
            out[f"{group}_exact"] = 100.0 * sum(em[q] for q in members) / len(members)
            out[f"{group}_f1"] = 100.0 * sum(f1[q] for q in members) / len(members)
            out[f"{group}_total"] = len(members)
    out["best_exact"], out["best_exact_thresh"] = best_threshold(em, no_answer, has_answer, predictions)
    out["best_f1"], out["best_f1_thresh"] = best_threshold(f1, no_answer, has_answer, predictions)
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Squad(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("squad", "squad_v2"):
            raise KeyError(f"unknown SQuAD version '{self.config_name}': use squad (v1.1) or squad_v2")
        prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        if self.config_name == "squad_v2":
            prediction["no_answer_probability"] = datasets.Value("float64")
        answers = {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": prediction,
                    "references": {"id": datasets.Value("string"), "answers": datasets.Sequence(answers)},
                }
            ),
        )

    def _compute(self, predictions, references):
        texts = {p["id"]: p["prediction_text"] for p in predictions}
        golds = {r["id"]: list(r["answers"]["text"]) for r in references}
        missing = sorted(set(golds) - set(texts))
        if missing:
            raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[0]}")
        if self.config_name == "squad":
            return squad_v1(texts, golds)
        return squad_v2(texts, golds, {p["id"]: p["no_answer_probability"] for p in predictions})
