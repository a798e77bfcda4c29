"""One query token's attention: as bars over the keys, or as lines between two columns of tokens
(the "head view"). Both work in either direction: what a token attends to (its row), and what
attends to it (its column)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .capture import AttentionCapture
from .style import token_label

DIRECTIONS = ("attends_to", "attended_by")


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")


def _check_token(cap: AttentionCapture, i: int, what: str = "query") -> int:
    if not -cap.n_tokens <= i < cap.n_tokens:
        raise IndexError(f"{what} {i} is out of range: this text has tokens 0..{cap.n_tokens - 1}")
    return i % cap.n_tokens


def token_window(n_tokens: int, centre: int | None, size: int | None) -> tuple[int, int]:
    """``[lo, hi)`` of at most ``size`` tokens around ``centre`` (a long text stays readable);
    the first ``size`` tokens when ``centre`` is None."""
    if size is None or size >= n_tokens:
        return 0, n_tokens
    if centre is None:
        return 0, size
    lo = min(max(0, centre - size // 2), n_tokens - size)
    return lo, lo + size


def plot_query_bars(cap: AttentionCapture, layer: int, head: int | str, token: int, *,
                    direction: str = "attends_to", ax=None, window: int | None = 60):
    """Bars of one token's attention in one head (or ``"mean"``).

    ``direction="attends_to"``: the weights ``token`` gives to keys 0..token (its row; they sum
    to 1). ``direction="attended_by"``: the weight each query gives to ``token`` (its column).
    """
    _check_direction(direction)
    token = _check_token(cap, token, "token")
    w = cap.head(layer, head)
    if direction == "attends_to":
        values, idx = w[token, :token + 1].numpy(), np.arange(token + 1)
        ylabel = f"weight that '{token_label(cap.tokens[token])}' gives"
        xlabel = "key (attended to)"
    else:
        values, idx = w[token:, token].numpy(), np.arange(token, cap.n_tokens)
        ylabel = f"weight given to '{token_label(cap.tokens[token])}'"
        xlabel = "query (attending)"
    if window is not None and len(idx) > window:  # keep the end nearest the chosen token
        keep = slice(-window, None) if direction == "attends_to" else slice(0, window)
        values, idx = values[keep], idx[keep]
    if ax is None:
        _, ax = plt.subplots(figsize=(min(12.0, 1.5 + 0.35 * len(idx)), 3.2))
    colors = ["#d62728" if i == token else "#1f77b4" for i in idx]
    ax.bar(range(len(idx)), values, color=colors)
    ax.set_xticks(range(len(idx)), [f"{token_label(cap.tokens[i])}" for i in idx], rotation=90)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    which = "mean of heads" if head == "mean" else f"head {head}"
    verb = "attends to" if direction == "attends_to" else "is attended by"
    ax.set_title(f"Layer {layer}, {which}: token {token} '{token_label(cap.tokens[token])}' {verb}…")
    return ax


def plot_attention_lines(cap: AttentionCapture, layer: int, head: int | str = "all", token: int | None = None,
                         *, direction: str = "attends_to", ax=None, window: int | None = 40,
                         min_weight: float = 0.01):
    """The "head view": tokens in two columns, a line from query (left) to key (right) per weight.

    Line opacity is the weight. ``head`` is one head, ``"mean"``, or ``"all"`` (one colour per
    head). With ``token`` set, only its lines are drawn: what it attends to (``direction=
    "attends_to"``) or what attends to it (``"attended_by"``). Long texts show a window of tokens.
    """
    _check_direction(direction)
    if token is not None:
        token = _check_token(cap, token, "token")
    lo, hi = token_window(cap.n_tokens, token, window)
    heads = list(range(cap.n_head)) if head == "all" else [head]
    colors = plt.get_cmap("tab10")
    n = hi - lo
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, min(11.0, 1.2 + 0.28 * n)))
    y = {i: n - 1 - (i - lo) for i in range(lo, hi)}  # first token at the top
    for k, h in enumerate(heads):
        w = cap.head(layer, h).numpy()
        color = "#1f77b4" if len(heads) == 1 else colors(k % 10)
        for i in range(lo, hi):
            for j in range(lo, i + 1):
                if token is not None and ((direction == "attends_to" and i != token)
                                          or (direction == "attended_by" and j != token)):
                    continue
                if w[i, j] >= min_weight:
                    ax.plot([0, 1], [y[i], y[j]], color=color, alpha=float(min(1.0, w[i, j])),
                            linewidth=1.0 + 2.5 * w[i, j] * (1 if token is not None else 0.5),
                            solid_capstyle="butt")
    for i in range(lo, hi):
        bold = token is not None and i == token
        style = dict(fontsize=9, va="center", fontweight="bold" if bold else "normal",
                     color="#d62728" if bold else "black")
        ax.text(-0.04, y[i], token_label(cap.tokens[i]), ha="right", **style)
        ax.text(1.04, y[i], token_label(cap.tokens[i]), ha="left", **style)
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylim(-0.8, n - 0.2)
    ax.axis("off")
    which = {"all": "all heads (one colour each)", "mean": "mean of heads"}.get(head, f"head {head}")
    ax.set_title(f"Layer {layer}, {which}\nleft: query (attending) → right: key (attended to)", fontsize=10)
    if len(heads) > 1:
        for k, h in enumerate(heads):
            ax.plot([], [], color=colors(k % 10), label=f"head {h}")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(heads)), fontsize=8, frameon=False)
    return ax
