"""Real multi-process runs on CPU: 2-process DDP over gloo, DeepSpeed ZeRO, and every accelerate config."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from safetensors.torch import load_file
from transformers import BertForPreTraining

from bert_recipes.checkpointing import list_checkpoints
from bert_recipes.config import parse_config
from bert_recipes.corpus import CorpusConfig
from bert_recipes.data import DataConfig, held_out_batches
from bert_recipes.distributed import bf16_supported
from bert_recipes.evaluation import mlm_metrics
from bert_recipes.modeling import ModelConfig, SparsePretrainingLoss
from bert_recipes.tokenization import load_tokenizer
from bert_recipes.train_config import TrainConfig
from tests.conftest import REPO_ROOT
from tests.test_trainer import losses_by_step, read_metrics, tiny_args

CONFIGS = REPO_ROOT / "accelerate_configs"
PRETRAIN = REPO_ROOT / "recipes" / "pretrain.py"
PROBE = REPO_ROOT / "tests" / "distributed_probe.py"
ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch_command(config: str, script: Path, args: list[str], *launch_args: str) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config), *launch_args,
        str(script), *args,
    ]  # fmt: skip


def launch(config: str, script: Path, args: list[str], *launch_args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` with its own port per run (a shared port once killed a rank with SIGABRT)."""
    command = launch_command(config, script, args, "--main_process_port", str(free_port()), *launch_args)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=ENV)


def launch_two_machines(script: Path, args: list[str], logs: Path) -> list[subprocess.CompletedProcess]:
    """multi_node.yaml as two machines on this host: machine ranks 0 and 1 started together, one CPU process each.

    Output goes to files: a pipe nobody reads while the other machine is awaited could fill and stall a rank.
    """
    logs.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    machines = []
    for rank in (0, 1):
        command = launch_command(
            "multi_node.yaml", script, args, "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", port, "--num_machines", "2", "--num_processes", "2", "--mixed_precision", "no",
        )  # fmt: skip
        with (logs / f"machine{rank}.out").open("w") as out, (logs / f"machine{rank}.err").open("w") as err:
            machines.append(
                subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO_ROOT, env=ENV, start_new_session=True)
            )
    try:
        for machine in machines:
            machine.wait(timeout=600)
    finally:
        # a rank left waiting for its dead peer would hold the port and a core until the end of the suite
        for machine in machines:
            if machine.poll() is None:
                os.killpg(machine.pid, signal.SIGKILL)

    def logged(rank: int, stream: str) -> str:
        return (logs / f"machine{rank}.{stream}").read_text()

    return [
        subprocess.CompletedProcess(m.args, m.returncode, logged(r, "out"), logged(r, "err"))
        for r, m in enumerate(machines)
    ]


