"""BertForPreTraining from a fresh BertConfig, and its loss with the MLM head run on masked positions only."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForPreTraining

from bert_recipes.errors import UsageError


@dataclass
class ModelConfig:
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Tokenizer directory or Hub id (required); sets the vocabulary size."},
    )
    hidden_size: int = field(default=128, metadata={"help": "Width of the encoder (BERT-base: 768)."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Number of encoder layers (BERT-base: 12)."})
    num_attention_heads: int = field(default=0, metadata={"help": "Attention heads; 0 means hidden_size / 64."})
    intermediate_size: int = field(default=0, metadata={"help": "Feed-forward width; 0 means 4 x hidden_size."})
    max_position_embeddings: int = field(default=512, metadata={"help": "Longest sequence the model can take."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on hidden states."})
    attention_probs_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout on attention weights."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "Attention kernel: sdpa or eager."})
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
    hidden: torch.Tensor, labels: torch.Tensor, masked_positions: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and labels of the predicted positions: a fixed (batch x max_predictions) selection when the
    collator gives `masked_positions` (padding rows carry label -100), else a boolean selection of varying size."""
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
    ) -> dict[str, torch.Tensor]:
        encoded = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden, targets = masked_states(encoded.last_hidden_state, labels, masked_positions)
        logits = self.model.cls.predictions(hidden)
        predicted = targets != -100
        count = predicted.sum()
        # sum / count rather than mean: a batch with nothing masked gives 0, not NaN
        mlm_loss = F.cross_entropy(logits.float(), targets, reduction="sum") / count.clamp(min=1)
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
