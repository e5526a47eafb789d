"""Pushing to a Hub-compatible server on 127.0.0.1 (tests/hub_server.py) with the real huggingface_hub client."""

# ruff: noqa: F811 (pytest fixtures are imported, then named as test arguments)

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from safetensors.torch import load_file

from bert_recipes.errors import UsageError, run_cli
from bert_recipes.finetuning import RunRecord, summarize_runs
from bert_recipes.glue.report import write_glue_results
from bert_recipes.hub import CheckpointPusher, HubConfig, check_hub_access, push_folder
from bert_recipes.model_card import pretraining_card
from tests.conftest import DEMO_CORPUS, REPO_ROOT
from tests.hub_fixtures import (  # noqa: F401
    BOB_TOKEN,
    TOKEN,
    fast_config,
    hub,
    hub_env,
    hub_server,
    make_checkpoint,
    make_run,
)
from tests.hub_server import HubServer

PUSH_RECIPE = REPO_ROOT / "recipes" / "push_to_hub.py"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # the client's LFS PUT


def no_token_in(*texts: str, folders: tuple[Path, ...] = ()) -> bool:
    written = [p.read_bytes().decode("latin-1") for folder in folders for p in folder.rglob("*") if p.is_file()]
    return all(TOKEN not in text for text in (*texts, *written))


# ---- the server speaks what the client calls -----------------------------------------------------------


def test_server_stores_large_files_through_lfs_and_serves_every_revision(hub, tmp_path):
    api = HfApi()
    api.create_repo("alice/proto")
    first, second = os.urandom(50_000), os.urandom(20_000)
    commit = api.upload_file(path_or_fileobj=first, path_in_repo="weights.safetensors", repo_id="alice/proto")
    api.create_tag("alice/proto", tag="v1", revision=commit.oid)
    api.upload_file(path_or_fileobj=second, path_in_repo="weights.safetensors", repo_id="alice/proto")
    api.upload_file(path_or_fileobj=b'{"a": 1}', path_in_repo="config.json", repo_id="alice/proto")

    requests = hub.state.requests
    assert any("/info/lfs/objects/batch" in r for r in requests) and any(r.startswith("PUT /_lfs/") for r in requests)
    assert hub.state.repos["alice/proto"].commits[commit.oid].files["weights.safetensors"].lfs
    for revision, expected in (("main", second), ("v1", first), (commit.oid, first)):
        path = hf_hub_download("alice/proto", "weights.safetensors", revision=revision, cache_dir=tmp_path / revision)
        assert Path(path).read_bytes() == expected
    assert sorted(api.list_repo_files("alice/proto")) == [".gitattributes", "config.json", "weights.safetensors"]
    assert [t.name for t in api.list_repo_refs("alice/proto").tags] == ["v1"]
    assert api.repo_info("alice/proto", revision="v1").sha == commit.oid
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo("alice/proto")
    assert conflict.value.response.status_code == 409


