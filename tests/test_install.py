"""`pip install .` (not editable) gives a package that works without the repo around it: the tokenizer and
pretraining recipes run on it from another directory, and the model card is written from its packaged template."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import DEMO_CORPUS, REPO_ROOT

# runs the recipes' own main() (not the repo's src/) with whatever `bert_recipes` the interpreter imports
DRIVER = """
import json, runpy, sys
from accelerate import PartialState
import bert_recipes
from bert_recipes.model_card import pretraining_card

repo, corpus = sys.argv[1], sys.argv[2]
PartialState()
runpy.run_path(f"{repo}/tokenizer/train_tokenizer.py")["main"](
    ["--train_files", corpus, "--vocab_size", "300", "--output_dir", "tok"]
)
runpy.run_path(f"{repo}/recipes/pretrain.py")["main"]([
    "--train_files", corpus, "--tokenizer_name_or_path", "tok", "--output_dir", "run", "--hidden_size", "32",
    "--num_hidden_layers", "1", "--num_attention_heads", "2", "--max_seq_length", "32",
    "--per_device_train_batch_size", "4", "--max_steps", "2", "--logging_steps", "1", "--eval_steps", "0",
    "--save_steps", "0", "--eval_every_nth_document", "0", "--report_to", "none",
])
pretraining_card("run").save("run/README.md")
print(json.dumps({"package": bert_recipes.__file__}))
"""


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def build_wheel(folder: Path) -> Path:
    """Build from a copy of what an sdist holds, so the build can see nothing else of the repo."""
    source = folder / "source"
    source.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "pyproject.toml", source)
    shutil.copy(REPO_ROOT / "README.md", source)
    shutil.copytree(REPO_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # the shared venv's setuptools builds it: no index is needed
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", folder, source)
    (wheel,) = folder.glob("bert_recipes-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A new venv holding the wheel; the dependencies are borrowed from this interpreter's site-packages."""
    run(sys.executable, "-m", "venv", "--without-pip", folder)
    python = folder / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # appended after the venv's own site-packages, and its .pth files (the shared editable install) are not run
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return python


def small_corpus(path: Path) -> Path:
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as source:
        texts = [json.loads(line)["text"][:4000] for line in itertools.islice(source, 12)]
    path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    return path


def test_installed_package_trains_a_tokenizer_pretrains_and_writes_the_card(tmp_path):
    python = fresh_venv(tmp_path / "venv", build_wheel(tmp_path / "dist"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    corpus = small_corpus(elsewhere / "corpus.txt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = run(python, "-c", DRIVER, REPO_ROOT, corpus, cwd=elsewhere, env=env)

    package = Path(json.loads(result.stdout.strip().splitlines()[-1])["package"])
    assert package.is_relative_to(tmp_path / "venv") and "site-packages" in package.parts, package
    records = [json.loads(line) for line in (elsewhere / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    card = (elsewhere / "run" / "README.md").read_text(encoding="utf-8")
    vocab = len((elsewhere / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    assert f"| {records[-1]['loss']:.4f} |" in card
    assert "| optimizer steps | 2 |" in card
    assert f"WordPiece, {vocab} entries" in card
    assert "local text files: `corpus.txt`" in card
