"""Fine-tune and evaluate a BERT checkpoint on named-entity recognition, from CoNLL files or a Hub dataset.

    accelerate launch recipes/finetune_ner.py --model_name_or_path runs/bert-base \
        --train_file conll2003/eng.train --validation_file conll2003/eng.testa --output_dir runs/ner

CoNLL files hold a token per line with its tag in a column (--label_column, the last by default: CoNLL-2003's
`token POS chunk tag` and WNUT's `token<TAB>tag` both work), a blank line between sentences and `-DOCSTART-` lines
between documents; IOB1 tags (CoNLL-2003) are read as IOB2. A Hub dataset needs `tokens` and `ner_tags`
(--dataset_name eriktks/conll2003). Each word is labelled on its first piece (--label_all_tokens true: every
piece). Scores are conlleval's: entity precision, recall and F1, overall and per type, and token accuracy. Every
transformers TrainingArguments flag works (see --help). Writes, in --output_dir: the kept model, predictions.txt
(`token gold predicted` per line, a blank line between sentences), eval_results.json; one folder per run under
runs/. Offline, on the WNUT-17 samples in the repository:

    python recipes/finetune_ner.py --model_name_or_path runs/demo/bert --train_file data/ner/wnut17/train.txt \
        --validation_file data/ner/wnut17/dev.txt --output_dir runs/wnut17 --seeds 1,2,3
"""

from accelerate import PartialState

from bert_recipes.config import parse_config
from bert_recipes.errors import run_cli
from bert_recipes.finetuning import RENAMED_FLAGS, format_metrics, hub_config
from bert_recipes.finetuning_card import finetuning_card
from bert_recipes.hub import check_hub_access, push_folder
from bert_recipes.ner import NER_ARGUMENTS, NerConfig, run_ner


def main(argv: list[str]) -> None:
    data, model, training, hub_extra = parse_config(NER_ARGUMENTS, argv, renamed=RENAMED_FLAGS)
    config, hub = NerConfig(data, model, training), hub_config(training, hub_extra)
    repo_id = check_hub_access(hub)
    result = run_ner(config)
    if PartialState().is_main_process:
        overall = {name: value for name, value in result.median.items() if name.startswith("overall_")}
        spread = (result.low, result.high) if result.seeds > 1 else (None, None)
        print(f"NER dev, median over {result.seeds} seed(s): {format_metrics(overall, *spread)}")
    if repo_id:
        card = finetuning_card(training.output_dir, {"ner": result.median}, model.model_name_or_path, repo_id)
        push_folder(training.output_dir, hub, "Fine-tuned for named-entity recognition", card)
        print(f"pushed to {repo_id}")


if __name__ == "__main__":
    # run_ner sets up the process state itself (CPU ranks when there is no GPU)
    run_cli(main, init_state=False)
