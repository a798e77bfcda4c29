"""HTML/SVG pieces of the interactive views, built in Python (no JavaScript, no network):
a token strip coloured by one token's attention, and a heatmap of a window of tokens.

The ipywidgets explorer shows them in an ``HTML`` widget; the standalone export draws the same
pieces with inline JavaScript (:mod:`minigpt.viz.page`), with the same colours and classes.
Hovering a heatmap cell shows its weight (an SVG ``<title>``, so it needs no script).
"""

from __future__ import annotations

import html
from functools import lru_cache
from typing import Sequence

import torch

from .style import MASKED_FACE, cmap_hex, token_label

STRIP_RGB = (31, 119, 180)  # token strip: white → this blue as the weight goes 0 → 1

CSS = """
.mgpt { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 13px; color: #222; }
.mgpt .strip { max-height: 11em; overflow-y: auto; border: 1px solid #ccc; padding: 6px; line-height: 2.0;
  white-space: pre-wrap; overflow-wrap: anywhere; font-family: ui-monospace, Menlo, Consolas, monospace; background: #fff; }
.mgpt .tok { padding: 2px 1px; border-radius: 3px; cursor: pointer; box-shadow: inset -1px 0 #e2e2e2; }
.mgpt .tok.sel { outline: 2px solid #d62728; }
.mgpt .tok.other { outline: 1px dashed #555; }
.mgpt .legend { display: inline-flex; align-items: center; gap: 6px; font-size: 12px; margin: 4px 0; }
.mgpt .legend .bar { width: 140px; height: 12px; border: 1px solid #999; }
.mgpt .note { color: #555; font-size: 12px; margin: 4px 0; }
.mgpt .views { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.mgpt svg text { font-family: ui-monospace, Menlo, Consolas, monospace; }
"""


@lru_cache(maxsize=1)
def _lut() -> tuple[str, ...]:
    return tuple(cmap_hex(256))


def weight_color(w: float) -> str:
    """The heatmap colour (viridis) of a weight in [0, 1]."""
    return _lut()[int(round(min(1.0, max(0.0, float(w))) * 255))]


def strip_background(w: float) -> str:
    r, g, b = STRIP_RGB
    return f"rgba({r},{g},{b},{min(1.0, max(0.0, float(w))):.3f})"


def strip_text_color(w: float) -> str:
    return "#fff" if w > 0.55 else "#222"


def display_token(token: str) -> str:
    """A token as it reads inside running text: a newline shows as ↵ and then breaks the line."""
    return html.escape(str(token).replace("\n", "↵\n").replace("\t", "⇥"))


def short_label(token: str, width: int = 10) -> str:
    s = token_label(token)
    return s if len(s) <= width else s[: width - 1] + "…"


def token_strip(tokens: Sequence[str], values: Sequence[float] | None, selected: int | None,
                others: Sequence[int] = ()) -> str:
    """Tokens as running text, each shaded by ``values[i]`` (0–1); ``selected`` outlined in red."""
    parts = []
    for i, t in enumerate(tokens):
        w = 0.0 if values is None else float(values[i])
        cls = "tok sel" if i == selected else ("tok other" if i in others else "tok")
        parts.append(f'<span class="{cls}" data-i="{i}" data-w="{w:.4f}" title="{i}: {html.escape(short_label(t, 30))}'
                     f' — {w:.3f}" style="background:{strip_background(w)};color:{strip_text_color(w)}">'
                     f"{display_token(t)}</span>")
    return f'<div class="strip">{"".join(parts)}</div>'


def strip_legend() -> str:
    r, g, b = STRIP_RGB
    return (f'<span class="legend">0<span class="bar" style="background:linear-gradient(to right,'
            f'rgba({r},{g},{b},0),rgb({r},{g},{b}))"></span>1 &nbsp;token shading = attention weight</span>')


