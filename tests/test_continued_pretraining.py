"""Continue pretraining from any BERT: weights carried over, missing heads initialised fresh and named once, sizes
from the checkpoint, phase 2 at a longer length, and one clear error for every bad start."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertForPreTraining, BertModel

from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig
from bert_recipes.from_checkpoint import load_checkpoint_config, load_pretrained_bert
from bert_recipes.hub import HubConfig
from bert_recipes.modeling import ModelConfig
from bert_recipes.train_config import TrainConfig
from tests.conftest import DEMO_CORPUS, REPO_ROOT
from tests.test_trainer import pretrain_in_process, read_metrics, run_cli, tiny_args

PHASE2 = REPO_ROOT / "recipes" / "configs" / "bert-base-phase2.yaml"
SOURCE_STEPS = 100
HUB_ID = "google-bert/bert-base-uncased"
LENGTH_128 = ["--max_seq_length", "128"]
SHORT = ("--max_steps", "2", "--save_steps", "0", "--eval_steps", "0")


def first_record(output_dir: Path) -> dict:
    return read_metrics(output_dir)[0]


@pytest.fixture(scope="module")
def source_checkpoint(tokenizer_dir, tmp_path_factory) -> Path:
    """checkpoint-100 of a tiny run: 100 steps take the first MLM loss from ln(2000) = 7.6 to about 5.7."""
    out = tmp_path_factory.mktemp("source") / "run"
    steps = str(SOURCE_STEPS)
    pretrain_in_process(tiny_args(tokenizer_dir, out, "--max_steps", steps, "--save_steps", steps, "--eval_steps", "0"))
    return out / f"checkpoint-{SOURCE_STEPS}"


@pytest.fixture(scope="module")
def fresh_run(tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fresh") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, *SHORT))
    return out


@pytest.fixture(scope="module")
def continued_run(source_checkpoint, tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("continued") / "run"
    pretrain_in_process(tiny_args(tokenizer_dir, out, *SHORT, "--model_name_or_path", str(source_checkpoint)))
    return out


def save_as_masked_lm(checkpoint: Path, out: Path) -> Path:
    """`checkpoint` saved as a BertForMaskedLM, with its tokenizer: no NSP head and no pooler."""
    BertForMaskedLM.from_pretrained(checkpoint).save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def masked_lm_checkpoint(source_checkpoint, tmp_path_factory) -> Path:
    return save_as_masked_lm(source_checkpoint, tmp_path_factory.mktemp("masked-lm"))


def test_continued_run_starts_far_below_a_fresh_model(continued_run, fresh_run):
    fresh, continued = first_record(fresh_run), first_record(continued_run)
    # measured: fresh 7.59 (ln 2000 = 7.60), continued 5.72 (the source run's own loss at step 100 is 5.7-6.2):
    # a gap of 1.9 nats; 1.0 is a margin the 100 steps keep, and no fresh model of this size gets there
    assert fresh["mlm_loss"] > 7.3, fresh
    assert continued["mlm_loss"] < fresh["mlm_loss"] - 1.0, (fresh, continued)
    # the same data from its start, and a fresh optimizer and schedule: step 1, warmup lr, same tokens
    assert (continued["step"], continued["tokens_seen"]) == (fresh["step"], fresh["tokens_seen"])
    assert continued["learning_rate"] == pytest.approx(fresh["learning_rate"], rel=1e-9)
    saved = yaml.safe_load((continued_run / "training_args.yaml").read_text())
    assert saved["model_name_or_path"].endswith(f"checkpoint-{SOURCE_STEPS}")
    assert (saved["hidden_size"], saved["num_attention_heads"], saved["intermediate_size"]) == (32, 2, 128)


@pytest.mark.parametrize(
    "model_class, fresh",
    [
        (BertForPreTraining, []),
        (BertForMaskedLM, ["bert.pooler", "cls.seq_relationship"]),
        (BertModel, ["cls.predictions", "cls.seq_relationship"]),
    ],
)
def test_missing_heads_are_initialised_fresh_and_named(model_class, fresh, source_checkpoint, tmp_path):
    model_class.from_pretrained(source_checkpoint).save_pretrained(tmp_path)
    model, new_parts = load_pretrained_bert(str(tmp_path), load_checkpoint_config(str(tmp_path)))
    assert new_parts == fresh
    source = BertForPreTraining.from_pretrained(source_checkpoint).state_dict()
    loaded = model.state_dict()
    kept = [name for name in source if not name.startswith(tuple(fresh))]
    assert len(kept) > 30
    assert all(loaded[name].equal(source[name]) for name in kept)
    drawn = [name for name in source if name.endswith(("dense.weight", "seq_relationship.weight"))]
    assert all(not loaded[name].equal(source[name]) for name in drawn if name not in kept)


def test_masked_lm_checkpoint_warns_once_naming_the_new_nsp_head(masked_lm_checkpoint, continued_run, tmp_path):
    out = tmp_path / "run"
    result = run_cli(*tiny_args(masked_lm_checkpoint, out, *SHORT, "--model_name_or_path", str(masked_lm_checkpoint)))
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "initialised fresh" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert "NSP head (cls.seq_relationship.*)" in warnings[0] and "pooler (bert.pooler.*)" in warnings[0]
    assert "MLM head" not in warnings[0]
    assert "LOAD REPORT" not in result.stderr and "MISSING" not in result.stderr
    # encoder and MLM head are the full checkpoint's, and loading leaves the dropout masks alone: same MLM loss
    # (both NSP heads, trained 100 steps or fresh, sit near ln 2: the fresh weights are compared in the test above)
    assert first_record(out)["mlm_loss"] == pytest.approx(first_record(continued_run)["mlm_loss"], abs=1e-6)


def test_phase2_config_continues_at_length_512_from_a_length_64_checkpoint(source_checkpoint, tmp_path):
    phase2 = yaml.safe_load(PHASE2.read_text())
    phase1 = yaml.safe_load((REPO_ROOT / "recipes" / "configs" / "bert-base.yaml").read_text())
    assert phase2["max_seq_length"] == 512 and phase2["max_steps"] == phase1["max_steps"] // 10
    assert phase2["model_name_or_path"] == f"runs/bert-base/checkpoint-{phase1['max_steps'] * 9 // 10}"
    per_process = phase2["per_device_train_batch_size"] * phase2["gradient_accumulation_steps"]
    assert per_process == phase1["per_device_train_batch_size"] * phase1["gradient_accumulation_steps"]
    out = tmp_path / "phase2"
    args = ["--config", str(PHASE2), "--model_name_or_path", str(source_checkpoint), "--train_files", DEMO_CORPUS]
    args += ["--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2"]
    args += ["--gradient_accumulation_steps", "1", "--eval_steps", "0", "--report_to", "none"]
    pretrain_in_process(args)
    record = first_record(out)
    # two sequences of up to 512 tokens; phase 1 (length 64) could not hold more than 128
    assert record["step"] == 1 and record["tokens_seen"] > 2 * 256, record
    saved = yaml.safe_load((out / "training_args.yaml").read_text())
    assert (saved["max_seq_length"], saved["hidden_size"], saved["max_position_embeddings"]) == (512, 32, 512)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 512


@pytest.fixture(scope="module")
def short_position_checkpoint(tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("positions-64")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=64)  # fmt: skip
    BertForPreTraining(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("case", ["hub_id_offline", "not_a_path", "positions", "size_flag", "tokenizer_size"])
def test_bad_start_gives_one_error_line_and_exit_2(
    case, source_checkpoint, short_position_checkpoint, tokenizer_dir, tmp_path
):
    model, tokenizer, extra, message = {
        "hub_id_offline": (HUB_ID, None, [], f"--model_name_or_path '{HUB_ID}' could not be loaded"),
        "not_a_path": ("runs/bert-base/checkpoint-90000", None, [], "is neither a directory nor a Hub id"),
        "positions": (short_position_checkpoint, None, LENGTH_128, "--max_seq_length 128 exceeds the 64 position"),
        "size_flag": (source_checkpoint, None, ["--hidden_size", "64"], "--hidden_size 64 contradicts"),
        "tokenizer_size": (source_checkpoint, tmp_path / "other-tokenizer", [], "the tokenizer has 2001 tokens but"),
    }[case]  # fmt: skip
    if tokenizer is not None:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tokenizer)
        tokenizer_json = json.loads((tokenizer / "tokenizer.json").read_text())
        tokenizer_json["model"]["vocab"]["zzzextra"] = len(tokenizer_json["model"]["vocab"])
        (tokenizer / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    out = tmp_path / "run"
    args = tiny_args(tokenizer or model, out, "--model_name_or_path", str(model), *extra)
    if tokenizer is None:
        at = args.index("--tokenizer_name_or_path")
        del args[at : at + 2]
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def documented_commands(section: str) -> list[list[str]]:
    """The commands in the code blocks of a section of docs/pretraining.md, as argument lists."""
    page = (REPO_ROOT / "docs" / "pretraining.md").read_text(encoding="utf-8")
    text = page.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = text.split("```bash\n")[1:]
    return [shlex.split(line) for block in blocks for line in block.split("```")[0].replace("\\\n", "").splitlines()]


def test_two_phase_documented_commands_parse_and_chain(source_checkpoint):
    phases = []
    for command in documented_commands("Two-phase pretraining"):
        args = command[command.index("recipes/pretrain.py") + 1 :]
        assert args[0] == "--config"
        types = [CorpusConfig, DataConfig, ModelConfig, TrainConfig, HubConfig]
        phases.append(parse_config(types, ["--config", str(REPO_ROOT / args[1]), *args[2:]]))
    (_, data1, _, train1, _), (corpus2, data2, model2, train2, _) = phases
    assert (data1.max_seq_length, data2.max_seq_length) == (128, 512)
    # phase 1 saves its final step; phase 2 starts from it and adds the last 10%
    assert model2.model_name_or_path == f"{train1.output_dir}/checkpoint-{train1.max_steps}"
    assert train2.max_steps == (train1.max_steps + train2.max_steps) // 10
    assert corpus2.train_files == ["corpus.txt.gz"]


def test_domain_documented_commands_run_with_a_local_model_for_the_hub_id(source_checkpoint, tmp_path):
    """The section's three commands, with the Hub id, the corpus and runs/ replaced by local stand-ins, and tiny
    step counts appended."""
    replace = {
        HUB_ID: str(source_checkpoint),
        "my_corpus.txt.gz": DEMO_CORPUS,
        "my_held_out.txt.gz": DEMO_CORPUS,
    }
    tiny = {
        "pretrain.py": ["--max_steps", "2", "--eval_steps", "0", "--report_to", "none", "--max_seq_length", "64"],
        "evaluate_mlm.py": ["--eval_examples", "16", "--max_seq_length", "64"],
        "finetune_glue.py": ["--max_steps", "1"],
    }
    commands = documented_commands("Continue pretraining on your domain")
    assert [Path(c[1]).name for c in commands] == list(tiny)
    for command in commands:
        args = [replace.get(a, a.replace("runs/", f"{tmp_path}/") if a.startswith("runs/") else a) for a in command]
        result = subprocess.run(
            [sys.executable, *args[1:], *tiny[Path(args[1]).name]],
            capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
        )  # fmt: skip
        assert result.returncode == 0, (command, result.stderr[-3000:])
    evaluated = json.loads((tmp_path / "dapt-mlm.json").read_text())["results"]
    assert [r["model_name_or_path"] for r in evaluated] == [str(source_checkpoint), f"{tmp_path}/dapt"]
    assert (tmp_path / "dapt-glue" / "rte" / "eval_results.json").is_file()
