"""Shared fixtures: a tokenizer trained on the demo corpus and a tiny random BERT saved beside it."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from accelerate import PartialState

from bert_recipes.corpus import CorpusConfig, iter_texts, load_corpus
from bert_recipes.tokenization import TokenizerConfig, save_tokenizer, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
GLUE_SAMPLES = REPO_ROOT / "data" / "glue"
DEMO_CORPUS = str(REPO_ROOT / "data" / "gutenberg-demo.jsonl.gz")

# nothing in the tests may reach the Hugging Face Hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# library code logs through accelerate's logger, which needs the (single-process) state
PartialState()


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A 2,000-entry WordPiece tokenizer trained on the first 200 documents of the demo corpus."""
    out = tmp_path_factory.mktemp("tokenizer")
    batches = itertools.islice(iter_texts(load_corpus(CorpusConfig(train_files=[DEMO_CORPUS])), 50), 4)
    save_tokenizer(train_tokenizer(batches, TokenizerConfig(vocab_size=2000, model_max_length=512)), out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer, 64-wide BertForPreTraining with the test tokenizer, in save_pretrained form."""
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    BertForPreTraining(config).save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: two threads spin-wait on each other (40 GLUE steps took 1.7 s on one
    thread, 37.7 s on two, with other jobs running). Modules of fine-tuning tests use it for all their tests."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_usage_error(main, args: list[str], capsys, expected: str) -> None:
    """`main(args)` through run_cli ends with one `error:` line holding `expected`, and exit code 2."""
    from bert_recipes.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, args)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and expected in stderr, stderr