def colorbar_svg(height: int = 200) -> str:
    """A vertical 0–1 colour scale with ticks and a label."""
    stops = "".join(f'<stop offset="{k / 10:.1f}" stop-color="{weight_color(1 - k / 10)}"/>' for k in range(11))
    ticks = "".join(f'<text x="22" y="{12 + (1 - v) * height + 4:.0f}" font-size="11">{v:g}</text>'
                    for v in (0, 0.25, 0.5, 0.75, 1))
    return (f'<svg width="90" height="{height + 24}" class="colorbar">'
            f'<defs><linearGradient id="mgpt-cb" x1="0" y1="0" x2="0" y2="1">{stops}</linearGradient></defs>'
            f'<rect x="4" y="12" width="14" height="{height}" fill="url(#mgpt-cb)" stroke="#999"/>{ticks}'
            f'<text x="62" y="{12 + height / 2:.0f}" font-size="11" transform="rotate(90 62 {12 + height / 2:.0f})"'
            f' text-anchor="middle">attention weight (0–1)</text></svg>')


def heatmap_svg(matrix: torch.Tensor, tokens: Sequence[str], lo: int, hi: int, *, selected: int | None = None,
                direction: str = "attends_to", cell: int = 14, labels: bool = True, title: str = "") -> str:
    """SVG heatmap of ``matrix[lo:hi, lo:hi]``: viridis cells, masked future cells grey and hatched,
    the selected token's row (``attends_to``) or column (``attended_by``) outlined in red."""
    m = torch.as_tensor(matrix).float()
    n = hi - lo
    pad = 78 if labels else 2
    size = pad + n * cell + 2
    out = [f'<svg width="{size}" height="{size + (16 if title else 0)}" class="heatmap">',
           f'<defs><pattern id="mgpt-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{MASKED_FACE}"/>'
           f'<line x1="0" y1="0" x2="0" y2="6" stroke="#aaa" stroke-width="2"/></pattern></defs>']
    top = 16 if title else 0
    if title:
        out.append(f'<text x="{pad}" y="12" font-size="12">{html.escape(title)}</text>')
    out.append(f'<g transform="translate({pad},{top + pad})">')
    for i in range(lo, hi):
        for j in range(lo, hi):
            x, y = (j - lo) * cell, (i - lo) * cell
            if j > i:
                out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="url(#mgpt-hatch)">'
                           f"<title>masked: {i} cannot see the future token {j}</title></rect>")
            else:
                w = float(m[i, j])
                out.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{weight_color(w)}" '
                           f'data-i="{i}" data-j="{j}"><title>{i} {html.escape(short_label(tokens[i]))} → '
                           f"{j} {html.escape(short_label(tokens[j]))}: {w:.3f}</title></rect>")
    if selected is not None and lo <= selected < hi:
        s = (selected - lo) * cell
        box = (0, s, n * cell, cell) if direction == "attends_to" else (s, 0, cell, n * cell)
        out.append(f'<rect x="{box[0]}" y="{box[1]}" width="{box[2]}" height="{box[3]}" fill="none" '
                   f'stroke="#d62728" stroke-width="2"/>')
    out.append("</g>")
    if labels:
        for k, i in enumerate(range(lo, hi)):
            c = top + pad + k * cell + cell / 2 + 4
            lab = html.escape(short_label(tokens[i]))
            out.append(f'<text x="{pad - 4}" y="{c:.0f}" font-size="10" text-anchor="end">{lab}</text>')
            xc = pad + k * cell + cell / 2 + 3
            out.append(f'<text x="{xc:.0f}" y="{top + pad - 4}" font-size="10" transform="rotate(-90 {xc:.0f} '
                       f'{top + pad - 4})">{lab}</text>')
        out.append(f'<text x="2" y="{top + 10}" font-size="10" fill="#555">rows: query</text>')
        out.append(f'<text x="2" y="{top + 22}" font-size="10" fill="#555">cols: key</text>')
    out.append("</svg>")
    return "".join(out)
