"""BertForPreTraining from a fresh BertConfig or from any BERT checkpoint, and its loss with the MLM head run on
masked positions only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from torch import nn
from transformers import AutoConfig, BertConfig, BertForPreTraining, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from bert_recipes.dropout import use_cpu_dropout
from bert_recipes.errors import UsageError
from bert_recipes.tokenization import load_tokenizer

logger = get_logger(__name__)


@dataclass
class ModelConfig:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from this BERT's weights (directory, checkpoint-STEP or Hub id) with a fresh optimizer, "
            "schedule and data stream. Its config sets the size and dropout fields: one set to a value other than "
            "its default and the checkpoint's is an error."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer directory or Hub id; sets the vocabulary size. Default: --model_name_or_path's."},
    )
    hidden_size: int = field(default=128, metadata={"help": "Width of the encoder (BERT-base: 768)."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Number of encoder layers (BERT-base: 12)."})
    num_attention_heads: int = field(default=0, metadata={"help": "Attention heads; 0 means hidden_size / 64."})
    intermediate_size: int = field(default=0, metadata={"help": "Feed-forward width; 0 means 4 x hidden_size."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Longest sequence the model can take."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on hidden states."})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on attention weights."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "Attention kernel: sdpa or eager."})
    fast_cpu_dropout: bool = field(
        default=True,
        metadata={"help": "Draw CPU training dropout masks 16 random bits at a time (bert_recipes.dropout)."},
    )
    vocab_size: int = field(
        default=0, metadata={"help": "Embedding rows; 0 means the tokenizer's size (larger pads, e.g. to 30522)."}
    )


def build_bert_config(config: ModelConfig, vocab_size: int, pad_token_id: int) -> BertConfig:
    """`vocab_size` is the tokenizer's; the model's is that, or config.vocab_size when larger."""
    if config.vocab_size and config.vocab_size < vocab_size:
        raise UsageError(f"--vocab_size {config.vocab_size} is smaller than the tokenizer's {vocab_size} tokens")
    vocab_size = max(vocab_size, config.vocab_size)
    heads = config.num_attention_heads or max(1, config.hidden_size // 64)
    if config.hidden_size % heads:
        raise UsageError(f"--hidden_size {config.hidden_size} is not divisible by --num_attention_heads {heads}")
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=heads,
        intermediate_size=config.intermediate_size or 4 * config.hidden_size,
        max_position_embeddings=config.max_position_embeddings,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        pad_token_id=pad_token_id,
        architectures=["BertForPreTraining"],
    )


def build_model(bert_config: BertConfig, attn_implementation: str = "sdpa") -> BertForPreTraining:
    return BertForPreTraining._from_config(bert_config, attn_implementation=attn_implementation)


def masked_states(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    masked_positions: torch.Tensor | None,
    masked_indices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and labels of the predicted positions: a fixed (batch x max_predictions) selection when the
    collator gives `masked_positions` (padding rows carry label -100), else the flat `masked_indices` it found on the
    host (the same rows, in the same order, as a boolean selection, which would wait on the device to size itself)."""
    if masked_indices is not None:
        return hidden.flatten(0, 1).index_select(0, masked_indices), labels.flatten().index_select(0, masked_indices)
    if masked_positions is None:
        masked = labels != -100
        return hidden[masked], labels[masked]
    index = masked_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index).flatten(0, 1), labels.gather(1, masked_positions).flatten()


class SparsePretrainingLoss(nn.Module):
    """Wraps BertForPreTraining so that DDP/FSDP/DeepSpeed see one forward returning the pretraining loss.

    The MLM head runs only on the masked positions: on small models the vocabulary projection over every
    position is most of a step's FLOPs, and 85% of it is thrown away by the loss.
    """

    def __init__(self, model: BertForPreTraining):
        super().__init__()
        self.model = model
        # DeepSpeed's "auto" bucket sizes are derived from hidden_size, read from `model.config`
        self.config = model.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        labels: torch.Tensor,
        next_sentence_label: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        masked_indices: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        encoded = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden, targets = masked_states(encoded.last_hidden_state, labels, masked_positions, masked_indices)
        # fp32 for the loss, and for argmax, which runs 4x faster on fp32 than on bf16 on a CPU
        logits = self.model.cls.predictions(hidden).float()
        predicted = targets != -100
        count = predicted.sum()
        # sum / count rather than mean: a batch with nothing masked gives 0, not NaN
        mlm_loss = F.cross_entropy(logits, targets, reduction="sum") / count.clamp(min=1)
        out = {
            "mlm_loss": mlm_loss,
            "mlm_correct": ((logits.argmax(-1) == targets) & predicted).sum(),
            "mlm_count": count,
        }
        if next_sentence_label is None:
            out["loss"] = mlm_loss
            return out
        nsp_logits = self.model.cls.seq_relationship(encoded.pooler_output)
        out["nsp_loss"] = F.cross_entropy(nsp_logits.float(), next_sentence_label)
        out["nsp_correct"] = (nsp_logits.argmax(-1) == next_sentence_label).sum()
        out["loss"] = mlm_loss + out["nsp_loss"]
        return out


def count_parameters(model: nn.Module) -> int:
    # under ZeRO-3 a parameter holds only its shard; ds_numel is the full size
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


# ---- starting from a checkpoint ---------------------------------------------------------------------------------

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
