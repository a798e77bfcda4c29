"""Export a capture as one self-contained HTML file: no server, no kernel, no network.

Open it in any browser, attach it to an assignment or a slide deck. It has the explorer's
controls (layer, head or mean, token, direction, heatmap window) and a grid of every head;
all CSS and JavaScript are inline and a Content-Security-Policy forbids loading anything else.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from .capture import AttentionCapture
from .page import PAGE, PAGE_CSS, PAGE_JS
from .render import STRIP_RGB, colorbar_svg, strip_legend
from .style import MASKED_FACE, cmap_hex


def pack_weights(cap: AttentionCapture) -> str:
    """Lower triangles of every head and of each layer's mean, as base64 little-endian uint16."""
    w = cap.weights.double().numpy()  # (L, H, T, T)
    w = np.concatenate([w, w.mean(1, keepdims=True)], axis=1)  # head index n_head = mean of heads
    T = w.shape[-1]
    rows, cols = np.tril_indices(T)  # row-major: (0,0), (1,0), (1,1), (2,0) …  = i(i+1)/2 + j
    packed = np.rint(np.clip(w[..., rows, cols], 0.0, 1.0) * 65535).astype("<u2")
    return base64.b64encode(packed.tobytes()).decode("ascii")


def export_html(cap: AttentionCapture, path: str | Path | None = None, *, title: str | None = None,
                layer: int = 0, head: int | str = 0, token: int | None = None,
                direction: str = "attends_to", window: int = 32) -> str:
    """Write (if ``path`` is given) and return a standalone HTML page for ``cap``.

    ``layer``, ``head`` (an index or ``"mean"``), ``token``, ``direction`` (``"attends_to"`` or
    ``"attended_by"``) and ``window`` (tokens in the heatmap) set what the page shows first.
    Weights are stored to 1/65535, so a 256-token text of a 4×4 model is about 1.8 MB.
    """
    if direction not in ("attends_to", "attended_by"):
        raise ValueError(f"direction must be 'attends_to' or 'attended_by', got {direction!r}")
    T = cap.n_tokens
    token = T - 1 if token is None else int(token) % T
    if head != "mean" and not 0 <= int(head) < cap.n_head:
        raise IndexError(f"head {head!r} does not exist: use 0..{cap.n_head - 1} or 'mean'")
    if not 0 <= layer < cap.n_layer:
        raise IndexError(f"layer {layer} does not exist: this model has layers 0..{cap.n_layer - 1}")
    data = {
        "tokens": [str(t) for t in cap.tokens], "n_layer": cap.n_layer, "n_head": cap.n_head,
        "weights": pack_weights(cap), "lut": cmap_hex(256), "masked": MASKED_FACE, "strip_rgb": list(STRIP_RGB),
        "init": {"layer": int(layer), "head": head if head == "mean" else int(head), "token": token,
                 "direction": direction, "window": int(window)},
    }
    payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    title = title or "Attention explorer"
    subtitle = (f"{T} tokens, {cap.n_layer} layers × {cap.n_head} heads. Made with minigpt.viz — "
                f"a standalone page: no server, no network.")
    page = PAGE.format(title=html.escape(title), subtitle=html.escape(subtitle), css=PAGE_CSS,
                       legend=strip_legend(), colorbar=colorbar_svg(), data=payload, js=PAGE_JS)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    return page
