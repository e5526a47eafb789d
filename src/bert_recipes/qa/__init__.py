"""Fine-tune and evaluate a BERT checkpoint on extractive question answering (SQuAD v1.1 and v2.0).

config.py holds the recipe's arguments, data.py reads questions and cuts contexts into windows, spans.py turns
logits back into answers, finetune.py trains and scores (with the official metrics in bert_recipes/metrics/squad).
"""

from bert_recipes.qa.config import QA_ARGUMENTS, QaConfig, QaDataConfig, QaTrainingArguments
from bert_recipes.qa.data import answer_tokens, load_squad, read_squad_json, tokenize_squad
from bert_recipes.qa.finetune import run_qa, score_answers
from bert_recipes.qa.spans import Answers, decode_answers

__all__ = [
    "QA_ARGUMENTS",
    "Answers",
    "QaConfig",
    "QaDataConfig",
    "QaTrainingArguments",
    "answer_tokens",
    "decode_answers",
    "load_squad",
    "read_squad_json",
    "run_qa",
    "score_answers",
    "tokenize_squad",
]
