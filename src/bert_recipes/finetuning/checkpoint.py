"""The checkpoint a recipe fine-tunes: its tokenizer checked against its config before any weights are read, and the
model under a fresh task head whose forward runs in fp32."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate.logging import get_logger
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, set_seed

from bert_recipes.dropout import use_cpu_dropout
from bert_recipes.errors import UsageError
from bert_recipes.finetuning.arguments import CheckpointConfig

logger = get_logger(__name__)


def load_checked_tokenizer(
    model: CheckpointConfig, max_seq_length: int, needs_fast: str | None = None
) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, checked against its model config; `needs_fast` names what needs a fast
    (Rust) tokenizer's offsets and word ids, if anything does."""
    source, remote = model.model_name_or_path, model.trust_remote_code
    if not Path(source).exists() and source.count("/") > 1:
        raise UsageError(f"--model_name_or_path '{source}' is neither a directory nor a Hub id: check the path")
    try:
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=remote)
    except (OSError, ValueError) as err:
        raise UsageError(
            f"--model_name_or_path '{source}' could not be loaded ({type(err).__name__}: {str(err)[:200]}): "
            "give a directory with config.json, the weights and the tokenizer files, or a Hub id"
        ) from None
    if model_config.vocab_size < len(tokenizer):
        raise UsageError(
            f"checkpoint '{source}' has vocab_size {model_config.vocab_size} but its tokenizer has {len(tokenizer)} "
            "tokens: use the tokenizer the model was pretrained with"
        )
    positions = getattr(model_config, "max_position_embeddings", None)
    if positions is not None and max_seq_length > positions:
        raise UsageError(f"--max_seq_length {max_seq_length} exceeds the checkpoint's {positions} positions: lower it")
    if needs_fast and not tokenizer.is_fast:
        raise UsageError(
            f"checkpoint '{source}' has no fast tokenizer (tokenizer.json), which {needs_fast} needs: save one with "
            "tokenizer/train_tokenizer.py or AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(dir)"
        )
    return tokenizer


def load_model(model_class, config: CheckpointConfig, seed: int, head: str, **head_settings) -> PreTrainedModel:
    """The checkpoint under a fresh task head (the module named `head`) drawn from `seed`; `model_class` is an
    AutoModelFor... class, `head_settings` its config values (num_labels, id2label ...)."""
    set_seed(seed)  # before the head is drawn: the Trainer only seeds after the model exists
    try:
        model = model_class.from_pretrained(
            config.model_name_or_path,
            trust_remote_code=config.trust_remote_code,
            # a checkpoint fine-tuned on another task (MNLI before RTE) brings a head of another size
            ignore_mismatched_sizes=True,
            **head_settings,
        )
    except (OSError, RuntimeError, ValueError) as err:
        raise UsageError(
            f"weights of '{config.model_name_or_path}' could not be loaded ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    if config.fast_cpu_dropout:
        use_cpu_dropout(model)
    return head_in_fp32(model, head)


def head_in_fp32(model: PreTrainedModel, name: str) -> PreTrainedModel:
    """Runs the task head (`model.<name>`) outside autocast, in its weights' precision. Under bf16 autocast an
    STS-B score near 4 comes back in steps of 1/32, which ties Spearman ranks, and start/end logits of long contexts
    tie the same way; the head is a sliver of the compute. (Weights cast to bf16, as DeepSpeed does, stay bf16.)"""
    head = getattr(model, name, None)
    if not isinstance(head, torch.nn.Module):
        logger.warning(
            f"{type(model).__name__} has no `{name}` head: it runs in the mixed precision", main_process_only=True
        )
        return model
    mixed_forward = head.forward

    def forward(hidden: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        weights = next(head.parameters()).dtype
        with torch.autocast(hidden.device.type, enabled=False):
            return mixed_forward(hidden.to(weights), *args, **kwargs)

    # an instance attribute, as Accelerate wraps forward: parameter names and saved files stay the same
    head.forward = forward
    return model
