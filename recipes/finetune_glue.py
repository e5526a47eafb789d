"""Fine-tune and evaluate a BERT checkpoint on GLUE.

    accelerate launch recipes/finetune_glue.py --model_name_or_path runs/bert-base --task_name sst2 \
        --output_dir runs/glue [--config recipes/configs/glue.yaml]
    python recipes/finetune_glue.py --model_name_or_path runs/demo/bert --task_name all --data_dir data/glue
"""

from bert_recipes.config import parse_config
from bert_recipes.errors import run_cli
from bert_recipes.glue import GlueConfig, results_markdown, run_glue


def main(argv: list[str]) -> None:
    (config,) = parse_config([GlueConfig], argv)
    results = run_glue(config)
    print(results_markdown(results))


if __name__ == "__main__":
    run_cli(main)
