"""Dropout for training on CPUs.

PyTorch's CPU dropout draws one Bernoulli sample per element in a serial loop (its vectorised MKL path runs on Intel
CPUs only), and SDPA falls back to its fp32 math kernel whenever attention dropout is on. On this project's AMD CPU
that was an eighth of a bert-small bf16 step. Here each element's keep/drop decision comes from 16 random bits,
drawn 64 at a time from the same generator (so seeds, checkpointed RNG states and exact resume work as before), and
attention with dropout runs as eager attention in the autocast precision. The distribution is Bernoulli as before,
with p rounded to a multiple of 1/65536 and the scale 1/(1 - that p), so the expected output is the input exactly.

On GPUs, under torch.compile (whose generated kernels draw their own masks) and outside training, torch's own
dropout and SDPA run unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

ATTENTION = "sdpa_cpu_dropout"
LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A boolean keep mask, each element kept with probability 1 - p (p rounded to 1/65536), and the scale that
    keeps the expectation."""
    dropped = round(p * LEVELS)
    count = math.prod(shape)
    # randint over the full int64 range: all 64 bits uniform, viewed as four int16 draws
    words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=device)
    draws = words.view(torch.int16)[:count].view(shape)
    return draws >= dropped - LEVELS // 2, LEVELS / (LEVELS - dropped)


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    keep, scale = keep_mask(x.shape, p, x.device)
    return torch.where(keep, x * scale, 0)


def takes_fast_path(x: torch.Tensor, p: float) -> bool:
    return p > 0 and x.device.type == "cpu" and not torch.compiler.is_compiling()


class CpuDropout(nn.Dropout):
    """nn.Dropout whose CPU training masks come from `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.training and takes_fast_path(x, self.p)
        return cpu_dropout(x, self.p) if fast else super().forward(x)


def attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except on the CPU fast path: eager attention with `CpuDropout`'s masks, the
    softmax taken in fp32 as SDPA's math kernel takes it. (transformers passes dropout 0 outside training.)"""
    if not takes_fast_path(query, dropout):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        # sdpa_mask's boolean mask: True where a query may attend to a key
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probs = cpu_dropout(scores.softmax(-1, dtype=torch.float32), dropout)
    # in the values' dtype, as autocast would cast it: DeepSpeed's bf16 keeps the weights themselves in bf16, with
    # no autocast to reconcile an fp32 x bf16 matmul
    return torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous(), None


# devices whose tensors the host reads without waiting: there an all-ones mask may be looked at and left out
HOST_MEMORY_DEVICES = ("cpu",)


def padding_mask(*args, device: torch.device | str = "cpu", **kwargs) -> torch.Tensor | None:
    """transformers' SDPA mask, always built on accelerators: to leave out a mask without padding it reads the
    padding on the host (`padding_mask.all()`), which on a GPU waits for the device at every forward. On a CPU that
    read costs nothing and leaving out the mask saves its work, so the skip stays there."""
    if torch.device(device).type not in HOST_MEMORY_DEVICES:
        kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, device=device, **kwargs)


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, padding_mask)


def use_cpu_dropout(model: PreTrainedModel) -> None:
    """Swap the model's nn.Dropout modules for CpuDropout and its SDPA attention for `attention` (parameters, saved
    files and config.json unchanged; eager attention is left as chosen)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, CpuDropout(child.p, child.inplace))
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(ATTENTION)
