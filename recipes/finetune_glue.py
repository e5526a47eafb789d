"""Fine-tune and evaluate a BERT checkpoint on GLUE (one task, or all nine one after another).

    accelerate launch recipes/finetune_glue.py --config recipes/configs/glue.yaml \
        --model_name_or_path runs/bert-base --task_name sst2 --output_dir runs/glue

Data comes from the Hub (nyu-mll/glue) unless --data_dir names the original GLUE layout or --train_file and
--validation_file name custom files. On the embedded samples, without a GPU:

    python recipes/finetune_glue.py --model_name_or_path runs/demo/bert --task_name all --data_dir data/glue \
        --output_dir runs/glue
"""

from pathlib import Path

from accelerate import PartialState

from bert_recipes.config import parse_config
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
    if PartialState().is_main_process:
        print(results_markdown(results))
    if repo_id:
        task_dir = Path(config.output_dir) / config.task_name
        card = finetuning_card(task_dir, results, config.model_name_or_path, repo_id)
        push_folder(task_dir, hub, f"Fine-tuned on GLUE {config.task_name}", card)
        print(f"pushed to {repo_id}")


if __name__ == "__main__":
    # run_glue sets up the process state itself (CPU ranks when there is no GPU)
    run_cli(main, init_state=False)
