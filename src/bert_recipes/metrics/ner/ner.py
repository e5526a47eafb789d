"""Entity-level precision, recall and F1 as conlleval computes them (the CoNLL-2000/2003 shared tasks' script, and
seqeval in its default mode), an `evaluate` module loaded by path so nothing is fetched.

    evaluate.load("src/bert_recipes/metrics/ner").compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])

An entity is a span of B-/I- tags of one type, read as conlleval reads IOB1 and IOB2 alike: an I- tag after O or
after another type starts an entity; a predicted entity counts when its type and both ends match a gold one.
Returns overall_precision, overall_recall, overall_f1, overall_accuracy (tokens whose tag is right) and, per type,
TYPE_precision, TYPE_recall, TYPE_f1 and TYPE_number (gold entities); fractions, as seqeval returns them.
"""

import datasets
import evaluate

_DESCRIPTION = "Entity-level precision, recall and F1 (conlleval), and token accuracy, of IOB1 or IOB2 tags."
_CITATION = (
    "Tjong Kim Sang, De Meulder. Introduction to the CoNLL-2003 Shared Task: Language-Independent Named Entity "
    "Recognition. CoNLL 2003."
)
_KWARGS = """
Args:
    predictions: one list of tags per sentence (O, B-TYPE, I-TYPE).
    references: the gold tags, the same lengths.
Returns:
    overall_precision, overall_recall, overall_f1, overall_accuracy, and TYPE_precision/_recall/_f1/_number per type.
"""


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """The (type, first, last + 1) spans of a sentence's tags."""
    found, start, kind = set(), 0, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-")
        begins = prefix == "B" or (prefix == "I" and tag_type != kind)
        if kind is not None and (prefix not in ("B", "I") or begins):
            found.add((kind, start, i))
            kind = None
        if begins:
            start, kind = i, tag_type
    return found


def precision_recall_f1(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def conll_scores(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    predicted, gold, right_tokens, tokens = set(), set(), 0, 0
    for sentence, (guess, truth) in enumerate(zip(predictions, references, strict=True)):
        if len(guess) != len(truth):
            raise ValueError(f"sentence {sentence}: {len(guess)} predicted tags for {len(truth)} gold tags")
        predicted |= {(sentence, *span) for span in entities(guess)}
        gold |= {(sentence, *span) for span in entities(truth)}
        right_tokens += sum(g == t for g, t in zip(guess, truth, strict=True))
        tokens += len(truth)
    correct = predicted & gold
    scores = dict(
        zip(
            ("overall_precision", "overall_recall", "overall_f1"),
            precision_recall_f1(len(correct), len(predicted), len(gold)),
            strict=True,
        )
    )
    scores["overall_accuracy"] = right_tokens / tokens if tokens else 0.0
    for kind in sorted({span[1] for span in gold | predicted}):
        counts = [sum(span[1] == kind for span in spans) for spans in (correct, predicted, gold)]
        values = precision_recall_f1(*counts)
        scores.update(zip((f"{kind}_precision", f"{kind}_recall", f"{kind}_f1"), values, strict=True))
        scores[f"{kind}_number"] = counts[2]
    return scores


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Ner(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": tags, "references": tags}),
        )

    def _compute(self, predictions, references):
        return conll_scores(predictions, references)
