"""Push a finished run (pretraining output, GLUE task output or tokenizer) to the Hub in one commit.

python recipes/push_to_hub.py --output_dir runs/bert-base --hub_model_id your-name/bert-base
"""

from dataclasses import dataclass, field
from pathlib import Path

from bert_recipes.config import parse_config
from bert_recipes.errors import UsageError, run_cli
from bert_recipes.hub import HubConfig, push_folder
from bert_recipes.model_card import pretraining_card, tokenizer_card


@dataclass
class PushConfig:
    output_dir: str = field(default="runs/pretrain", metadata={"help": "The run's output directory to push."})


def card_for(folder: Path, repo_id: str):
    if (folder / "model.safetensors").is_file() and (folder / "metrics.jsonl").is_file():
        return pretraining_card(folder, repo_id)
    if (folder / "tokenizer.json").is_file() and not (folder / "config.json").is_file():
        return tokenizer_card(folder, repo_id)
    return None


def main(argv: list[str]) -> None:
    push, hub = parse_config([PushConfig, HubConfig], argv)
    folder = Path(push.output_dir)
    if not (folder / "tokenizer.json").is_file():
        raise UsageError(f"'{folder}' holds no finished run (no tokenizer.json): pass the run's --output_dir")
    hub.push_to_hub = True
    repo_id = hub.hub_model_id if hub.hub_model_id and "/" in hub.hub_model_id else None
    card = card_for(folder, repo_id or f"{hub.hub_model_id}")
    pushed = push_folder(folder, hub, f"Upload {folder.name}", card)
    print(f"pushed {folder} to {pushed}")


if __name__ == "__main__":
    run_cli(main)
