"""Held-out masked-LM loss, accuracy and perplexity (and NSP accuracy) of BERT checkpoints, side by side on the same
masked positions; prints a table and writes JSON.

    python recipes/evaluate_mlm.py --model_name_or_path runs/demo/bert runs/dapt \
        --validation_files held_out.txt.gz [--max_seq_length 128 --mlm_probability 0.15 --seed 0]
"""

from bert_recipes.config import parse_config
from bert_recipes.errors import run_cli
from bert_recipes.evaluation import HeldOutDataConfig, MlmEvalConfig, evaluate_checkpoints, results_table, write_results


def main(argv: list[str]) -> None:
    config, data = parse_config([MlmEvalConfig, HeldOutDataConfig], argv)
    results = evaluate_checkpoints(config, data)
    print(results_table(results))
    write_results(config.output_file, results, config, data)
    print(f"wrote {config.output_file}")


if __name__ == "__main__":
    run_cli(main)
