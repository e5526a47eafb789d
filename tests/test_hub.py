"""Pushing to a Hub-compatible server on 127.0.0.1 with the real huggingface_hub client, in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tests.conftest import GLUE_SAMPLES, REPO_ROOT
from tests.hub_server import HubServer
from tests.test_trainer import tiny_args

TOKEN = "hf_alice_secret_token_123"
RECIPES = REPO_ROOT / "recipes"


@pytest.fixture
def hub():
    server = HubServer().start()
    yield server
    server.stop()


def hub_env(server: HubServer, tmp_path: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf-home"), TOKENIZERS_PARALLELISM="false")
    if token:
        env["HF_TOKEN"] = token
    return env


def run(script: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env
    )


def hub_files(server: HubServer, repo_id: str, revision: str = "main") -> list[str]:
    with urllib.request.urlopen(f"{server.url}/api/models/{repo_id}/tree/{revision}?recursive=true") as response:
        return sorted(entry["path"] for entry in json.load(response))


def hub_text(server: HubServer, repo_id: str, path: str) -> str:
    with urllib.request.urlopen(f"{server.url}/{repo_id}/resolve/main/{path}") as response:
        return response.read().decode()


LOAD_FROM_HUB = textwrap.dedent(
    """
    import json, sys
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline
    repo, local, revision = sys.argv[1:4]
    AutoTokenizer.from_pretrained(repo)
    AutoModelForPreTraining.from_pretrained(repo)
    AutoModelForMaskedLM.from_pretrained(repo, revision=revision)
    prompt = "the old man walked down the [MASK] ."
    remote = [p["token_str"] for p in pipeline("fill-mask", model=repo)(prompt)]
    here = [p["token_str"] for p in pipeline("fill-mask", model=local)(prompt)]
    print(json.dumps({"remote": remote, "local": here}))
    """
)


@pytest.mark.slow
def test_pushed_model_loads_from_the_hub_with_the_same_predictions(hub, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    env = hub_env(hub, tmp_path)
    args = tiny_args(tokenizer_dir, out, "--max_steps", "6", "--save_steps", "3", "--eval_steps", "3")
    push = ["--push_to_hub", "true", "--hub_model_id", "alice/tiny-bert", "--hub_tag_checkpoints", "true"]
    result = run(RECIPES / "pretrain.py", [*args, *push], env)
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub_files(hub, "alice/tiny-bert")
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_args.yaml", "README.md"} <= set(files)
    assert "training_curve.png" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl")) or "/" in f]
    repo = hub.state.repos["alice/tiny-bert"]
    assert {"step-3", "step-6"} <= set(repo.tags)
    assert any("step 3" in m for m in repo.messages.values()) and any("step 6" in m for m in repo.messages.values())

    fresh = {**env, "HF_HOME": str(tmp_path / "fresh-cache")}
    command = [sys.executable, "-c", LOAD_FROM_HUB, "alice/tiny-bert", str(out), "step-3"]
    loaded = subprocess.run(command, capture_output=True, text=True, timeout=300, env=fresh)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    predictions = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert predictions["remote"] == predictions["local"] and len(predictions["remote"]) == 5

    card = ModelCard(hub_text(hub, "alice/tiny-bert", "README.md"))
    assert card.data.license == "apache-2.0" and card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "fill-mask" and "bert" in card.data.tags
    assert "| 2 | 32 |" in card.text and "tokens seen" in card.text

    written = [p for p in out.rglob("*") if p.is_file()]
    for text in (result.stdout, result.stderr, *(p.read_bytes().decode("latin-1") for p in written)):
        assert TOKEN not in text


@pytest.mark.slow
def test_hub_failures_never_stop_training_and_a_later_push_completes(hub, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    env = hub_env(hub, tmp_path)
    args = tiny_args(tokenizer_dir, out, "--max_steps", "24", "--save_steps", "4", "--eval_steps", "0")
    push = ["--push_to_hub", "true", "--hub_model_id", "alice/flaky", "--hub_retries", "2", "--hub_retry_delay", "0.1"]
    proc = subprocess.Popen(
        [sys.executable, str(RECIPES / "pretrain.py"), *args, *push],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not any("/commit/" in r for r in hub.state.requests):
        time.sleep(0.2)
    hub.state.failures_left = 4  # 500s for the next uploads ...
    while time.time() < deadline and hub.state.failures_left > 0 and proc.poll() is None:
        time.sleep(0.2)
    hub.stop()  # ... then the Hub goes down altogether
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "failed" in stderr and "push it later with recipes/push_to_hub.py" in stderr
    assert (out / "checkpoint-24" / "model.safetensors").is_file() and (out / "model.safetensors").is_file()
    assert TOKEN not in stdout + stderr

    revived = HubServer().start()
    try:
        later = run(
            RECIPES / "push_to_hub.py",
            ["--output_dir", str(out), "--hub_model_id", "alice/flaky"],
            hub_env(revived, tmp_path),
        )
        assert later.returncode == 0, later.stderr[-3000:]
        assert {"model.safetensors", "README.md", "config.json"} <= set(hub_files(revived, "alice/flaky"))
    finally:
        revived.stop()


def test_tokenizer_push_has_a_tokenizer_card(hub, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"word{i % 300} piece{i % 17}" for i in range(5000)), encoding="utf-8")
    args = ["--train_files", str(corpus), "--vocab_size", "200", "--output_dir", str(tmp_path / "tok")]
    result = run(
        REPO_ROOT / "tokenizer" / "train_tokenizer.py",
        [*args, "--push_to_hub", "true", "--hub_model_id", "wordpiece"],
        hub_env(hub, tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json", "README.md"} <= set(
        hub_files(hub, "alice/wordpiece")
    )
    assert "tokenizer" in ModelCard(hub_text(hub, "alice/wordpiece", "README.md")).data.tags


def test_finetuned_push_names_its_base_model_and_glue_results(hub, tiny_bert_dir, tmp_path):
    args = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "rte", "--data_dir", str(GLUE_SAMPLES),
            "--output_dir", str(tmp_path / "glue"), "--max_steps", "2", "--max_seq_length", "32",
            "--push_to_hub", "true", "--hub_model_id", "alice/tiny-rte"]  # fmt: skip
    result = run(RECIPES / "finetune_glue.py", args, hub_env(hub, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    card = ModelCard(hub_text(hub, "alice/tiny-rte", "README.md"))
    assert card.data.base_model == str(tiny_bert_dir) and card.data.pipeline_tag == "text-classification"
    assert card.data.eval_results[0].dataset_config == "rte"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no_token", "needs a Hub token"),
        ("bad_repo_id", "is not a repo id"),
        ("someone_elses_repo", "no write access to 'bob/model' (403)"),
    ],
)
def test_push_problems_are_caught_before_training(case, expected, hub, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    repo = {"bad_repo_id": "a/b/c", "someone_elses_repo": "bob/model"}.get(case, "alice/model")
    env = hub_env(hub, tmp_path, token=None if case == "no_token" else TOKEN)
    result = run(
        RECIPES / "pretrain.py", [*tiny_args(tokenizer_dir, out), "--push_to_hub", "true", "--hub_model_id", repo], env
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (out / "metrics.jsonl").exists()
