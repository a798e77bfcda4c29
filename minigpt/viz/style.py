"""Shared look of every attention figure: token labels, the 0–1 colour scale, slide sizing, saving."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib
import matplotlib.pyplot as plt

CMAP = "viridis"  # perceptually uniform, readable in greyscale and by colour-blind viewers
MASKED_FACE = "#dddddd"  # causally masked cells: grey and hatched, never drawn as a zero weight
MASKED_HATCH = "//"
WEIGHT_LABEL = "attention weight (0–1)"


def token_label(token: str) -> str:
    """A token as a one-line label: newlines, tabs and other invisible characters escaped, and a
    token made only of spaces shown as ␣ (so that it does not look like an empty label)."""
    token = str(token)
    if token and token.strip(" ") == "":
        return "␣" * len(token)
    return repr(token)[1:-1] or "∅"


def token_labels(tokens: Sequence[str]) -> list[str]:
    return [token_label(t) for t in tokens]


def indexed_labels(tokens: Sequence[str]) -> list[str]:
    """Labels that stay unique when a token repeats: ``"3: the"``."""
    return [f"{i}: {token_label(t)}" for i, t in enumerate(tokens)]


def cmap_hex(n: int = 256, cmap: str = CMAP) -> list[str]:
    """The colour scale as ``n`` hex colours (used by the HTML views, so all views agree)."""
    cm = matplotlib.colormaps[cmap]
    return [matplotlib.colors.to_hex(cm(i / (n - 1))) for i in range(n)]


def heatmap_figsize(n_cols: int, n_rows: int, cell: float = 0.42, extra=(1.6, 1.2),
                    max_size: float = 11.0) -> tuple[float, float]:
    """A figure size that keeps token labels readable, capped for slides."""
    return (min(max_size, extra[0] + cell * n_cols), min(max_size, extra[1] + cell * n_rows))


@contextmanager
def slide_style(scale: float = 1.5) -> Iterator[None]:
    """Bigger fonts and lines for figures shown on a projector::

        with slide_style():
            plot_model_view(cap)
    """
    base = matplotlib.rcParams["font.size"]
    with plt.rc_context({"font.size": base * scale, "axes.titlesize": "large", "axes.labelsize": "medium",
                         "lines.linewidth": 2.0 * scale / 1.5, "figure.dpi": 100}):
        yield


def save_figure(fig_or_ax, path: str | Path, dpi: int = 200) -> Path:
    """Save a figure (or the figure of an Axes) to ``.png``, ``.svg`` or ``.pdf``, tightly cropped."""
    fig = getattr(fig_or_ax, "figure", fig_or_ax)
    fig = fig if hasattr(fig, "savefig") else fig_or_ax.get_figure()
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"save_figure writes .png, .svg or .pdf files, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if fmt == "svg" else {}  # reproducible SVGs: no timestamp inside
    fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", metadata=metadata)
    return path
