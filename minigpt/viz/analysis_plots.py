"""Plots for the analysis scores: a layer × head table, entropy by layer, rollout, induction."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .analysis import InductionResult
from .heatmap import attention_heatmap


def plot_head_scores(scores, title: str = "Score per head", *, ax=None, vmin: float = 0.0,
                     vmax: float | None = 1.0, cmap: str = "viridis", fmt: str = "{:.2f}",
                     label: str = "score"):
    """An (n_layer, n_head) table of scores as an annotated heatmap; the best head is boxed."""
    s = torch.as_tensor(scores, dtype=torch.float64).numpy()
    L, H = s.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 0.75 * H, 1.2 + 0.6 * L))
    vmax = float(s.max()) if vmax is None else vmax
    im = ax.imshow(s, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(L):
        for j in range(H):
            dark = (s[i, j] - vmin) / max(vmax - vmin, 1e-12) < 0.6
            ax.text(j, i, fmt.format(s[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    bi, bj = np.unravel_index(np.argmax(s), s.shape)
    ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="#d62728", linewidth=2.5))
    ax.set_xticks(range(H), [str(h) for h in range(H)])
    ax.set_yticks(range(L), [str(l) for l in range(L)])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
    return ax


def plot_entropy(entropy, *, bound: float | None = None, ax=None, normalized: bool = False):
    """Entropy of each head (dots) and the layer mean (line), by layer. ``bound`` draws the entropy
    of uniform attention (the largest possible) for reference."""
    e = torch.as_tensor(entropy, dtype=torch.float64).numpy()
    L, H = e.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, 3.6))
    for h in range(H):
        ax.scatter(np.arange(L) + (h - (H - 1) / 2) * 0.06, e[:, h], s=28, alpha=0.8,
                   label=f"head {h}" if H <= 8 else None)
    ax.plot(range(L), e.mean(1), color="black", marker="o", linewidth=2, label="layer mean")
    if bound is not None:
        ax.axhline(bound, color="#888888", linestyle="--", label="uniform attention (max)")
    ax.set_xticks(range(L), [f"layer {l}" for l in range(L)])
    ax.set_ylabel("normalised entropy (0–1)" if normalized else "mean entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.set_title("Attention entropy: low = focused on few tokens, high = spread out")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def plot_rollout(rollout, tokens: Sequence[str] | None = None, layer: int = -1, *, ax=None):
    """The rollout up to ``layer`` (default: the last) as a heatmap on the 0–1 scale."""
    r = torch.as_tensor(rollout)
    r = r[layer] if r.dim() == 3 else r
    n = torch.as_tensor(rollout).shape[0] if torch.as_tensor(rollout).dim() == 3 else 1
    upto = (n + layer) if layer < 0 else layer
    return attention_heatmap(r, tokens, ax=ax, title=f"Attention rollout through layers 0..{upto}")


def plot_induction(result: InductionResult):
    """Left: loss per position on a random sequence repeated twice; right: induction score per head."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.0, 3.8), gridspec_kw={"width_ratios": [1.4, 1]})
    loss = result.loss.numpy()
    P = result.length
    a.plot(np.arange(1, len(loss) + 1), loss, color="#1f77b4", alpha=0.6, label="loss at each position")
    a.plot([1, P - 1], [result.loss_first] * 2, color="black", linewidth=2.5, label="mean per copy")
    a.plot([P, len(loss)], [result.loss_second] * 2, color="black", linewidth=2.5)
    a.axvline(P - 0.5, color="#888888", linestyle="--")
    a.legend(fontsize=8, loc="lower left")
    a.text(P / 2, loss.max(), "first copy: random", ha="center", va="top", fontsize=9)
    a.text(P * 1.5, loss.max(), "second copy: a repeat", ha="center", va="top", fontsize=9)
    a.set_xlabel("position of the predicted token")
    a.set_ylabel("loss (nats)")
    a.set_title(f"Loss: {result.loss_first:.2f} on the first copy, {result.loss_second:.2f} on the second")
    plot_head_scores(result.scores, "Induction score per head", ax=b)
    fig.tight_layout()
    return fig
