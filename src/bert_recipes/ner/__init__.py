"""Fine-tune and evaluate a BERT checkpoint on named-entity recognition (CoNLL-2003, WNUT-17, any CoNLL file).

config.py holds the recipe's arguments, data.py reads sentences and labels word pieces, finetune.py trains, tags
and scores (with the conlleval metrics in bert_recipes/metrics/ner).
"""

from bert_recipes.ner.config import NER_ARGUMENTS, NerConfig, NerDataConfig, NerTrainingArguments
from bert_recipes.ner.data import iob1_to_iob2, label_list, load_sentences, piece_labels, read_conll, tokenize_sentences
from bert_recipes.ner.finetune import run_ner, score_tags, word_tags

__all__ = [
    "NER_ARGUMENTS",
    "NerConfig",
    "NerDataConfig",
    "NerTrainingArguments",
    "iob1_to_iob2",
    "label_list",
    "load_sentences",
    "piece_labels",
    "read_conll",
    "run_ner",
    "score_tags",
    "tokenize_sentences",
    "word_tags",
]
