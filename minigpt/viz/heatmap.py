"""Attention as heatmaps: one head, one layer averaged over heads, and all layers × heads."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch, Polygon

from .capture import AttentionCapture
from .style import CMAP, MASKED_FACE, MASKED_HATCH, WEIGHT_LABEL, heatmap_figsize, token_labels


def _ticks(n: int, max_labels: int = 64) -> list[int]:
    step = max(1, -(-n // max_labels))  # ceil: label every step-th token of a long text
    return list(range(0, n, step))


def _tick_labels(labels: list[str], ticks: list[int], n: int) -> list[str]:
    """All labels of a short text; with an index (``"12:the"``) once some are skipped."""
    return [labels[i] if len(ticks) == n else f"{i}:{labels[i]}" for i in ticks]


def _label_size(n: int) -> float:
    return 10.0 if n <= 24 else (8.0 if n <= 48 else 6.5)


def masked_region(ax, t_q: int, t_k: int, label: bool = True) -> None:
    """Grey, hatched staircase over the causally masked (future) cells — "masked", not zero."""
    off = t_k - t_q
    pts = [(t_k - 0.5, -0.5)]
    for i in range(t_q):
        x = min(i + off + 0.5, t_k - 0.5)
        pts += [(x, i - 0.5), (x, i + 0.5)]
    pts.append((t_k - 0.5, t_q - 0.5))
    ax.add_patch(Polygon(pts, closed=True, facecolor=MASKED_FACE, edgecolor="#9a9a9a",
                         hatch=MASKED_HATCH, linewidth=0.0, zorder=2))
    if label and t_q >= 3 and t_k - off >= 3:
        ax.text(t_k - 1, 0, "masked", ha="right", va="center", fontsize=8, color="#555555", zorder=3,
                bbox=dict(facecolor=MASKED_FACE, edgecolor="none", pad=1.0))


def draw_matrix(ax, matrix, tokens: Sequence[str] | None = None, *, vmin=0.0, vmax=1.0, cmap=CMAP,
                masked_upper: bool = True, cbar_label: str | None = WEIGHT_LABEL, annotate: bool = False,
                fmt: str = "{:.2f}", title: str | None = None, mask_label: bool = True):
    """Draw a (T_q, T_k) matrix with token labels; the future cells as masked; return the image."""
    m = torch.as_tensor(matrix).detach().float().cpu()
    if m.dim() != 2:
        raise ValueError(f"need one head's (T_q, T_k) matrix, got shape {tuple(m.shape)}")
    t_q, t_k = m.shape
    shown = m.clone().numpy()
    if masked_upper:
        future = np.triu(np.ones((t_q, t_k), dtype=bool), 1 + t_k - t_q)
        shown[future] = np.nan
    shown[~np.isfinite(shown)] = np.nan  # -inf scores are drawn by the masked region, not as colours
    im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    if masked_upper:
        masked_region(ax, t_q, t_k, label=mask_label)
    labels_k = token_labels(tokens) if tokens is not None else [str(i) for i in range(t_k)]
    labels_q = labels_k[-t_q:] if tokens is not None else [str(i) for i in range(t_q)]
    xt, yt = _ticks(t_k), _ticks(t_q)
    ax.set_xticks(xt, _tick_labels(labels_k, xt, t_k), rotation=90, fontsize=_label_size(t_k))
    ax.set_yticks(yt, _tick_labels(labels_q, yt, t_q), fontsize=_label_size(t_q))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title)
    if annotate:
        for i in range(t_q):
            for j in range(t_k):
                v = shown[i, j]
                if np.isfinite(v):
                    if cmap == CMAP:  # viridis: dark at the low end
                        dark = (v - vmin) / max(vmax - vmin, 1e-12) < 0.6
                    else:  # diverging: dark at both ends, light in the middle
                        dark = abs(v - (vmin + vmax) / 2) > 0.3 * (vmax - vmin)
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                            color="white" if dark else "black", zorder=3)
    if cbar_label:
        ax.figure.colorbar(im, ax=ax, label=cbar_label, fraction=0.046, pad=0.04)
    return im


def attention_heatmap(weights: torch.Tensor, tokens: Sequence[str] | None = None, *, ax=None,
                      title: str = "Attention weights", masked_upper: bool = True, annotate: bool = False):
    """Draw one head's attention matrix (T_q, T_k) with token labels and a 0–1 colour scale.

    Rows are queries (the token doing the looking), columns keys (the tokens looked at); each row
    sums to 1. Cells above the diagonal are causally masked: drawn grey and hatched, not as zero.
    ``annotate=True`` writes each weight in its cell (for short texts). Returns the Axes.
    """
    w = torch.as_tensor(weights).detach().float().cpu()
    if w.dim() != 2:
        raise ValueError(f"attention_heatmap needs one head's (T_q, T_k) matrix, got shape {tuple(w.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=heatmap_figsize(w.shape[1], w.shape[0]))
    draw_matrix(ax, w, tokens, masked_upper=masked_upper, title=title, annotate=annotate)
    return ax


def plot_head(cap: AttentionCapture, layer: int, head: int | str = "mean", *, ax=None, annotate: bool = False):
    """One head of a capture (or the layer's mean over heads with ``head="mean"``) as a heatmap."""
    which = "mean of all heads" if head == "mean" else f"head {head}"
    return attention_heatmap(cap.head(layer, head), cap.tokens, ax=ax, annotate=annotate,
                             title=f"Layer {layer}, {which}")


def plot_model_view(cap: AttentionCapture, layers: Sequence[int] | None = None,
                    heads: Sequence[int] | None = None, *, panel: float | None = None, labels: bool | None = None,
                    title: str | None = None):
    """All layers × heads as a grid of small heatmaps (the "model view"), one shared 0–1 scale.

    Rows are layers (first at the top), columns heads. Token labels are drawn on the outer panels
    when the text is short (``labels=None`` decides: up to 16 tokens). Returns the figure.
    """
    layers = list(range(cap.n_layer)) if layers is None else list(layers)
    heads = list(range(cap.n_head)) if heads is None else list(heads)
    T = cap.n_tokens
    labels = T <= 16 if labels is None else labels
    panel = min(1.9, 13.0 / max(len(heads), 1), 11.0 / max(len(layers), 1)) if panel is None else panel
    extra = 1.2 if labels else 0.0
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False, sharex=True, sharey=True,
                             figsize=(min(16.0, 1.0 + extra + panel * len(heads)),
                                      min(16.0, 0.9 + extra + panel * len(layers))))
    future = np.triu(np.ones((T, T), dtype=bool), 1)
    names = token_labels(cap.tokens)
    im = None
    for r, layer in enumerate(layers):
        for c, head in enumerate(heads):
            ax = axes[r, c]
            w = cap.head(layer, head).numpy().copy()
            w[future] = np.nan
            ax.set_facecolor(MASKED_FACE)
            im = ax.imshow(w, cmap=CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.tick_params(length=0)
            if labels:
                ax.set_xticks(range(T), names, rotation=90, fontsize=7)
                ax.set_yticks(range(T), names, fontsize=7)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            if r == 0:
                ax.set_title(f"head {head}", fontsize=10)
            if c == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=10)
    fig.suptitle(title or f"Every head: rows = layers, columns = heads ({T} tokens; grey = masked future)")
    fig.colorbar(im, ax=axes, label=WEIGHT_LABEL, fraction=0.03, pad=0.02)
    return fig


def plot_head_average(cap: AttentionCapture, layer: int | None = None, *, ax=None):
    """Attention averaged over all heads of ``layer`` (or over every layer and head if None)."""
    w = cap.weights.mean((0, 1)) if layer is None else cap.head(layer, "mean")
    where = "all layers and heads" if layer is None else f"layer {layer}"
    return attention_heatmap(w, cap.tokens, ax=ax, title=f"Mean attention over {where}")


def masked_legend(ax) -> None:
    """Add a legend entry explaining the grey hatched cells."""
    ax.legend(handles=[Patch(facecolor=MASKED_FACE, hatch=MASKED_HATCH, edgecolor="#9a9a9a",
                             label="masked: future token")], loc="lower left", fontsize=8)
