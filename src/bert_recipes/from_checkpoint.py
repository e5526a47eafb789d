"""Starting pretraining from an existing BERT (a directory, a checkpoint-STEP folder or a Hub id): its config,
tokenizer and weights, checked against the run's settings before anything heavy, with one warning naming the parts
initialised fresh."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import torch
from accelerate.logging import get_logger
from transformers import AutoConfig, BertConfig, BertForPreTraining, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from bert_recipes.dropout import use_cpu_dropout
from bert_recipes.errors import UsageError
from bert_recipes.modeling import ModelConfig, build_bert_config, build_model
from bert_recipes.tokenization import load_tokenizer

logger = get_logger(__name__)


# ModelConfig fields a checkpoint's config decides; a flag may repeat the checkpoint's value, never contradict it
CHECKPOINT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "hidden_dropout_prob", "attention_probs_dropout_prob",
)  # fmt: skip
# the parts of BertForPreTraining that a BertForMaskedLM or bare BertModel checkpoint may lack, by name prefix
HEADS = {"bert.pooler": "pooler", "cls.predictions": "MLM head", "cls.seq_relationship": "NSP head"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def load_checkpoint_config(source: str) -> BertConfig:
    """The config of a BERT directory or Hub id; one clear error when it cannot be read or is not a BERT."""
    if not Path(source).exists() and source.count("/") > 1:
        raise UsageError(f"--model_name_or_path '{source}' is neither a directory nor a Hub id: check the path")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise UsageError(
            f"--model_name_or_path '{source}' could not be loaded ({type(err).__name__}: {reason}): give a "
            "directory with config.json and the weights, or a Hub id reachable from here"
        ) from None
    if not isinstance(config, BertConfig):
        raise UsageError(f"--model_name_or_path '{source}' is a {config.model_type} model: pass a BERT checkpoint")
    return config


def load_checkpoint_tokenizer(
    source: str, bert_config: BertConfig, tokenizer_name_or_path: str | None = None
) -> PreTrainedTokenizerFast:
    """The tokenizer given, else the checkpoint's own; its ids must index the checkpoint's embeddings."""
    local = Path(source)
    if not tokenizer_name_or_path and local.is_dir() and not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise UsageError(f"--model_name_or_path '{source}' has no tokenizer: pass --tokenizer_name_or_path")
    tokenizer = load_tokenizer(tokenizer_name_or_path or source)
    size, rows = len(tokenizer), bert_config.vocab_size
    # the checkpoint's own tokenizer may be smaller than its embeddings (a vocabulary padded with --vocab_size);
    # another tokenizer of another size numbers its tokens differently, which would scramble the embeddings
    if size > rows or (size != rows and tokenizer_name_or_path not in (None, source)):
        raise UsageError(
            f"the tokenizer has {size} tokens but --model_name_or_path '{source}' has {rows} embedding rows: use "
            "the tokenizer the model was pretrained with (leave out --tokenizer_name_or_path)"
        )
    return tokenizer


def check_positions(source: str, bert_config: BertConfig, max_seq_length: int) -> None:
    if max_seq_length > bert_config.max_position_embeddings:
        raise UsageError(
            f"--max_seq_length {max_seq_length} exceeds the {bert_config.max_position_embeddings} position "
            f"embeddings of --model_name_or_path '{source}' (they are not resized): lower --max_seq_length"
        )


def adopt_checkpoint_sizes(config: ModelConfig, bert_config: BertConfig) -> None:
    """Copy the checkpoint's sizes into `config`, so the run config saved with every checkpoint tells the truth."""
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    for name in CHECKPOINT_FIELDS:
        given, saved = getattr(config, name), getattr(bert_config, name)
        if given not in (defaults[name], saved):
            raise UsageError(
                f"--{name} {given} contradicts --model_name_or_path '{config.model_name_or_path}', which has "
                f"{name} {saved}: leave out --{name} (the checkpoint's config sets it)"
            )
        setattr(config, name, saved)


def resolve_model_config(config: ModelConfig, max_seq_length: int) -> tuple[BertConfig, PreTrainedTokenizerFast]:
    """The config of the model to train and its tokenizer: from the size fields, or from --model_name_or_path."""
    source = config.model_name_or_path
    if not source:
        tokenizer = load_tokenizer(config.tokenizer_name_or_path)
        return build_bert_config(config, len(tokenizer), tokenizer.pad_token_id), tokenizer
    bert_config = load_checkpoint_config(source)
    adopt_checkpoint_sizes(config, bert_config)
    check_positions(source, bert_config, max_seq_length)
    return bert_config, load_checkpoint_tokenizer(source, bert_config, config.tokenizer_name_or_path)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars: our one warning says what was initialised fresh."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained_bert(
    source: str, bert_config: BertConfig, attn_implementation: str = "sdpa"
) -> tuple[BertForPreTraining, list[str]]:
    """BertForPreTraining with the weights of `source`, and the HEADS it lacked (initialised fresh)."""
    # a forked RNG: what the checkpoint holds changes the weights only, never the dropout masks that follow
    with torch.random.fork_rng(), quiet_transformers():
        try:
            model, info = BertForPreTraining.from_pretrained(
                source, config=bert_config, attn_implementation=attn_implementation, output_loading_info=True
            )
        except (OSError, RuntimeError, ValueError) as err:
            reason = " ".join(str(err).split())[:200]
            raise UsageError(
                f"weights of --model_name_or_path '{source}' could not be loaded ({type(err).__name__}: {reason})"
            ) from None
    missing = info["missing_keys"]
    encoder = sorted(k for k in missing if not k.startswith(tuple(HEADS)))
    if encoder:
        raise UsageError(
            f"--model_name_or_path '{source}' lacks encoder weights ({', '.join(encoder[:3])}): pass a BERT checkpoint"
        )
    return model, [prefix for prefix in HEADS if any(k.startswith(prefix) for k in missing)]


def build_or_load_model(config: ModelConfig, bert_config: BertConfig) -> BertForPreTraining:
    """A fresh model, or --model_name_or_path's weights with one warning naming the heads initialised fresh."""
    if not config.model_name_or_path:
        model = build_model(bert_config, config.attn_implementation)
    else:
        model, fresh = load_pretrained_bert(config.model_name_or_path, bert_config, config.attn_implementation)
        if fresh:
            parts = ", ".join(f"{HEADS[prefix]} ({prefix}.*)" for prefix in fresh)
            logger.warning(f"--model_name_or_path '{config.model_name_or_path}' has no {parts}: initialised fresh")
    if config.fast_cpu_dropout:
        use_cpu_dropout(model)
    return model
