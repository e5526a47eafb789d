"""BertForPreTraining from a fresh BertConfig, and its loss with the MLM head run on masked positions only.

Starting from an existing BERT checkpoint (its config, tokenizer and weights, checked against the settings) is in
from_checkpoint.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from torch import nn
from transformers import BertConfig, BertForPreTraining

from bert_recipes.errors import UsageError

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
