"""Per-head causal effects beside the attention pattern: the explorer's and the export's panel.

A pattern says where a head reads; an ablation effect says whether the model needs it. Both views
accept ``effects=``: a :class:`minigpt.interpret.HeadEffects` (from
:func:`minigpt.interpret.head_ablation_effects`, which carries its own label), or any
(n_layer, n_head) tensor / array of numbers with ``effect_label=`` naming the metric and baseline.
The panel prints the selected head's number and rank and draws every head's effect as a grid of
cells (red = the loss rises when the head is removed, blue = it falls), the selected head outlined.
"""

from __future__ import annotations

import html

import torch

POS_RGB, NEG_RGB = (214, 39, 40), (31, 119, 180)  # red: ablating hurts; blue: ablating helps


def as_effects(effects, label: str | None, n_layer: int, n_head: int) -> tuple[torch.Tensor, str] | None:
    """``(effects (n_layer, n_head) float64, label)``, or None without effects; a clear error otherwise."""
    if effects is None:
        if label is not None:
            raise ValueError("effect_label was given without effects=: pass effects=head_ablation_effects(model, idx) "
                             "(or an (n_layer, n_head) tensor) as well")
        return None
    if hasattr(effects, "effects") and hasattr(effects, "label"):  # a HeadEffects
        effects, label = effects.effects, label if label is not None else effects.label
    try:
        e = torch.as_tensor(effects, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"effects must be numbers of shape (n_layer, n_head) = ({n_layer}, {n_head}), got "
                        f"{type(effects).__name__}: pass head_ablation_effects(model, idx) or a tensor") from None
    if tuple(e.shape) != (n_layer, n_head):
        raise ValueError(f"effects must have shape (n_layer, n_head) = ({n_layer}, {n_head}), got {tuple(e.shape)}: "
                         "pass one number per head of this model, e.g. head_ablation_effects(model, idx)")
    if not torch.isfinite(e).all():
        l, h = (~torch.isfinite(e)).nonzero()[0].tolist()
        raise ValueError(f"effects must be finite numbers, got {e[l, h].item()} at layer {l}, head {h}: "
                         "recompute them, or replace missing heads by 0 and say so in effect_label")
    label = "per-head effect (no effect_label given)" if label is None else str(label)
    return e, label


def rank_of(e: torch.Tensor, layer: int, head: int) -> int:
    """1 + the number of heads whose effect is strictly larger (1 = the largest rise)."""
    return 1 + int((e > e[layer, head]).sum())


def effect_text(e: torch.Tensor, layer: int, head: int | str) -> str:
    """One sentence for the selected head (the export's JavaScript writes the same sentence)."""
    n = e.numel()
    if head == "mean":
        return (f"Layer {layer}, mean of heads: n/a, an ablation effect belongs to one head; layer {layer}'s heads "
                f"range from {e[layer].min().item():+.3f} to {e[layer].max().item():+.3f}.")
    if head == "all":
        return f"Layer {layer}, all heads: each head's effect is in its row; the largest is {e.max().item():+.3f}."
    return (f"Layer {layer}, head {head}: ablation effect {e[layer, head].item():+.3f}, "
            f"rank {rank_of(e, layer, head)} of {n} (largest rise first).")


def cell_fill(v: float, vmax: float) -> str:
    rgb = POS_RGB if v >= 0 else NEG_RGB
    a = 0.0 if vmax <= 0 else min(1.0, abs(v) / vmax)
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.3f})"


def _geom(n_head: int) -> tuple[int, int, int, int]:
    """Cell width and height, left and top margins: 8 heads fit in 270 px, so the panel sits beside
    a 32-token heatmap and its colour bar within 950 px (numbers in the cells up to 8 heads)."""
    return max(14, min(30, 240 // n_head)), 18, 28, 14


def effects_grid_svg(e: torch.Tensor) -> str:
    """Every head's effect: rows = layers (L0, L1, …), columns = heads (H0, …), the number in each cell when it fits.

    Cells carry ``data-l``/``data-h`` (the export's script outlines the selected one and selects a
    head on click); the colour scale is symmetric, full colour at the largest |effect|.
    """
    L, H = e.shape
    cw, ch, left, top = _geom(H)
    vmax = e.abs().max().item()
    out = [f'<svg class="effects" width="{effects_grid_width(e)}" height="{top + L * ch + 2}" font-size="10">'
           f'<text x="0" y="{top - 4}" fill="#555">layer</text>']
    for h in range(H):
        out.append(f'<text x="{left + h * cw + cw / 2}" y="{top - 4}" text-anchor="middle" fill="#555">H{h}</text>')
    for l in range(L):
        out.append(f'<text x="{left - 4}" y="{top + l * ch + 13}" text-anchor="end" fill="#555">L{l}</text>')
        for h in range(H):
            v = e[l, h].item()
            x, y = left + h * cw, top + l * ch
            out.append(f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{cell_fill(v, vmax)}" stroke="#ddd" '
                       f'data-l="{l}" data-h="{h}" data-effect="{v:.6f}"><title>layer {l}, head {h}: {v:+.4f}</title></rect>')
            if cw >= 30:
                ink = "#fff" if vmax > 0 and abs(v) / vmax > 0.6 else "#222"  # legible on a dark cell
                out.append(f'<text x="{x + cw / 2}" y="{y + 13}" font-size="9" text-anchor="middle" fill="{ink}" '
                           f'pointer-events="none">{v:+.2f}</text>')
    out.append("</svg>")
    return "".join(out)


def effects_grid_width(e: torch.Tensor) -> int:
    cw, _, left, _ = _geom(e.shape[1])
    return left + e.shape[1] * cw + 2


def _outline(e: torch.Tensor, layer: int, head: int | str) -> str:
    """A red box around the selected head's cell (or the whole layer's row for 'mean' / 'all')."""
    H = e.shape[1]
    cw, ch, left, top = _geom(H)
    x, w = (left, H * cw) if head in ("mean", "all") else (left + int(head) * cw, cw)
    return (f'<rect class="effsel" x="{x}" y="{top + layer * ch}" width="{w}" height="{ch}" fill="none" '
            f'stroke="#d62728" stroke-width="2"/>')


def effect_panel_html(e: torch.Tensor, label: str, layer: int, head: int | str) -> str:
    """The explorer's panel: the sentence for the selected head, the label, and the grid, outlined."""
    grid = effects_grid_svg(e).replace("</svg>", _outline(e, layer, head) + "</svg>")
    return (f'<div class="effect-panel" style="max-width: {max(270, effects_grid_width(e))}px"><p class="note"><b>Causal test.</b> {html.escape(effect_text(e, layer, head))}'
            f'<br><span class="effect-label">{html.escape(label)}</span>; red = the loss rises without the head.</p>'
            f"{grid}</div>")
