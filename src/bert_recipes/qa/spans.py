"""From start and end logits over windows back to answers: the best span of each question across all its windows
(n-best starts times n-best ends, at most --max_answer_length tokens), and for SQuAD v2.0 the choice between that
span and no answer. Written here because no library turns logits into SQuAD answers; the rule is BERT's
(google-research/bert run_squad.py): a span scores start + end logit, no answer scores the [CLS] pair in the
window where that is lowest, and no answer wins when it beats the best span by more than the threshold."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import datasets
import numpy as np

from bert_recipes.qa.config import QaDataConfig


@dataclass
class Answers:
    texts: dict[str, str]  # question id -> answer text ("" for no answer), the official predictions.json
    null_odds: dict[str, float]  # question id -> no-answer score minus best span score (v2.0's na_prob)


def best_span(
    start: np.ndarray, end: np.ndarray, offsets: list, n_best: int, max_tokens: int
) -> tuple[float, tuple[int, int] | None]:
    """The best-scoring (start + end logit) span of one window, as character offsets into the context; only
    context tokens count (their offsets are not None), and the end may not come before the start."""
    length = len(offsets)  # logits past the window's own length are batch padding
    starts = [k for k in np.argsort(start[:length])[::-1][:n_best] if offsets[k] is not None]
    ends = [k for k in np.argsort(end[:length])[::-1][:n_best] if offsets[k] is not None]
    best_score, best = -np.inf, None
    for s in starts:
        for e in ends:
            if s <= e < s + max_tokens and start[s] + end[e] > best_score:
                best_score, best = float(start[s] + end[e]), (offsets[s][0], offsets[e][1])
    return best_score, best


def decode_answers(
    questions: datasets.Dataset, windows: datasets.Dataset, start_logits: np.ndarray, end_logits: np.ndarray,
    data: QaDataConfig,
) -> Answers:  # fmt: skip
    """Each question's answer from the logits of its windows (rows of `windows`, in their order)."""
    by_question = defaultdict(list)
    for row, question_id in enumerate(windows["example_id"]):
        by_question[question_id].append(row)
    offsets = windows["offset_mapping"]
    texts, null_odds = {}, {}
    for question in questions:
        best_score, best_text, null_score = -np.inf, "", np.inf
        for row in by_question[question["id"]]:
            score, span = best_span(
                start_logits[row], end_logits[row], offsets[row], data.n_best_size, data.max_answer_length
            )
            if span is not None and score > best_score:
                best_score, best_text = score, question["context"][span[0] : span[1]]
            null_score = min(null_score, float(start_logits[row][0] + end_logits[row][0]))  # [CLS] comes first
        odds = null_score - best_score
        null_odds[question["id"]] = float(odds) if np.isfinite(odds) else 1e9  # JSON has no infinity
        no_answer = data.version_2_with_negative and odds > data.null_score_diff_threshold
        texts[question["id"]] = "" if no_answer else best_text
    return Answers(texts, null_odds)
