"""Write BERT pretraining examples to disk (Parquet shards) for repeated epochs.

    python recipes/prepare_data.py --train_files corpus.txt.gz --tokenizer_name_or_path runs/tokenizer \
        --max_seq_length 128 --dupe_factor 5 --num_proc 8 --output_dir data/prepared-128
    # then: recipes/pretrain.py ... --max_seq_length 128 --prepared_data_dir data/prepared-128

The examples are the ones recipes/pretrain.py would stream with the same seed; each of the `--dupe_factor` copies
of the corpus is paired anew (as the next epoch of the stream would be). Masking stays dynamic, in the trainer.
"""

from dataclasses import dataclass, field

from bert_recipes.config import parse_config, save_config
from bert_recipes.corpus import CorpusConfig, check_corpus
from bert_recipes.data import DataConfig, prepare_to_disk, validate_data_config
from bert_recipes.errors import run_cli
from bert_recipes.tokenization import load_tokenizer


@dataclass
class PrepareConfig:
    tokenizer_name_or_path: str = field(default="runs/tokenizer", metadata={"help": "Tokenizer dir or Hub id."})
    output_dir: str = field(default="runs/prepared", metadata={"help": "Where the train/ and eval/ shards go."})
    seed: int = field(default=42, metadata={"help": "Seed for pairing; pretrain.py's --seed gives the same pairs."})
    dupe_factor: int = field(default=1, metadata={"help": "Copies of the corpus, each paired differently."})
    num_proc: int = field(default=1, metadata={"help": "Worker processes."})


def main(argv: list[str]) -> None:
    corpus, data, prepare = parse_config([CorpusConfig, DataConfig, PrepareConfig], argv)
    check_corpus(corpus)
    tokenizer = load_tokenizer(prepare.tokenizer_name_or_path)
    validate_data_config(data, tokenizer)
    counts = prepare_to_disk(
        corpus, data, tokenizer, prepare.output_dir, prepare.seed, prepare.dupe_factor, prepare.num_proc
    )
    save_config(f"{prepare.output_dir}/prepare_args.yaml", corpus, data, prepare)
    print(f"wrote {counts['train']:,} training and {counts['eval']:,} held-out examples to {prepare.output_dir}")


if __name__ == "__main__":
    run_cli(main)
