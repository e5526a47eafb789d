"""The sparse MLM head gives the same loss as BertForPreTraining's own dense computation."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig

from bert_recipes.dropout import ATTENTION, CpuDropout
from bert_recipes.errors import UsageError
from bert_recipes.from_checkpoint import build_or_load_model
from bert_recipes.modeling import ModelConfig, SparsePretrainingLoss, build_bert_config, build_model


def random_batch(vocab: int, batch: int = 4, length: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab, (batch, length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 20:] = 0
    labels = torch.where(torch.rand(batch, length, generator=gen) < 0.15, input_ids, torch.full_like(input_ids, -100))
    labels[0, 3] = input_ids[0, 3]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": (torch.arange(length) >= length // 2).long().expand(batch, -1).contiguous(),
        "labels": labels,
        "next_sentence_label": torch.tensor([0, 1, 1, 0]),
    }


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    config = build_bert_config(ModelConfig(hidden_size=64, num_hidden_layers=2), vocab_size=500, pad_token_id=0)
    return build_model(config).eval()


def test_sparse_loss_equals_dense_model_loss(tiny_model):
    batch = random_batch(500)
    dense = tiny_model(**batch)
    sparse = SparsePretrainingLoss(tiny_model)(**batch)
    torch.testing.assert_close(sparse["loss"], dense.loss, rtol=1e-5, atol=1e-6)
    mlm_dense = torch.nn.functional.cross_entropy(dense.prediction_logits.view(-1, 500), batch["labels"].view(-1))
    torch.testing.assert_close(sparse["mlm_loss"], mlm_dense, rtol=1e-5, atol=1e-6)
    assert sparse["mlm_count"].item() == (batch["labels"] != -100).sum().item()


def test_sparse_gradients_equal_dense_gradients(tiny_model):
    batch = random_batch(500, seed=1)
    tiny_model(**batch).loss.backward()
    dense = {n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None}
    tiny_model.zero_grad()
    SparsePretrainingLoss(tiny_model)(**batch)["loss"].backward()
    for name, param in tiny_model.named_parameters():
        torch.testing.assert_close(param.grad, dense[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mlm_only_loss_without_nsp_label(tiny_model):
    batch = random_batch(500)
    batch.pop("next_sentence_label")
    out = SparsePretrainingLoss(tiny_model)(**batch)
    assert "nsp_loss" not in out and torch.equal(out["loss"], out["mlm_loss"])


def test_batch_with_nothing_masked_gives_zero_not_nan(tiny_model):
    batch = random_batch(500)
    batch["labels"].fill_(-100)
    assert SparsePretrainingLoss(tiny_model)(**batch)["mlm_loss"].item() == 0.0


def test_config_derives_heads_and_feed_forward_from_width():
    config = build_bert_config(ModelConfig(hidden_size=512, num_hidden_layers=4), vocab_size=30522, pad_token_id=0)
    assert isinstance(config, BertConfig)
    assert (config.num_attention_heads, config.intermediate_size, config.vocab_size) == (8, 2048, 30522)
    assert build_model(config).config._attn_implementation == "sdpa"


def test_heads_must_divide_width():
    with pytest.raises(UsageError, match="not divisible"):
        build_bert_config(ModelConfig(hidden_size=100, num_attention_heads=3), vocab_size=10, pad_token_id=0)


def test_fixed_masked_positions_give_the_same_loss_as_the_boolean_selection(tiny_model):
    batch = random_batch(500, seed=2)
    predicted = batch["labels"] != -100
    width = int(predicted.sum(1).max()) + 3
    positions = torch.zeros(4, width, dtype=torch.long)
    for row in range(4):
        found = predicted[row].nonzero().flatten()
        positions[row, : len(found)] = found
    batch["labels"][:, 0] = -100  # position 0 pads the fixed-width rows
    boolean = SparsePretrainingLoss(tiny_model)(**batch)
    fixed = SparsePretrainingLoss(tiny_model)(**batch, masked_positions=positions)
    torch.testing.assert_close(fixed["loss"], boolean["loss"], rtol=1e-6, atol=1e-6)
    assert fixed["mlm_count"].item() == boolean["mlm_count"].item()
    assert fixed["mlm_correct"].item() == boolean["mlm_correct"].item()


def test_host_found_masked_indices_give_the_boolean_selection_exactly(tiny_model):
    batch = random_batch(500, seed=3)
    indices = (batch["labels"].flatten() != -100).nonzero().flatten()
    boolean = SparsePretrainingLoss(tiny_model)(**batch)
    indexed = SparsePretrainingLoss(tiny_model)(**batch, masked_indices=indices)
    for key in ("loss", "mlm_loss", "mlm_correct", "mlm_count"):
        assert torch.equal(indexed[key], boolean[key]), key


@pytest.mark.parametrize("fast", [True, False])
def test_cpu_dropout_is_swapped_in_unless_turned_off(fast):
    model_config = ModelConfig(hidden_size=64, num_hidden_layers=1, fast_cpu_dropout=fast)
    model = build_or_load_model(model_config, build_bert_config(model_config, vocab_size=100, pad_token_id=0))
    assert any(isinstance(m, CpuDropout) for m in model.modules()) is fast
    assert (model.config._attn_implementation == ATTENTION) is fast