def test_server_wants_the_namespace_owners_token_for_writes_and_hides_private_repos(hub):
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi(token=False).create_repo("alice/anything")
    with pytest.raises(HfHubHTTPError) as someone_else:
        HfApi(token=BOB_TOKEN).create_repo("alice/anything")
    assert (anonymous.value.response.status_code, someone_else.value.response.status_code) == (401, 403)

    HfApi().create_repo("alice/secret", private=True)
    assert HfApi().repo_info("alice/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info("alice/secret")


# ---- checks before training ------------------------------------------------------------------------------


def test_check_hub_access_resolves_the_id_and_creates_the_repo_and_branch(hub):
    assert check_hub_access(HubConfig()) is None
    repo_id = check_hub_access(fast_config(hub_model_id="tiny", hub_private_repo=True, hub_revision="runs/a"))
    assert repo_id == "alice/tiny"
    repo = hub.state.repos["alice/tiny"]
    assert repo.private and "runs/a" in repo.branches
    assert check_hub_access(fast_config(hub_model_id="tiny")) == "alice/tiny"  # a second run: exist_ok


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no token", "needs a Hub token: set HF_TOKEN or run `hf auth login`"),
        ("unknown token", "the Hub rejected the token (401)"),
        ("id with two slashes", "'a/b/c' is not a repo id"),
        ("id with a space", "'my model' is not a repo id"),
        ("id with --", "'alice/a--b' is not a repo id"),
        ("bad strategy", "--hub_strategy 'sometimes' is not one of end, every_save, checkpoint"),
        ("someone else's new repo", "no write access to 'bob/model' (403)"),
        ("someone else's existing repo", "no write access to 'bob/public' (403): the token belongs to 'alice'"),
        ("hub down", "cannot reach the Hub at http://127.0.0.1:"),
    ],
)
def test_check_hub_access_explains_each_problem_in_one_line(case, expected, hub, monkeypatch):
    HfApi(token=BOB_TOKEN).create_repo("bob/public")
    overrides = {
        "id with two slashes": {"hub_model_id": "a/b/c"},
        "id with a space": {"hub_model_id": "my model"},
        "id with --": {"hub_model_id": "alice/a--b"},
        "bad strategy": {"hub_strategy": "sometimes"},
        "someone else's new repo": {"hub_model_id": "bob/model"},
        "someone else's existing repo": {"hub_model_id": "bob/public"},
    }.get(case, {})
    if case == "no token":
        monkeypatch.delenv("HF_TOKEN")
    if case == "unknown token":
        monkeypatch.setenv("HF_TOKEN", "hf_not_a_known_token")
    if case == "hub down":
        hub.stop()
    with pytest.raises(UsageError) as err:
        check_hub_access(fast_config(**overrides))
    message = str(err.value)
    assert expected in message and "\n" not in message and TOKEN not in message
    assert "bob/model" not in hub.state.repos


