"""YAML + command-line configuration: dataclass defaults < YAML file < `--key value` overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from transformers import HfArgumentParser

from bert_recipes.errors import UsageError

T = TypeVar("T")
# past this many keys (TrainingArguments has over 100) the error points to --help instead of listing them
LISTED_KEYS = 40


def field_names(*config_types: type) -> list[str]:
    return [f.name for t in config_types for f in dataclasses.fields(t)]


def _read_yaml(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"config file '{path}' does not exist: pass the path of a YAML file to --config")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise UsageError(f"config file '{path}' is not valid YAML{where}: fix its syntax") from None
    if not isinstance(values, dict):
        raise UsageError(f"config file '{path}' must be a mapping of `key: value` lines")
    return values


def _check_keys(values: dict[str, Any], valid: list[str], source: str, renamed: Mapping[str, str]) -> None:
    for key in values:
        if key in renamed:
            raise UsageError(f"{source}: '{key}' is now spelled '{renamed[key]}' (--help describes it)")
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            listed = f"valid keys: {', '.join(sorted(valid))}" if len(valid) <= LISTED_KEYS else "--help lists them all"
            raise UsageError(f"{source}: unknown key '{key}'{hint}; {listed}")


def _as_cli_tokens(values: dict[str, Any]) -> list[str]:
    """Turn YAML values into `--key value` tokens so argparse type-checks them like command-line input."""
    tokens: list[str] = []
    for key, value in values.items():
        # argparse has no spelling for None or an empty list: the field keeps its default
        if value is None or value == []:
            continue
        tokens.append(f"--{key}")
        if isinstance(value, list):
            tokens.extend(str(v) for v in value)
        elif isinstance(value, dict):
            # TrainingArguments reads its dict fields (lr_scheduler_kwargs ...) from a JSON string
            tokens.append(json.dumps(value))
        elif isinstance(value, bool):
            tokens.append("true" if value else "false")
        else:
            tokens.append(str(value))
    return tokens


def _split_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    if "--config" not in argv:
        return None, argv
    at = argv.index("--config")
    if at + 1 >= len(argv):
        raise UsageError("--config needs the path of a YAML file")
    return argv[at + 1], argv[:at] + argv[at + 2 :]


def _check_cli_keys(argv: list[str], valid: list[str], renamed: Mapping[str, str]) -> None:
    flags = [a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")]
    accepted = {*valid, *(f"no_{name}" for name in valid), "help"}
    for flag in flags:
        if flag not in accepted:
            _check_keys({flag: None}, valid, "command line", renamed)


class _Parser(HfArgumentParser):
    """argparse prints usage and exits on a bad value; we want the one-line error every recipe gives."""

    def error(self, message: str):
        raise UsageError(f"{message} (check the config file and the command line)")


def parse_config(
    config_types: Sequence[type], argv: list[str] | None = None, renamed: Mapping[str, str] | None = None
) -> tuple:
    """Parse `config_types` from `--config FILE.yaml` plus `--key value` overrides; returns one instance each.

    Unknown keys (in the YAML file or on the command line) are errors that name the nearest valid key, or the new
    name of a key listed in `renamed` (old name -> new name). A value a dataclass refuses in its `__post_init__`
    (TrainingArguments checks its strategies there) is an error too.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    renamed = renamed or {}
    config_path, argv = _split_config_flag(argv)
    valid = field_names(*config_types)
    _check_cli_keys(argv, valid, renamed)
    yaml_tokens: list[str] = []
    if config_path is not None:
        values = _read_yaml(config_path)
        _check_keys(values, valid, f"config file '{config_path}'", renamed)
        yaml_tokens = _as_cli_tokens(values)
    parser = _Parser(list(config_types))
    try:
        return tuple(parser.parse_args_into_dataclasses(args=yaml_tokens + argv))
    except ValueError as err:
        raise UsageError(" ".join(str(err).split())) from None


def config_to_dict(*configs: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for config in configs:
        if hasattr(config, "to_dict"):
            # TrainingArguments: enums as their values; tokens come back masked and would read back as real ones
            values = config.to_dict()
            merged.update({k: v for k, v in values.items() if not k.endswith("_token")})
        else:
            merged.update(dataclasses.asdict(config))
    return merged


def save_config(path: str | Path, *configs: Any) -> None:
    """Write the resolved configuration as YAML that `--config` reads back."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(*configs), sort_keys=False), encoding="utf-8")