def python(script: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("seed_per_rank", [True, False])
def test_two_cpu_processes_see_disjoint_data_and_keep_identical_parameters(seed_per_rank, tokenizer_dir, tmp_path):
    out = tmp_path / "ddp"
    args = tiny_args(tokenizer_dir, out, "--max_steps", "6", "--save_steps", "0", "--ddp_timeout", "1234",
                     "--dropout_seed_per_rank", str(seed_per_rank).lower())  # fmt: skip
    assert_ok(launch("multi_cpu.yaml", PROBE, args))
    reports = [json.loads((out / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["num_processes"] for r in reports] == [2, 2]
    assert {r["distributed_type"] for r in reports} == {"DistributedType.MULTI_CPU"}
    assert {r["backend"] for r in reports} == {"gloo"}
    assert {r["timeout_seconds"] for r in reports} == {1234}
    assert not set(reports[0]["examples"]) & set(reports[1]["examples"])
    assert len(set(reports[0]["examples"])) == 40
    assert reports[0]["checksum"] == reports[1]["checksum"]
    # the weights start equal either way; the dropout masks differ between ranks unless asked not to
    assert (reports[0]["rng_state"] != reports[1]["rng_state"]) == seed_per_rank


@pytest.fixture(scope="module")
def two_process_run(tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    assert_ok(
        launch("multi_cpu.yaml", PRETRAIN, tiny_args(tokenizer_dir, out, "--max_steps", "12", "--save_steps", "6"))
    )
    return out


@pytest.mark.slow
def test_two_processes_evaluate_what_one_process_scores(tokenizer_dir, tmp_path):
    """Each rank scores its share of the held-out batches (3 of them here: one rank runs a padding pass)."""
    out = tmp_path / "run"
    args = tiny_args(tokenizer_dir, out, "--max_steps", "2", "--eval_steps", "2", "--save_steps", "0",
                     "--per_device_eval_batch_size", "12")  # fmt: skip
    assert_ok(launch("multi_cpu.yaml", PRETRAIN, args))
    logged = [r for r in read_metrics(out) if "eval_mlm_loss" in r]
    assert [r["step"] for r in logged] == [2]
    corpus, data, _, train = parse_config([CorpusConfig, DataConfig, ModelConfig, TrainConfig], args)
    batches = held_out_batches(corpus, data, load_tokenizer(str(tokenizer_dir)), train.seed, 12)
    assert len(batches) == 3
    model = SparsePretrainingLoss(BertForPreTraining.from_pretrained(out))
    expected = mlm_metrics(model, batches, torch.device("cpu"))
    assert expected.keys() <= logged[0].keys()
    assert all(logged[0][k] == pytest.approx(v, rel=1e-5) for k, v in expected.items()), (logged[0], expected)


def resume_copy(run: Path, tmp_path: Path, step: int = 6) -> Path:
    """A fresh output_dir holding only the run's checkpoint-STEP, to resume from with `latest`."""
    out = tmp_path / "resumed"
    shutil.copytree(run / f"checkpoint-{step}", out / f"checkpoint-{step}")
    return out


def assert_resumed_exactly(run: Path, resumed: Path, steps: range) -> None:
    expected, losses = losses_by_step(run), losses_by_step(resumed)
    assert sorted(losses) == list(steps)
    assert all(losses[s] == pytest.approx(expected[s], abs=1e-5) for s in losses), (losses, expected)


@pytest.mark.slow
def test_two_process_checkpoint_resumes_exactly_under_two_processes(two_process_run, tokenizer_dir, tmp_path):
    out = resume_copy(two_process_run, tmp_path)
    args = tiny_args(tokenizer_dir, out, "--max_steps", "12", "--save_steps", "6", "--resume_from_checkpoint", "latest")
    assert_ok(launch("multi_cpu.yaml", PRETRAIN, args))
    assert_resumed_exactly(two_process_run, out, range(7, 13))


@pytest.mark.slow
def test_two_process_checkpoint_resumes_under_one_process(two_process_run, tokenizer_dir, tmp_path):
    out = resume_copy(two_process_run, tmp_path)
    args = tiny_args(tokenizer_dir, out, "--max_steps", "12", "--save_steps", "6", "--resume_from_checkpoint", "latest")
    result = python(PRETRAIN, args)
    assert_ok(result)
    assert "written by 2 process(es) with 0 DataLoader worker(s) each, resuming with 1 and 0" in result.stderr
    # not loss-exact: the per-rank stream positions do not map onto one process, so the data restarts with the
    # next epoch; what is promised is the step count, the weights and a healthy continuation
    resumed = losses_by_step(out)
    assert sorted(resumed) == list(range(7, 13))
    assert all(math.isfinite(loss) for loss in resumed.values())
    assert list_checkpoints(out)[-1].name == "checkpoint-12"


@pytest.mark.slow
def test_two_machines_train_checkpoint_and_resume_together_with_identical_losses(tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    args = tiny_args(tokenizer_dir, out, "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0")
    for result in launch_two_machines(PROBE, args, tmp_path / "logs"):
        assert_ok(result)
    reports = [json.loads((out / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["num_processes"], r["distributed_type"]) for r in reports] == [
        (rank, 2, "DistributedType.MULTI_CPU") for rank in (0, 1)
    ]
    assert reports[0]["checksum"] == reports[1]["checksum"]

    resumed = resume_copy(out, tmp_path, step=3)
    resume_args = tiny_args(tokenizer_dir, resumed, "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0")
    machines = launch_two_machines(PRETRAIN, [*resume_args, "--resume_from_checkpoint", "latest"], tmp_path / "logs2")
    for result in machines:
        assert_ok(result)
    assert "2 process(es), DistributedType.MULTI_CPU" in machines[0].stderr
    assert_resumed_exactly(out, resumed, range(4, 7))


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=[p.stem for p in ALL_CONFIGS])
def test_every_accelerate_config_loads(config):
    cluster = load_config_from_file(str(config))
    assert cluster.num_processes >= 1 and cluster.num_machines >= 1
    assert cluster.mixed_precision in ("no", "bf16", "fp16", None)
    if "gpu" in config.stem or config.stem in ("multi_node", "fsdp"):
        assert cluster.mixed_precision == "bf16", "GPU configs train in bf16"
    if config.stem.startswith("deepspeed"):
        # Accelerate refuses the key beside a deepspeed_config_file: bf16 comes through the JSON's "auto"
        assert "mixed_precision" not in yaml.safe_load(config.read_text())
    if config.stem == "fsdp":
        assert cluster.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "BertLayer"
        assert cluster.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if config.stem.startswith("deepspeed"):
        assert (REPO_ROOT / cluster.deepspeed_config["deepspeed_config_file"]).is_file()


DEEPSPEED_CONFIGS = sorted((CONFIGS / "deepspeed").glob("*.json"))


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=[p.stem for p in DEEPSPEED_CONFIGS])
def test_deepspeed_configs_parse_in_accelerate_and_deepspeed(path):
    deepspeed_config = pytest.importorskip("deepspeed.runtime.config", reason="pip install -e .[deepspeed]")
    from accelerate.utils import DeepSpeedPlugin

    plugin = DeepSpeedPlugin(hf_ds_config=str(path))
    stage = int(path.stem[4])
    assert plugin.zero_stage == stage
    filled = json.loads(json.dumps(plugin.deepspeed_config).replace('"auto"', "1"))
    filled.update(train_batch_size=32, train_micro_batch_size_per_gpu=32, gradient_accumulation_steps=1)
    filled["bf16"] = {"enabled": True}
    filled["fp16"] = {"enabled": False}
    parsed = deepspeed_config.DeepSpeedConfig(filled)
    assert parsed.zero_optimization_stage == stage
    if stage == 3:
        assert parsed.zero_config.gather_16bit_weights_on_model_save
    if "offload" in path.stem:
        assert parsed.zero_config.offload_optimizer.device == "cpu"


def test_deepspeed_config_parser_rejects_a_bad_stage():
    deepspeed_config = pytest.importorskip("deepspeed.runtime.config", reason="pip install -e .[deepspeed]")
    bad = {"train_batch_size": 8, "train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 7}}
    with pytest.raises(Exception, match="stage"):
        deepspeed_config.DeepSpeedConfig(bad)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_saves_full_weights_and_resumes(stage, tokenizer_dir, tmp_path):
    pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
    out = tmp_path / f"zero{stage}"
    extra = ("--num_processes", "2", "--mixed_precision", "no")
    args = tiny_args(tokenizer_dir, out, "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0")
    result = launch(f"deepspeed_zero{stage}.yaml", PRETRAIN, args, *extra)
    assert_ok(result)
    assert "2 process(es), DistributedType.DEEPSPEED" in result.stderr
    weights = load_file(out / "checkpoint-6" / "model.safetensors")
    assert all(t.numel() > 0 for t in weights.values())
    # gathered on save: the word embeddings are whole (vocab x hidden), not a ZeRO-3 shard
    assert weights["bert.embeddings.word_embeddings.weight"].shape == (2000, 32)
    resumed = resume_copy(out, tmp_path, step=3)
    resume_args = tiny_args(tokenizer_dir, resumed, "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0")
    result = launch(
        f"deepspeed_zero{stage}.yaml", PRETRAIN, [*resume_args, "--resume_from_checkpoint", "latest"], *extra
    )
    assert_ok(result)
    assert_resumed_exactly(out, resumed, range(4, 7))


DEEPSPEED_LAUNCH_CONFIGS = sorted(CONFIGS.glob("deepspeed_*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config", DEEPSPEED_LAUNCH_CONFIGS, ids=[p.stem for p in DEEPSPEED_LAUNCH_CONFIGS])
def test_every_deepspeed_config_starts_as_documented_with_an_optimizer_deepspeed_accepts(
    config, tokenizer_dir, tmp_path
):
    """Launched as the README says (only the process count changed), in the recipe's own precision (auto: bf16 on
    CPUs with AVX512-BF16). With offload_optimizer DeepSpeed refuses, on GPUs only, any optimizer but its
    DeepSpeedCPUAdam: the probe reads what the engine steps with, and the hyperparameters it was given."""
    pytest.importorskip("deepspeed", reason="pip install -e .[deepspeed]")
    out = tmp_path / "run"
    args = tiny_args(tokenizer_dir, out, "--max_steps", "3", "--save_steps", "0", "--eval_steps", "0",
                     "--mixed_precision", "auto")  # fmt: skip
    assert_ok(launch(config.name, PROBE, args, "--num_processes", "2"))
    reports = [json.loads((out / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    offload = "offload" in config.stem
    for report in reports:
        assert (report["distributed_type"], report["num_processes"]) == ("DistributedType.DEEPSPEED", 2)
        assert report["offloads_optimizer"] == offload
        assert report["optimizer"] == ("DeepSpeedCPUAdam" if offload else "AdamW")
        # weight decay on the matrices only, even under ZeRO-3 where parameters are empty shards when grouped
        assert sorted(g["weight_decay"] for g in report["optimizer_groups"]) == [0.0, 0.01]
        decayed, kept = sorted(report["weight_decay_groups"], key=lambda g: -g["weight_decay"])
        assert decayed["weight_decay"] == 0.01 and decayed["elements"] > 10 * kept["elements"] > 0, (decayed, kept)
        assert all((g["betas"], g["eps"]) == ([0.9, 0.98], 1e-6) for g in report["optimizer_groups"])
        assert report["losses_finite"]
    precision = "bf16" if bf16_supported() else "no"
    assert read_metrics(out)[0]["mixed_precision"] == precision
    assert reports[0]["weight_dtype"] == ("torch.bfloat16" if precision == "bf16" else "torch.float32")


@pytest.mark.slow
def test_fsdp_on_cpu_is_refused_rather_than_silently_replaced_by_ddp(tokenizer_dir, tmp_path):
    args = tiny_args(tokenizer_dir, tmp_path / "fsdp", "--max_steps", "2")
    result = launch("fsdp.yaml", PRETRAIN, args, "--num_processes", "2", "--mixed_precision", "no")
    assert result.returncode != 0
    assert "FSDP" in result.stderr and "GPU" in result.stderr


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="Accelerate 1.15 applies FSDP only to GPU distributed types, never MULTI_CPU: needs 2 GPUs",
)
def test_fsdp_shards_parameters_and_saves_full_weights(tokenizer_dir, tmp_path):
    out = tmp_path / "fsdp"
    assert_ok(launch("fsdp.yaml", PROBE, tiny_args(tokenizer_dir, out, "--max_steps", "4"), "--num_processes", "2"))
    reports = [json.loads((out / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    assert {r["distributed_type"] for r in reports} == {"DistributedType.FSDP"}
    assert all(r["sharded_parameters"] > 0 for r in reports)
    assert load_file(out / "model.safetensors")["bert.embeddings.word_embeddings.weight"].shape == (2000, 32)


def test_yaml_configs_are_plain_yaml():
    for config in ALL_CONFIGS:
        assert isinstance(yaml.safe_load(config.read_text()), dict)
