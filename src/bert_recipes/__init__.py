"""bert-recipes: pretrain BERT from scratch and fine-tune it on GLUE, SQuAD and NER with the Hugging Face stack."""

__version__ = "0.1.0"
