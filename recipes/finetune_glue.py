"""Fine-tune and evaluate a BERT checkpoint on GLUE (one task, a comma list, or all nine one after another).

    accelerate launch recipes/finetune_glue.py --config recipes/configs/glue.yaml \
        --model_name_or_path runs/bert-base --task_name sst2 --output_dir runs/glue

Every transformers TrainingArguments flag works (--bf16, --eval_strategy, --load_best_model_at_end ...; see --help),
with the BERT paper's defaults. Data comes from the Hub (nyu-mll/glue) unless --data_dir names the original GLUE
layout or --train_file and --validation_file name custom files. Five seeds per learning rate, resumable:

    python recipes/finetune_glue.py --model_name_or_path runs/demo/bert --task_name rte,mrpc --data_dir data/glue \
        --output_dir runs/glue --seeds 1,2,3,4,5 --learning_rates 2.0e-5,3.0e-5,5.0e-5 --resume_from_checkpoint true
"""

from pathlib import Path

from accelerate import PartialState

from bert_recipes.config import parse_config
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.finetuning_card import finetuning_card
from bert_recipes.glue import GLUE_ARGUMENTS, RENAMED_FLAGS, GlueConfig, hub_config, results_markdown, run_glue
from bert_recipes.hub import check_hub_access, push_folder


def main(argv: list[str]) -> None:
    task, model, training, hub_extra = parse_config(GLUE_ARGUMENTS, argv, renamed=RENAMED_FLAGS)
    config, hub = GlueConfig(task, model, training), hub_config(training, hub_extra)
    if hub.push_to_hub and (task.task_name == "all" or "," in task.task_name):
        raise UsageError("--push_to_hub pushes one fine-tuned model: pick one --task_name")
    repo_id = check_hub_access(hub)
    results = run_glue(config)
    if PartialState().is_main_process:
        print(results_markdown(results))
    if repo_id:
        task_dir = Path(training.output_dir) / task.task_name
        medians = {name: result.median for name, result in results.items()}
        card = finetuning_card(task_dir, medians, model.model_name_or_path, repo_id)
        push_folder(task_dir, hub, f"Fine-tuned on GLUE {task.task_name}", card)
        print(f"pushed to {repo_id}")


if __name__ == "__main__":
    # run_glue sets up the process state itself (CPU ranks when there is no GPU)
    run_cli(main, init_state=False)
