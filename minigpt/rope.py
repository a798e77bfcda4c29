"""Rotary position embedding (RoPE): rotate each head's queries and keys by their position.

Split a head's ``d`` dimensions into pairs ``(i, i + d/2)`` (the "rotate-half" layout of
Llama and Hugging Face, so imported weights need no permutation) and turn pair ``i`` at position
``m`` by the angle ``m·θ_i`` with ``θ_i = base^(-2i/d)``. A rotation keeps lengths, and the dot
product of a query rotated by ``m`` with a key rotated by ``n`` depends only on ``n − m``:
the scores see relative positions. No position *vector* is added to the residual stream;
position still reaches it indirectly, through the attention weights the rotation sets (and even
the causal mask alone lets a model infer position: Haviv et al. 2022).
"""

from __future__ import annotations

import torch


def inv_freq(head_size: int, theta: float = 10000.0, device: torch.device | str | None = None) -> torch.Tensor:
    """The angular speeds θ_i = theta^(-2i/d), i = 0 … d/2 − 1 (float32, as Hugging Face)."""
    return 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float, device=device) / head_size))


def rope_cos_sin(positions: torch.Tensor, head_size: int, theta: float = 10000.0,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles for absolute ``positions`` (T,): each (T, head_size).

    Angles are computed in float32 and then cast to ``dtype``; each angle appears twice, once for
    each half of the head (``cat(freqs, freqs)``).
    """
    freqs = positions.float()[:, None] * inv_freq(head_size, theta, positions.device)[None, :]  # (T, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, d)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x₁, x₂) -> (−x₂, x₁) on the two halves of the last dimension: a 90° turn of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (..., T, head_size) by cos, sin (T, head_size): x·cos + rotate_half(x)·sin."""
    return x * cos + rotate_half(x) * sin
