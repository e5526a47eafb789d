"""Configuration: dataclass default < YAML < command line; unknown keys and bad values are clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bert_recipes.config import parse_config, save_config
from bert_recipes.errors import UsageError


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
