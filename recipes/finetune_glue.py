"""Fine-tune and evaluate a BERT checkpoint on GLUE.

    accelerate launch recipes/finetune_glue.py --model_name_or_path runs/bert-base --task_name sst2 \
        --output_dir runs/glue [--config recipes/configs/glue.yaml]
    python recipes/finetune_glue.py --model_name_or_path runs/demo/bert --task_name all --data_dir data/glue
"""

from pathlib import Path

from bert_recipes.config import parse_config, save_config
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.glue import GlueConfig, results_markdown, run_glue
from bert_recipes.hub import HubConfig, check_hub_access, push_folder
from bert_recipes.model_card import finetuning_card


def main(argv: list[str]) -> None:
    config, hub = parse_config([GlueConfig, HubConfig], argv)
    if hub.push_to_hub and config.task_name == "all":
        raise UsageError("--push_to_hub pushes one fine-tuned model: pick one --task_name, not all")
    repo_id = check_hub_access(hub)
    results = run_glue(config)
    print(results_markdown(results))
    if repo_id:
        task_dir = Path(config.output_dir) / config.task_name
        save_config(task_dir / "finetune_args.yaml", config)
        card = finetuning_card(task_dir, results, config.model_name_or_path, repo_id)
        push_folder(task_dir, hub, f"Fine-tuned on GLUE {config.task_name}", card)
        print(f"pushed to {repo_id}")


if __name__ == "__main__":
    run_cli(main)
