"""Pretrain BERT (masked LM + next sentence prediction) from a fresh BertConfig, or continue an existing BERT.

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/pretrain.py \
        --config recipes/configs/bert-tiny.yaml --train_files corpus.jsonl.gz [--key value ...]
    python recipes/pretrain.py --config recipes/configs/demo.yaml --output_dir runs/demo/bert
"""

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import run_cli
from bert_recipes.hub import HubConfig
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig


def main(argv: list[str]) -> None:
    corpus, data, model, train, hub = parse_config(
        [CorpusConfig, DataConfig, ModelConfig, TrainConfig, HubConfig], argv
    )
    Pretrainer(corpus, data, model, train, hub).run()


if __name__ == "__main__":
    run_cli(main, init_state=False)
