"""The attention formula's stages for one head, side by side:

    raw scores QKᵀ  →  scaled by 1/√d_k  →  causal mask (−∞ above the diagonal)  →  softmax

recomputed from the queries and keys the block really produces, for any minigpt model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import torch

from ..attention import causal_mask
from .capture import eval_mode, model_device, token_strings
from .heatmap import draw_matrix
from .style import heatmap_figsize


@torch.no_grad()
def block_qkv(model, idx: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The queries, keys and values of every head of ``layer``: each (B, n_head, T, head_size).

    Read with a hook on the layer's attention module (its input is the block's ``ln_1(x)``),
    in eval mode; the model is not changed. Rotary models give the rotated q and k (the ones
    the scores are made of); grouped-query models repeat each shared key/value head.
    """
    idx = torch.as_tensor(idx, dtype=torch.long)
    idx = idx[None] if idx.dim() == 1 else idx
    blocks = model.transformer.h
    if not -len(blocks) <= layer < len(blocks):
        raise IndexError(f"layer {layer} does not exist: this model has layers 0..{len(blocks) - 1}")
    attn = blocks[layer].attn
    seen = {}
    handle = attn.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        with eval_mode(model):
            model(idx.to(model_device(model)))
    finally:
        handle.remove()
    x = seen["x"]
    q, k, v = attn.project(x, model.rotary(torch.arange(x.size(1), device=x.device), x.dtype))  # keys and values: (B, n_kv_head, T, hs)
    group = attn.n_head // attn.n_kv_head  # grouped-query attention: repeat each shared head
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    return q.float().cpu(), k.float().cpu(), v.float().cpu()


@dataclass
class AttentionStages:
    """One head's formula, stage by stage; every matrix is (T, T)."""

    tokens: list[str]
    layer: int
    head: int
    q: torch.Tensor  # (T, d_k)
    k: torch.Tensor  # (T, d_k)
    scores: torch.Tensor  # QKᵀ
    scaled: torch.Tensor  # QKᵀ / √d_k
    masked: torch.Tensor  # scaled, −∞ above the diagonal
    weights: torch.Tensor  # softmax(masked), rows sum to 1

    @property
    def d_k(self) -> int:
        return self.q.shape[-1]


def stages_from_qk(q: torch.Tensor, k: torch.Tensor, tokens: Sequence[str] | None = None,
                   layer: int = 0, head: int = 0) -> AttentionStages:
    """The four stages from one head's queries (T, d_k) and keys (T, d_k)."""
    T, d_k = q.shape
    scores = q @ k.T
    scaled = scores / math.sqrt(d_k)
    masked = scaled.masked_fill(~causal_mask(T), float("-inf"))
    weights = torch.softmax(masked, dim=-1)
    tokens = list(tokens) if tokens is not None else [str(i) for i in range(T)]
    return AttentionStages(tokens, layer, head, q, k, scores, scaled, masked, weights)


def attention_stages(model, text, tokenizer=None, *, layer: int = 0, head: int = 0) -> AttentionStages:
    """Recompute one head's attention stage by stage from the model's own Q and K for ``text``
    (a string with ``tokenizer``, or token ids)."""
    ids = (torch.as_tensor(list(tokenizer.encode(text))) if isinstance(text, str)
           else torch.as_tensor(text)).long().flatten()[: model.config.block_size]
    q, k, _ = block_qkv(model, ids, layer)
    n_head = q.shape[1]
    if not -n_head <= head < n_head:
        raise IndexError(f"head {head} does not exist: this model has heads 0..{n_head - 1}")
    return stages_from_qk(q[0, head], k[0, head], token_strings(tokenizer, ids.tolist()), layer, head)


def plot_attention_stages(st: AttentionStages, *, annotate: bool | None = None):
    """Four heatmaps: QKᵀ, scaled, masked (future cells drawn as "masked", not as 0), softmax.

    A 2 × 2 grid, so that the figure stays about 11 inches (≈ 900 px at 80 dpi) wide. Each of the
    first three panels has its own diverging colour scale, symmetric around 0 (the scores are any
    real number, and scaling by 1/√d_k shrinks them: on one shared scale the later panels look
    blank); the last is on the 0–1 scale of probabilities. Returns the figure.
    """
    T = len(st.tokens)
    annotate = T <= 10 if annotate is None else annotate
    w, h = heatmap_figsize(T, T, cell=0.38, extra=(1.8, 1.6), max_size=5.6)
    fig, axes = plt.subplots(2, 2, figsize=(2 * w, 2 * h))
    axes = axes.ravel()
    panels = [(st.scores, "1. raw scores QKᵀ", False),
              (st.scaled, f"2. scaled by 1/√d_k = 1/√{st.d_k}", False),
              (st.masked, "3. causal mask: future = −∞", True)]
    for ax, (m, title, masked) in zip(axes[:3], panels):
        m = torch.as_tensor(m)
        finite = m[torch.isfinite(m)]
        lim = float(finite.abs().max()) if finite.numel() else 1.0
        draw_matrix(ax, m, st.tokens, vmin=-(lim or 1.0), vmax=lim or 1.0, cmap="RdBu_r", masked_upper=masked,
                    cbar_label="score", annotate=annotate, fmt="{:.1f}", title=title)
    draw_matrix(axes[3], st.weights, st.tokens, annotate=annotate, title="4. softmax: rows sum to 1")
    for ax in axes[[1, 3]]:
        ax.set_ylabel("")
    for ax in axes[:2]:
        ax.set_xlabel("")
    fig.suptitle(f"Layer {st.layer}, head {st.head}: the attention formula stage by stage")
    fig.tight_layout()
    return fig