def test_recipe_reports_bad_input_on_one_line_with_exit_code_2(hub, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        run_cli(main_of_push_recipe(), [str(tmp_path / "missing"), "--hub_model_id", "alice/x"])
    assert exit_code.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "is not a folder" in error and "\n" not in error
    with pytest.raises(SystemExit) as exit_code:
        run_cli(main_of_push_recipe(), [str(tmp_path), "--hub_model_id", "alice/x", "--glue_results_file", "nope"])
    error = capsys.readouterr().err.strip()
    assert exit_code.value.code == 2 and error.startswith("error: --glue_results_file 'nope' cannot be read as JSON")


def main_of_push_recipe():
    sys.path.insert(0, str(PUSH_RECIPE.parent))
    try:
        import push_to_hub
    finally:
        sys.path.remove(str(PUSH_RECIPE.parent))
    return push_to_hub.main


# ---- background pushes during training -------------------------------------------------------------------


def test_checkpoints_are_commits_naming_their_step_tagged_and_without_training_state(hub, tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    config = fast_config(hub_tag_checkpoints=True)
    pusher = CheckpointPusher(config, run, repo_id=check_hub_access(config))
    checkpoints = {step: make_checkpoint(run, step) for step in (2, 4)}
    hub.state.delay_seconds = 0.3
    started = time.perf_counter()
    for step, checkpoint in checkpoints.items():
        pusher.push_checkpoint(checkpoint, step)
    queued_in = time.perf_counter() - started
    hub.state.delay_seconds = 0.0
    assert pusher.push_final(run, pretraining_card(run, pusher.repo_id), step=4)

    assert queued_in < 0.3, "push_checkpoint must return before the upload is done"
    messages = hub.state.commit_messages("alice/tiny-bert")
    assert messages[:3] == ["End of training, step 4", "Training in progress, step 4", "Training in progress, step 2"]
    repo = hub.state.repos["alice/tiny-bert"]
    for step in (2, 4):
        tagged = hub.state.files("alice/tiny-bert", f"step-{step}")
        assert tagged["model.safetensors"] == (run / f"checkpoint-{step}" / "model.safetensors").read_bytes()
        assert repo.commits[repo.tags[f"step-{step}"]].message == f"Training in progress, step {step}"
    pushed = set(hub.state.files("alice/tiny-bert"))
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_args.yaml", "README.md"} <= pushed
    assert "training_curve.png" in pushed and "metrics.jsonl" in pushed
    assert not [p for p in pushed if "/" in p or p.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert not (run / ".hub-staging").exists() or not any((run / ".hub-staging").iterdir())


def test_checkpoint_strategy_keeps_each_checkpoint_in_a_subfolder(hub, tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    pusher = CheckpointPusher(fast_config(hub_strategy="checkpoint"), run)
    for step in (2, 4):
        pusher.push_checkpoint(make_checkpoint(run, step), step)
    pusher.wait()
    files = hub.state.files("alice/tiny-bert")
    assert files["checkpoint-2/model.safetensors"] == (run / "checkpoint-2" / "model.safetensors").read_bytes()
    assert files["model.safetensors"] == files["checkpoint-4/model.safetensors"]
    assert not [p for p in files if "training_state" in p or p.endswith((".bin", ".pkl", ".pth"))]


def test_end_strategy_pushes_nothing_until_the_end_to_the_chosen_branch(hub, tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    pusher = CheckpointPusher(fast_config(hub_strategy="end", hub_revision="experiment"), run)
    pusher.push_checkpoint(make_checkpoint(run, 2), 2)
    pusher.wait()
    assert hub.state.commit_messages("alice/tiny-bert", "experiment") == ["initial commit"]
    assert pusher.push_final(run)
    assert hub.state.commit_messages("alice/tiny-bert", "experiment")[0] == "End of training"
    assert hub.state.commit_messages("alice/tiny-bert", "main") == ["initial commit"]


def test_a_rotated_away_checkpoint_still_lands_and_a_superseded_one_is_skipped(hub, tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    pusher = CheckpointPusher(fast_config(), run)
    hub.state.delay_seconds = 0.2
    checkpoints = {step: make_checkpoint(run, step) for step in (2, 4, 6)}
    expected = (checkpoints[6] / "model.safetensors").read_bytes()
    for step, checkpoint in checkpoints.items():
        pusher.push_checkpoint(checkpoint, step)
        shutil.rmtree(checkpoint)  # save_total_limit removing it while its upload waits in the queue
    pusher.wait()
    messages = hub.state.commit_messages("alice/tiny-bert")
    assert "Training in progress, step 6" in messages and "Training in progress, step 4" not in messages
    assert hub.state.files("alice/tiny-bert")["model.safetensors"] == expected


def test_hub_failures_never_reach_training_and_a_later_push_completes(hub, tiny_bert_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bert_recipes.hub")
    run = make_run(tiny_bert_dir, tmp_path)
    pusher = CheckpointPusher(fast_config(hub_tag_checkpoints=True), run, repo_id=check_hub_access(fast_config()))
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    hub.state.fail_next(1)  # one 500: absorbed by a retry
    pusher.push_checkpoint(make_checkpoint(run, 2), 2)
    pusher.wait()
    assert "step-2" in hub.state.repos["alice/tiny-bert"].tags

    hub.state.fail_next(1000)  # the Hub answers 500 for good ...
    pusher.push_checkpoint(make_checkpoint(run, 4), 4)
    pusher.wait()
    assert pusher.failed_steps == [4]
    assert "gave up pushing checkpoint-4 to alice/tiny-bert after 2 attempts (HfHubHTTPError" in caplog.text
    assert "500" in caplog.text and "retry 1/1" in caplog.text

    hub.stop()  # ... then goes down
    pusher.push_checkpoint(make_checkpoint(run, 6), 6)
    assert not pusher.push_final(run, step=6)
    assert "the final push to alice/tiny-bert failed (ConnectError" in caplog.text
    assert f"push it later with `python recipes/push_to_hub.py {run} --hub_model_id alice/tiny-bert`" in caplog.text
    assert all(before[path] == (run / path).read_bytes() for path in before), "local files must stay intact"
    assert (run / "checkpoint-6" / "training_state" / "optimizer.bin").is_file()

    revived = HubServer(port=int(hub.url.rsplit(":", 1)[1])).start()
    try:
        revived.state.repos = hub.state.repos
        url = push_folder(run, fast_config(), "Upload run")
        assert url == f"{hub.url}/alice/tiny-bert"
        assert revived.state.files("alice/tiny-bert")["model.safetensors"] == (run / "model.safetensors").read_bytes()
    finally:
        revived.stop()
    assert no_token_in(caplog.text, folders=(tmp_path,))


# ---- what lands on the Hub loads from a fresh cache --------------------------------------------------------

LOAD_FROM_HUB = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer, pipeline
    repo, local = sys.argv[1:3]
    AutoTokenizer.from_pretrained(repo)
    pretraining = AutoModelForPreTraining.from_pretrained(repo)
    tagged = AutoModelForMaskedLM.from_pretrained(repo, revision="step-2")
    prompt = "the old man walked down the [MASK] ."
    remote = [(p["token_str"], round(p["score"], 5)) for p in pipeline("fill-mask", model=repo)(prompt)]
    here = [(p["token_str"], round(p["score"], 5)) for p in pipeline("fill-mask", model=local)(prompt)]
    embedding = tagged.bert.embeddings.word_embeddings.weight
    print(json.dumps({"remote": remote, "local": here, "tagged_sum": float(embedding.double().sum()),
                      "has_nsp_head": hasattr(pretraining, "cls") and hasattr(pretraining.cls, "seq_relationship")}))
    """
)


def test_pushed_run_loads_from_a_fresh_cache_with_the_same_predictions(hub, tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    config = fast_config(hub_tag_checkpoints=True)
    pusher = CheckpointPusher(config, run, repo_id=check_hub_access(config))
    checkpoint = make_checkpoint(run, 2)
    pusher.push_checkpoint(checkpoint, 2)
    assert pusher.push_final(run, pretraining_card(run, pusher.repo_id), step=4)

    command = [sys.executable, "-c", LOAD_FROM_HUB, "alice/tiny-bert", str(run)]
    env = hub_env(hub, tmp_path / "fresh-hf-home", token=None)  # a public repo: anonymous downloads
    loaded = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["remote"] == result["local"] and len(result["remote"]) == 5
    assert result["has_nsp_head"]
    tagged = load_file(checkpoint / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert result["tagged_sum"] == pytest.approx(float(tagged.to(torch.float64).sum()), rel=1e-9)
    assert any((tmp_path / "fresh-hf-home" / "hub").glob("models--alice--tiny-bert/snapshots/*/model.safetensors"))

    card = ModelCard(hub.state.files("alice/tiny-bert")["README.md"].decode())
    assert card.data.pipeline_tag == "fill-mask" and card.data.library_name == "transformers"
    assert no_token_in(loaded.stdout, loaded.stderr, folders=(tmp_path,))


def test_push_to_hub_recipe_pushes_a_finished_run_later(hub, tiny_bert_dir, tmp_path):
    run = make_run(tiny_bert_dir, tmp_path)
    make_checkpoint(run, 4)
    env = hub_env(hub, tmp_path / "hf-home")
    write_glue_results(tmp_path / "glue", {"rte": summarize_runs([RunRecord(2e-5, 1, {"accuracy": 0.625})])})
    scores = {"model_name_or_path": str(run), "eval_mlm_loss": 4.5, "eval_perplexity": 90.0,
              "eval_mlm_accuracy": 0.25, "eval_masked_tokens": 960, "eval_sequences": 100}  # fmt: skip
    settings = {"validation_files": ["held_out.txt"], "max_seq_length": 64, "mlm_probability": 0.15, "seed": 0}
    (tmp_path / "mlm_eval.json").write_text(json.dumps({"settings": settings, "results": [scores]}))
    results = ["--glue_results_file", str(tmp_path / "glue" / "glue_results.json"),
               "--mlm_eval_file", str(tmp_path / "mlm_eval.json")]  # fmt: skip
    pushed = subprocess.run(
        [sys.executable, str(PUSH_RECIPE), str(run), "--hub_model_id", "run-later", "--hub_private_repo", "true",
         *results],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    assert f"pushed {run} to {hub.url}/alice/run-later" in pushed.stdout
    repo = hub.state.repos["alice/run-later"]
    assert repo.private and hub.state.commit_messages("alice/run-later")[0] == f"Upload {run}"
    files = set(hub.state.files("alice/run-later"))
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "training_curve.png"} <= files
    assert not [p for p in files if "/" in p or p.endswith((".bin", ".pth", ".pkl"))]
    card = ModelCard(hub.state.files("alice/run-later")["README.md"].decode())
    assert "compute" in card.text.lower() and "| rte | accuracy | 62.50 | - | 1 |" in card.text
    assert "| `held_out.txt` | 100 x 64 | 960 (15%, seed 0) | 4.5000 | 90.00 | 0.2500 |" in card.text
    assert [(r.dataset_config, r.metric_value) for r in card.data.eval_results] == [("rte", 62.5)]
    assert no_token_in(pushed.stdout, pushed.stderr, folders=(tmp_path,))


# ---- the recipes the lead wires it into --------------------------------------------------------------------


def run_recipe(script: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env
    )


def tiny_pretrain_args(tokenizer_dir: Path, output_dir: Path) -> list[str]:
    return [
        "--train_files", DEMO_CORPUS, "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(output_dir),
        "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--max_seq_length", "64",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--max_steps", "4",
        "--logging_steps", "1", "--eval_steps", "2", "--save_steps", "2", "--eval_examples", "32",
        "--report_to", "none", "--document_buffer_size", "32", "--eval_every_nth_document", "10",
    ]  # fmt: skip


@pytest.mark.slow
def test_pretrain_recipe_pushes_tagged_checkpoints_then_the_model_and_card(hub, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    push = ["--push_to_hub", "true", "--hub_model_id", "tiny-bert", "--hub_tag_checkpoints", "true"]
    result = run_recipe(REPO_ROOT / "recipes" / "pretrain.py", [*tiny_pretrain_args(tokenizer_dir, out), *push],
                        hub_env(hub, tmp_path / "hf-home"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    messages = hub.state.commit_messages("alice/tiny-bert")
    assert messages[:3] == ["End of training, step 4", "Training in progress, step 4", "Training in progress, step 2"]
    assert {"step-2", "step-4"} <= set(hub.state.repos["alice/tiny-bert"].tags)
    files = hub.state.files("alice/tiny-bert")
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_args.yaml", "training_curve.png"} <= set(
        files
    )
    assert not [p for p in files if "/" in p or p.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "fill-mask" and "| tokens seen |" in card.text
    assert no_token_in(result.stdout, result.stderr, folders=(out,))


def test_pretrain_recipe_refuses_someone_elses_repo_before_training(hub, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    push = ["--push_to_hub", "true", "--hub_model_id", "bob/model"]
    result = run_recipe(REPO_ROOT / "recipes" / "pretrain.py", [*tiny_pretrain_args(tokenizer_dir, out), *push],
                        hub_env(hub, tmp_path / "hf-home"))  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: no write access to 'bob/model' (403)" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.slow
def test_tokenizer_recipe_pushes_the_tokenizer_with_a_tokenizer_card(hub, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"word{i % 300} piece{i % 17} and more" for i in range(3000)), encoding="utf-8")
    args = ["--train_files", str(corpus), "--vocab_size", "300", "--output_dir", str(tmp_path / "tok")]
    push = ["--push_to_hub", "true", "--hub_model_id", "wordpiece"]
    result = run_recipe(REPO_ROOT / "tokenizer" / "train_tokenizer.py", [*args, *push], hub_env(hub, tmp_path / "home"))
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.state.files("alice/wordpiece")
    assert {"tokenizer.json", "tokenizer_config.json", "training_args.yaml", "README.md"} <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert "tokenizer" in card.data.tags and "`corpus.txt`" in card.text
