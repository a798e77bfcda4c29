"""Attention visualization (matplotlib). Extended by the visualization chapter."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch


def attention_heatmap(weights: torch.Tensor, tokens: Sequence[str] | None = None, *, ax=None,
                      title: str = "Attention weights", masked_upper: bool = True):
    """Draw one head's attention matrix (T_q, T_k) with token labels and a 0–1 colour scale.

    Rows are queries (the token doing the looking), columns keys (the tokens looked at); each row
    sums to 1. Cells above the diagonal are causally masked: drawn grey and hatched, not as zero.
    Returns the matplotlib Axes.
    """
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"attention_heatmap needs one head's (T_q, T_k) matrix, got shape {tuple(w.shape)}")
    t_q, t_k = w.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.45 * t_k, 0.8 + 0.45 * t_q))
    shown = w.clone()
    if masked_upper:
        off = t_k - t_q
        mask = torch.ones(t_q, t_k, dtype=torch.bool).triu(1 + off)
        shown[mask] = float("nan")
        ax.set_facecolor("#dddddd")
    im = ax.imshow(shown.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    labels_q = list(tokens)[-t_q:] if tokens is not None else [str(i) for i in range(t_q)]
    labels_k = list(tokens) if tokens is not None else [str(i) for i in range(t_k)]
    ax.set_xticks(range(t_k), [repr(t)[1:-1] for t in labels_k], rotation=90)
    ax.set_yticks(range(t_q), [repr(t)[1:-1] for t in labels_q])
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label="attention weight (0–1)", fraction=0.046, pad=0.04)
    return ax
