"""Push a finished run (pretraining output, a GLUE task folder or a tokenizer) to the Hub in one commit.

    python recipes/push_to_hub.py runs/bert-base --hub_model_id your-name/bert-base [--hub_private_repo true]
    python recipes/push_to_hub.py runs/glue/sst2 --hub_model_id your-name/bert-base-sst2
    python recipes/push_to_hub.py runs/tokenizer --hub_model_id your-name/wordpiece-30k

The card (README.md) is generated from the folder's files; a pretrained model's card also shows the held-out MLM
scores and GLUE medians given by --mlm_eval_file (recipes/evaluate_mlm.py's output) and --glue_results_file
(recipes/finetune_glue.py's glue_results.json). The token comes from HF_TOKEN or `hf auth login`.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from bert_recipes.config import parse_config
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.hub import HubConfig, check_hub_access, push_folder
from bert_recipes.model_card import card_for_folder


@dataclass
class PushConfig:
    output_dir: str = field(default="", metadata={"help": "The run's output directory (also the first argument)."})
    mlm_eval_file: str | None = field(
        default=None, metadata={"help": "recipes/evaluate_mlm.py's JSON output for this model, shown on its card."}
    )
    glue_results_file: str | None = field(
        default=None, metadata={"help": "glue_results.json of recipes/finetune_glue.py on this model, for its card."}
    )


def read_results(path: str | None, flag: str) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{flag} '{path}' cannot be read as JSON ({err}): pass the file the recipe wrote") from None


def main(argv: list[str]) -> None:
    if argv and not argv[0].startswith("-"):
        argv = ["--output_dir", *argv]
    push, hub = parse_config([PushConfig, HubConfig], argv)
    if not push.output_dir or not Path(push.output_dir).is_dir():
        raise UsageError(
            f"'{push.output_dir}' is not a folder: python recipes/push_to_hub.py OUTPUT_DIR --hub_model_id NAME"
        )
    hub.push_to_hub = True
    repo_id = check_hub_access(hub)
    glue = read_results(push.glue_results_file, "--glue_results_file")
    card = card_for_folder(push.output_dir, repo_id, glue, read_results(push.mlm_eval_file, "--mlm_eval_file"))
    url = push_folder(push.output_dir, hub, f"Upload {push.output_dir}", card)
    print(f"pushed {push.output_dir} to {url}")


if __name__ == "__main__":
    run_cli(main)
