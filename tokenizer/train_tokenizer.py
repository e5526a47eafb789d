"""Train a BERT WordPiece tokenizer.

python tokenizer/train_tokenizer.py --train_files corpus.txt.gz --vocab_size 30522 --output_dir tok/
python tokenizer/train_tokenizer.py --config recipes/configs/tokenizer-demo.yaml --output_dir tok/
"""

from dataclasses import dataclass, field

from bert_recipes.config import parse_config, save_config
from bert_recipes.corpus import CorpusConfig, check_corpus_given, iter_texts, load_corpus
from bert_recipes.errors import run_cli
from bert_recipes.hub import HubConfig, check_hub_access, push_folder
from bert_recipes.model_card import tokenizer_card
from bert_recipes.tokenization import TokenizerConfig, save_tokenizer, train_tokenizer


@dataclass
class OutputConfig:
    output_dir: str = field(default="runs/tokenizer", metadata={"help": "Where to save the tokenizer."})


def main(argv: list[str]) -> None:
    corpus_config, tokenizer_config, output, hub = parse_config(
        [CorpusConfig, TokenizerConfig, OutputConfig, HubConfig], argv
    )
    check_corpus_given(corpus_config)
    repo_id = check_hub_access(hub)
    tokenizer = train_tokenizer(iter_texts(load_corpus(corpus_config)), tokenizer_config)
    save_tokenizer(tokenizer, output.output_dir)
    save_config(f"{output.output_dir}/training_args.yaml", corpus_config, tokenizer_config, output)
    print(f"saved a {len(tokenizer):,}-token WordPiece tokenizer to {output.output_dir}")
    if repo_id:
        push_folder(output.output_dir, hub, "Upload tokenizer", tokenizer_card(output.output_dir, repo_id))
        print(f"pushed to {repo_id}")


if __name__ == "__main__":
    run_cli(main)
