"""Fixtures that point the real huggingface_hub client at a Hub-compatible server on 127.0.0.1.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET once, at import, into
`huggingface_hub.constants`. So:
- in this process (`hub`), the fixture sets those constants (and the token path) for the test's duration, and
  shortens the client's own retry waits (its count of retries is kept);
- subprocesses (`hub_env`) get the plain environment variables, which is how users set them.
Xet uploads are turned off: the server speaks the git-LFS protocol, not Xet (see tests/hub_server.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from huggingface_hub import constants
from huggingface_hub.utils import _http
from safetensors.torch import load_file, save_file

from bert_recipes.hub import HubConfig, model_files
from tests.hub_server import HubServer

TOKEN = "hf_alice_secret_token_123"
BOB_TOKEN = "hf_bob_secret_token_456"


@pytest.fixture
def hub_server():
    server = HubServer().start()
    yield server
    server.stop()


def point_client_at(server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    # no stored login of the machine's user may stand in for the test's token
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


@pytest.fixture
def hub(hub_server, monkeypatch, tmp_path) -> HubServer:
    """This process's huggingface_hub talks to the test server, as alice."""
    point_client_at(hub_server, monkeypatch, tmp_path)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    waits = {**_http.http_backoff.__kwdefaults__, "base_wait_time": 0.01, "max_wait_time": 0.02}
    monkeypatch.setattr(_http.http_backoff, "__kwdefaults__", waits)
    return hub_server


TRAINING_STATE = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl")


def fast_config(**overrides) -> HubConfig:
    """Pushing as alice, with retries short enough for tests."""
    values = {"push_to_hub": True, "hub_model_id": "alice/tiny-bert", "hub_retries": 2, "hub_retry_delay": 0.01}
    return HubConfig(**{**values, **overrides})


def make_run(tiny_bert_dir: Path, root: Path) -> Path:
    """A finished run's output dir: save_pretrained files, training_args.yaml and metrics.jsonl."""
    run = root / "run"
    shutil.copytree(tiny_bert_dir, run)
    args = {"train_files": ["corpus.txt"], "max_seq_length": 64, "learning_rate": 1.0e-3, "max_steps": 4}
    (run / "training_args.yaml").write_text(yaml.safe_dump(args))
    records = [
        {"step": s, "loss": 9.0 - s, "mlm_loss": 8.3 - s, "nsp_loss": 0.7, "tokens_seen": 512 * s} for s in (1, 2, 3, 4)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def make_checkpoint(run: Path, step: int) -> Path:
    """checkpoint-STEP as the trainer writes it: model files on top (weights differing per step), state below."""
    checkpoint = run / f"checkpoint-{step}"
    checkpoint.mkdir()
    for path in model_files(run):
        if path.suffix != ".safetensors" and path.name != "metrics.jsonl":
            shutil.copy2(path, checkpoint / path.name)
    weights = {name: tensor + step for name, tensor in load_file(run / "model.safetensors").items()}
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    state = checkpoint / "training_state"
    state.mkdir()
    for name in TRAINING_STATE:
        (state / name).write_bytes(os.urandom(64))
    trainer_state = {"step": step, "tokens_seen": 512 * step, "elapsed_seconds": 30.0 * step, "world_size": 1}
    (state / "trainer_state.json").write_text(json.dumps(trainer_state))
    shutil.copy2(checkpoint / "model.safetensors", state / "model.safetensors")
    (checkpoint / "rng_state.pth").write_bytes(b"top-level training state must stay local too")
    return checkpoint


def hub_env(server: HubServer, home: Path, token: str | None = TOKEN) -> dict[str, str]:
    """The environment of a subprocess that uses the test server, with its own empty HF_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE"))}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_DISABLE_XET="1", TOKENIZERS_PARALLELISM="false")
    if token:
        env["HF_TOKEN"] = token
    return env
