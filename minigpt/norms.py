"""Normalisation layers: LayerNorm (GPT-2) and RMSNorm (Llama, Qwen), chosen by ``GPTConfig.norm``.

RMSNorm drops LayerNorm's mean and bias: ``y = x / sqrt(mean(x²) + eps) · g``. It is computed in
float32 and cast back to the input dtype before the gain, exactly as Llama's and Qwen's
``RMSNorm`` in Hugging Face transformers, so imported weights give the same numbers in bfloat16
too (``torch.nn.RMSNorm`` agrees in float32 but is not promised to round the same way in
bfloat16/float16).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import GPTConfig


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x², last dim) + eps) · weight``; the weight (gain) starts at 1, no bias."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # each vector to RMS 1
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


def make_norm(config: GPTConfig, dim: int | None = None) -> nn.Module:
    """The norm ``config.norm`` asks for, over ``dim`` (default n_embd)."""
    dim = config.n_embd if dim is None else dim
    if config.norm == "rmsnorm":
        return RMSNorm(dim, eps=config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)
