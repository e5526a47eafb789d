"""Fine-tune and evaluate a BERT checkpoint on extractive question answering: SQuAD v1.1, or v2.0 with
--version_2_with_negative true (questions whose answer is not in the context).

    accelerate launch recipes/finetune_qa.py --model_name_or_path runs/bert-base --output_dir runs/squad

Data comes from the Hub (rajpurkar/squad, rajpurkar/squad_v2) unless --train_file and --validation_file name files
in the official SQuAD JSON format. Contexts longer than --max_seq_length are read in windows overlapping by
--doc_stride tokens; each question's answer is the best span over its windows. Every transformers
TrainingArguments flag works (see --help), with the BERT paper's SQuAD defaults. Writes, in --output_dir: the kept
model, predictions.json in the official format ({id: answer}, "" for no answer), eval_results.json (exact_match and
f1; for v2.0 exact, f1, HasAns_*, NoAns_*, and best_f1 with the --null_score_diff_threshold that reaches it),
null_odds.json for v2.0; one folder per run under runs/. Offline, on the samples in the repository:

    python recipes/finetune_qa.py --model_name_or_path runs/demo/bert --version_2_with_negative true \
        --train_file data/squad/v2.0/train.json --validation_file data/squad/v2.0/dev.json \
        --output_dir runs/squad_v2 --seeds 1,2,3 --max_seq_length 256 --doc_stride 64
"""

from accelerate import PartialState

from bert_recipes.config import parse_config
from bert_recipes.errors import run_cli
from bert_recipes.finetuning import RENAMED_FLAGS, format_metrics, hub_config
from bert_recipes.finetuning_card import finetuning_card
from bert_recipes.hub import check_hub_access, push_folder
from bert_recipes.qa import QA_ARGUMENTS, QaConfig, run_qa


def main(argv: list[str]) -> None:
    data, model, training, hub_extra = parse_config(QA_ARGUMENTS, argv, renamed=RENAMED_FLAGS)
    config, hub = QaConfig(data, model, training), hub_config(training, hub_extra)
    repo_id = check_hub_access(hub)
    result = run_qa(config)
    if PartialState().is_main_process:
        scores = {name: value for name, value in result.median.items() if not name.endswith(("total", "thresh"))}
        spread = (result.low, result.high) if result.seeds > 1 else (None, None)
        version = "v2.0" if data.version_2_with_negative else "v1.1"
        print(f"SQuAD {version} dev, median over {result.seeds} seed(s): {format_metrics(scores, *spread, scale=1)}")
    if repo_id:
        task = "squad_v2" if data.version_2_with_negative else "squad"
        card = finetuning_card(training.output_dir, {task: result.median}, model.model_name_or_path, repo_id)
        push_folder(training.output_dir, hub, f"Fine-tuned on {task}", card)
        print(f"pushed to {repo_id}")


if __name__ == "__main__":
    # run_qa sets up the process state itself (CPU ranks when there is no GPU)
    run_cli(main, init_state=False)
