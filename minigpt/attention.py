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
from .norms import RMSNorm
from .rope import apply_rope


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

    One pre-allocated buffer per layer, shape (B, n_kv_head, block_size, head_size): with
    grouped-query attention only the key/value heads are stored. ``pos`` counts the positions
    filled. The model advances ``pos`` after a forward pass. With rotary positions the keys are
    stored already rotated (by their absolute positions), so they never need to be touched again.
    """

    def __init__(self, config: GPTConfig, batch_size: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (batch_size, config.kv_heads, config.block_size, config.head_size)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.block_size = config.block_size
        self.batch_size = batch_size
        self.pos = 0

    @property
    def bytes_per_token(self) -> int:
        """Memory per token of context, all layers, keys and values: 2·n_layer·n_kv_head·head_size·bytes."""
        k = self.k[0]
        return 2 * len(self.k) * k.size(1) * k.size(3) * k.element_size()

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, n_kv_head, T, hs) after the filled positions; return all keys and values so far."""
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
    """Multi-head causal self-attention with GPT-2's parameter names (c_attn, c_proj).

    With ``n_kv_head < n_head`` (grouped-query / multi-query attention) the fused ``c_attn``
    is narrower, (n_head + 2·n_kv_head)·head_size outputs: all queries, then the shared keys,
    then the shared values; query head h reads key/value head h // (n_head // n_kv_head).
    ``c_proj`` is unchanged, so slices of its input still belong to one query head each.
    """

    def __init__(self, config: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.n_embd = config.n_embd
        self.head_size = config.head_size
        self.dropout = config.dropout
        self.layer_idx = layer_idx
        self.attn_impl = config.attn_impl
        width = (config.n_head + 2 * self.n_kv_head) * config.head_size  # 3·n_embd without GQA
        self.c_attn = nn.Linear(config.n_embd, width, bias=config.attn_bias)  # Q, K, V at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # output projection W_O
        if config.qk_norm:  # per-head RMSNorm of queries and keys (Qwen3, Gemma 3)
            self.q_norm = RMSNorm(config.head_size, eps=config.norm_eps)
            self.k_norm = RMSNorm(config.head_size, eps=config.norm_eps)
        self.qk_norm = config.qk_norm
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, n_head, T, hs), keys and values (B, n_kv_head, T, hs) of x (B, T, n_embd),
        after the optional qk-norm and rotary embedding (``rope`` = cos, sin for x's positions)."""
        B, T, C = x.shape
        hs = self.head_size
        q, k, v = self.c_attn(x).split([self.n_head * hs, self.n_kv_head * hs, self.n_kv_head * hs], dim=2)
        q = q.view(B, T, self.n_head, hs)  # (B, T, nh, hs)
        k = k.view(B, T, self.n_kv_head, hs)  # (B, T, nkv, hs)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hs), (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, hs).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def forward(self, x: torch.Tensor, return_weights: bool = False, kv_cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, n_embd) -> (y (B, T, n_embd), weights (B, n_head, T, T_k) or None).

        ``rope``: cos and sin (T, head_size) at x's absolute positions, when positions are rotary.
        """
        B, T, C = x.shape
        q, k, v = self.project(x, rope)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nkv, T_k, hs), T_k = pos + T
        t_k = k.size(2)
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        gqa = {} if self.n_kv_head == self.n_head else {"enable_gqa": True}
        if return_weights or self.attn_impl == "explicit":
            if gqa:  # each key/value head serves n_head // n_kv_head consecutive query heads
                k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
                v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            mask = causal_mask(T, t_k, device=x.device)
            y, weights = attention(q, k, v, mask, dropout_p=dropout_p, training=self.training)
        elif t_k == T:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, **gqa)
        else:  # cached decoding: queries are the last T of t_k positions
            mask = None if T == 1 else causal_mask(T, t_k, device=x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, **gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        y = self.resid_dropout(self.c_proj(y))
        return y, (weights if return_weights else None)
