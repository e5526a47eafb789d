"""CPU dropout: Bernoulli masks with the right rate, unbiased, independent between elements, reproducible from the
seed; attention on the fast path computes what SDPA computes; the swapped model saves and loads as a plain BERT."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import BertForPreTraining
from transformers.masking_utils import bidirectional_mask_function

from bert_recipes.dropout import ATTENTION, CpuDropout, cpu_dropout, keep_mask, padding_mask, use_cpu_dropout
from bert_recipes.modeling import ModelConfig, build_bert_config, build_model

N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_drop_at_rate_p_independently(p):
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([N]), p, torch.device("cpu"))
    dropped = (~keep).double()
    sigma = math.sqrt(p * (1 - p) / N)
    assert abs(dropped.mean().item() - p) < 5 * sigma
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)
    # neighbours share a 64-bit draw (offset 1) or not (offset 4): both must be independent
    for offset in (1, 4):
        both = (dropped[:-offset] * dropped[offset:]).mean().item()
        assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / N), offset


def test_kept_elements_are_scaled_and_the_mean_is_kept():
    torch.manual_seed(1)
    x = torch.rand(N) + 0.5
    out = cpu_dropout(x, 0.1)
    kept = out != 0
    _, scale = keep_mask(torch.Size([1]), 0.1, x.device)
    torch.testing.assert_close(out[kept], x[kept] * scale)
    assert out.mean().item() == pytest.approx(x.mean().item(), rel=3e-3)


def test_masks_follow_the_seed():
    torch.manual_seed(2)
    first, second = cpu_dropout(torch.ones(4096), 0.1), cpu_dropout(torch.ones(4096), 0.1)
    torch.manual_seed(2)
    assert torch.equal(cpu_dropout(torch.ones(4096), 0.1), first)
    assert not torch.equal(first, second)


def test_module_is_identity_outside_training_and_masks_gradients_like_outputs():
    module = CpuDropout(0.1)
    x = torch.randn(64, 32, requires_grad=True)
    assert torch.equal(module.eval()(x), x)
    out = module.train()(x)
    out.backward(torch.ones_like(out))
    _, scale = keep_mask(torch.Size([1]), 0.1, x.device)
    assert torch.equal(x.grad, (out != 0).float() * scale)


def tiny_bert(hidden_dropout: float = 0.1, attention_dropout: float = 0.1) -> BertForPreTraining:
    torch.manual_seed(0)
    model_config = ModelConfig(
        hidden_size=64, num_hidden_layers=2, hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
    )  # fmt: skip
    return build_model(build_bert_config(model_config, vocab_size=300, pad_token_id=0))


def padded_batch() -> dict[str, torch.Tensor]:
    input_ids = torch.randint(5, 300, (3, 24), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 10:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def test_fast_attention_computes_what_sdpa_computes():
    # a dropout probability that rounds to no dropped element takes the fast path and keeps everything
    reference, fast = tiny_bert(0.0, 0.0), tiny_bert(0.0, 1e-9)
    use_cpu_dropout(fast)
    assert fast.config._attn_implementation == ATTENTION
    batch = padded_batch()
    expected = reference.train()(**batch).prediction_logits
    got = fast.train()(**batch).prediction_logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], rtol=1e-4, atol=1e-5)


def test_fast_attention_runs_with_bf16_weights_as_sdpa_does():
    # DeepSpeed's bf16 casts the weights themselves, with no autocast: fp32 attention probabilities meet bf16 values
    reference, fast = tiny_bert(0.0, 0.0).bfloat16(), tiny_bert(0.0, 1e-9).bfloat16()
    use_cpu_dropout(fast)
    batch = padded_batch()
    expected = reference.train()(**batch).prediction_logits
    got = fast.train()(**batch).prediction_logits
    assert got.dtype == torch.bfloat16
    got.float().square().mean().backward()
    real = batch["attention_mask"].bool()
    # bf16 keeps 8 bits of mantissa: the two paths round at different places
    torch.testing.assert_close(got[real].float(), expected[real].float(), rtol=0.05, atol=0.05)


def test_swapped_model_trains_with_dropout_and_saves_as_a_plain_bert(tmp_path):
    model = tiny_bert()
    use_cpu_dropout(model)
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert sum(isinstance(m, CpuDropout) for m in model.modules()) == 2 * 3 + 1
    batch = padded_batch()
    first, second = model.train()(**batch).prediction_logits, model(**batch).prediction_logits
    assert not torch.equal(first, second)
    model.save_pretrained(tmp_path)
    assert "attn_implementation" not in (tmp_path / "config.json").read_text()
    loaded = BertForPreTraining.from_pretrained(tmp_path).eval()
    assert loaded.config._attn_implementation == "sdpa"
    torch.testing.assert_close(loaded(**batch).prediction_logits, model.eval()(**batch).prediction_logits)


def test_gradient_checkpointing_recomputes_the_same_masks():
    grads = []
    for checkpointing in (False, True):
        model = tiny_bert()
        use_cpu_dropout(model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(3)
        model.train()(**padded_batch()).prediction_logits.square().mean().backward()
        grads.append(model.bert.embeddings.word_embeddings.weight.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_an_all_ones_mask_is_left_out_only_where_checking_it_costs_no_wait(device):
    """On a CPU the all-ones check is free and saves the mask's work; on any other device (a GPU; here the meta
    device stands in) it would wait for the device at every forward, so the mask is always built."""
    ones = torch.ones(2, 8, dtype=torch.bool, device=device)
    mask = padding_mask(
        batch_size=2, q_length=8, kv_length=8, mask_function=bidirectional_mask_function, attention_mask=ones,
        allow_is_causal_skip=False, allow_is_bidirectional_skip=True, device=device,
    )  # fmt: skip
    assert (mask is None) is (device == "cpu")
