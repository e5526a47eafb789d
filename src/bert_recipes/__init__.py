"""bert-recipes: pretrain BERT from scratch and fine-tune it on GLUE with the Hugging Face stack."""

__version__ = "0.1.0"
