"""Causal self-attention: the formula softmax(QKᵀ/√d_k + mask)·V, and the multi-head module.

Two paths give the same numbers:
- the explicit path (:func:`attention`) writes the formula out and can return the weights;
- the fast path calls :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import GPTConfig


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean mask, True where a query may attend to a key.

    Query ``i`` sits at absolute position ``t_k - t_q + i`` (the last ``t_q`` of ``t_k`` positions),
    so it may see keys ``j <= t_k - t_q + i``. With ``t_k = t_q`` this is the lower triangle.
    """
    t_k = t_q if t_k is None else t_k
    q_pos = torch.arange(t_k - t_q, t_k, device=device)[:, None]  # (t_q, 1)
    k_pos = torch.arange(t_k, device=device)[None, :]  # (1, t_k)
    return k_pos <= q_pos  # (t_q, t_k)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention formula, written out: returns ``(softmax(QKᵀ/√d_k + mask) V, weights)``.

    Shapes: q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v); mask broadcastable to
    (..., T_q, T_k), True = may attend. The returned weights are the softmax probabilities
    (each row sums to 1), before any dropout is applied to them.
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., T_q, T_k), rows sum to 1
    used = F.dropout(weights, p=dropout_p, training=training) if dropout_p > 0 else weights
    return used @ v, weights  # (..., T_q, d_v): the weights multiply V


class KVCache:
    """Keys and values of earlier positions, kept so that generation computes each token once.

    One pre-allocated buffer per layer, shape (B, n_head, block_size, head_size); ``pos`` counts
    the positions filled. The model advances ``pos`` after a forward pass.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (batch_size, config.n_head, config.block_size, config.head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.block_size = config.block_size
        self.batch_size = batch_size
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the filled positions; return all keys and values so far."""
        t = k.size(2)
        self.k[layer][:, :, self.pos:self.pos + t] = k
        self.v[layer][:, :, self.pos:self.pos + t] = v
        return self.k[layer][:, :, :self.pos + t], self.v[layer][:, :, :self.pos + t]

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (used by beam search to follow the surviving beams)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]
        self.batch_size = int(index.numel())


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's parameter names (c_attn, c_proj)."""

    def __init__(self, config: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.layer_idx = layer_idx
        self.attn_impl = config.attn_impl
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # Q, K, V at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # output projection W_O
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False,
                kv_cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, n_embd) -> (y (B, T, n_embd), weights (B, n_head, T, T_k) or None)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # each (B, T, C)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, T_k, hs), T_k = pos + T
        t_k = k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if return_weights or self.attn_impl == "explicit":
            mask = causal_mask(T, t_k, device=x.device)
            y, weights = attention(q, k, v, mask, dropout_p=dropout_p, training=self.training)
        elif t_k == T:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:  # cached decoding: queries are the last T of t_k positions
            mask = None if T == 1 else causal_mask(T, t_k, device=x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        y = self.resid_dropout(self.c_proj(y))
        return y, (weights if return_weights else None)
