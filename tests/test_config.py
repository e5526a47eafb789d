"""Configuration: dataclass default < YAML < command line; unknown keys and bad values are clear errors; the
corpus and the tokenizer have no defaults outside the demo config."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from accelerate.state import AcceleratorState, GradientState
from transformers import BertForPreTraining, TrainingArguments

from bert_recipes.config import parse_config, save_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.errors import UsageError
from bert_recipes.modeling import ModelConfig
from bert_recipes.trainer import Pretrainer, TrainConfig
from tests.conftest import DEMO_CORPUS, REPO_ROOT

NO_CORPUS = "error: no corpus given: pass --train_files FILE [FILE ...] or --dataset_name NAME"


@dataclass
class Example:
    learning_rate: float = field(default=1.0e-4, metadata={"help": "lr"})
    max_steps: int = field(default=10, metadata={"help": "steps"})
    files: list[str] = field(default_factory=lambda: ["a.txt"], metadata={"help": "files"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase"})
    name: str | None = field(default=None, metadata={"help": "name"})


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_yaml_overrides_defaults_and_cli_overrides_yaml(tmp_path):
    path = write(tmp_path, "learning_rate: 3.0e-4\nmax_steps: 50\nfiles: [x.txt, y.txt]\nlowercase: false\n")
    (config,) = parse_config([Example], ["--config", path, "--max_steps", "7"])
    assert config == Example(learning_rate=3.0e-4, max_steps=7, files=["x.txt", "y.txt"], lowercase=False)


def test_defaults_apply_without_a_file():
    (config,) = parse_config([Example], [])
    assert config == Example()


def test_saved_config_reads_back_identically(tmp_path):
    config = Example(learning_rate=2.0e-5, max_steps=3, files=["q.txt"], lowercase=False, name="run")
    save_config(tmp_path / "saved.yaml", config)
    assert parse_config([Example], ["--config", str(tmp_path / "saved.yaml")]) == (config,)


@pytest.mark.parametrize(
    ("yaml_text", "cli", "message"),
    [
        ("learning_rat: 1.0\n", [], "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
        ("", ["--max_step", "3"], "unknown key 'max_step' (did you mean 'max_steps'?)"),
        ("- a\n- b\n", [], "must be a mapping"),
        ("key: [unclosed\n", [], "not valid YAML"),
    ],
)
def test_bad_config_raises_a_usage_error_naming_the_key(tmp_path, yaml_text, cli, message):
    with pytest.raises(UsageError) as err:
        parse_config([Example], ["--config", write(tmp_path, yaml_text), *cli])
    assert message in str(err.value)
    if "unknown key" in message:
        assert "valid keys: files, learning_rate, lowercase, max_steps, name" in str(err.value)


def test_wrong_value_type_is_a_usage_error_naming_the_argument(tmp_path):
    with pytest.raises(UsageError, match="--max_steps/--max-steps: invalid int value: 'many'"):
        parse_config([Example], ["--config", write(tmp_path, "max_steps: many\n")])


def test_dashed_and_negated_flags_are_accepted():
    (config,) = parse_config([Example], ["--max-steps", "4", "--no_lowercase"])
    assert (config.max_steps, config.lowercase) == (4, False)


def test_missing_config_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        parse_config([Example], ["--config", str(tmp_path / "nope.yaml")])


def error_lines(script: str, *args: str) -> list[str]:
    """The `error:` lines of a recipe run from the repo root, where the demo corpus sits; it must exit 2."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("script", ["recipes/pretrain.py", "recipes/prepare_data.py"])
def test_a_recipe_without_a_corpus_names_both_corpus_flags(script, tokenizer_dir, tmp_path):
    args = ["--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(tmp_path / "out")]
    assert error_lines(script, *args) == [NO_CORPUS]
    assert not (tmp_path / "out").exists()


def test_pretraining_without_a_tokenizer_names_the_tokenizer_flag(tmp_path):
    (line,) = error_lines("recipes/pretrain.py", "--train_files", DEMO_CORPUS, "--output_dir", str(tmp_path / "out"))
    assert line.startswith("error: no tokenizer given: pass --tokenizer_name_or_path")


def test_bert_base_config_without_a_corpus_is_refused_before_a_model_is_built(tokenizer_dir, tmp_path, monkeypatch):
    def build(*args, **kwargs):
        raise AssertionError("a BERT was built before the missing corpus was noticed")

    monkeypatch.setattr(BertForPreTraining, "__init__", build)
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    overrides = ["--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(tmp_path / "run")]
    configs = parse_config(
        [CorpusConfig, DataConfig, ModelConfig, TrainConfig],
        ["--config", str(REPO_ROOT / "recipes" / "configs" / "bert-base.yaml"), *overrides],
    )
    with pytest.raises(UsageError) as err:
        Pretrainer(*configs)
    assert f"error: {err.value}" == NO_CORPUS
    assert not (tmp_path / "run").exists()


@dataclass
class PaperArguments(TrainingArguments):
    learning_rate: float = field(default=2.0e-5, metadata={"help": "lr"})


def test_training_arguments_take_yaml_then_command_line_over_their_defaults(tmp_path):
    path = write(tmp_path, "learning_rate: 3.0e-5\nmax_steps: 50\nlr_scheduler_kwargs: {power: 2.0}\nreport_to: []\n")
    (args,) = parse_config([PaperArguments], ["--config", path, "--max_steps", "7", "--use_cpu", "true"])
    assert (args.learning_rate, args.max_steps, args.use_cpu, args.report_to) == (3.0e-5, 7, True, [])
    assert args.lr_scheduler_kwargs == {"power": 2.0}
    (default,) = parse_config([PaperArguments], [])
    assert default.learning_rate == 2.0e-5 and default.per_device_train_batch_size == 8


def test_saved_training_arguments_read_back_identically(tmp_path):
    overrides = ["--eval_strategy", "steps", "--eval_steps", "5", "--hub_token", "secret", "--output_dir", "out"]
    (args,) = parse_config([PaperArguments], [*overrides, "--lr_scheduler_kwargs", '{"power": 2.0}'])
    save_config(tmp_path / "saved.yaml", args)
    assert "secret" not in (tmp_path / "saved.yaml").read_text()
    (again,) = parse_config([PaperArguments], ["--config", str(tmp_path / "saved.yaml")])
    assert {**again.to_dict(), "hub_token": "<HUB_TOKEN>"} == args.to_dict()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lerning_rate", "1"], "unknown key 'lerning_rate' (did you mean 'learning_rate'?); --help lists them all"),
        (["--warmup_ratio", "0.1"], "command line: 'warmup_ratio' is now spelled 'warmup_steps' (--help describes it)"),
        (
            ["--load_best_model_at_end", "true", "--eval_strategy", "steps", "--save_strategy", "epoch"],
            "--load_best_model_at_end requires the save and eval strategy to match",
        ),
    ],
)
def test_training_argument_errors_are_one_line_usage_errors(argv, message):
    with pytest.raises(UsageError) as err:
        parse_config([PaperArguments], argv, renamed={"warmup_ratio": "warmup_steps"})
    assert message in str(err.value) and "\n" not in str(err.value)
