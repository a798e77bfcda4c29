"""Export a capture as one self-contained HTML file: no server, no kernel, no network.

Open it in any browser, attach it to an assignment or a slide deck. It has the explorer's
controls (layer, head or mean, token, direction, heatmap window) and a grid of every head;
all CSS and JavaScript are inline and a Content-Security-Policy forbids loading anything else.

With ``effects=`` the page also shows, beside the heatmap, the selected head's causal effect (its
number, rank and a grid of every head's, precomputed here). A text longer than ``max_tokens`` is
stored as a window of ``max_tokens`` tokens around the selected one, so the file stays bounded;
the weight each windowed query gives to the earlier tokens left out is kept and shown.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from .capture import AttentionCapture
from .effects import as_effects, effects_grid_svg
from .headview import token_window
from .page import PAGE, PAGE_CSS, PAGE_JS
from .render import STRIP_RGB, colorbar_svg, strip_legend
from .style import MASKED_FACE, cmap_hex


def _pack(x: np.ndarray) -> str:
    """Numbers in [0, 1] as base64 little-endian uint16 (x·65535, rounded)."""
    return base64.b64encode(np.rint(np.clip(x, 0.0, 1.0) * 65535).astype("<u2").tobytes()).decode("ascii")


def pack_weights(cap: AttentionCapture, lo: int = 0, hi: int | None = None) -> str:
    """Lower triangles of every head and of each layer's mean among tokens ``lo..hi-1``, as base64
    little-endian uint16."""
    w = cap.weights.double().numpy()  # (L, H, T, T)
    w = np.concatenate([w, w.mean(1, keepdims=True)], axis=1)  # head index n_head = mean of heads
    hi = w.shape[-1] if hi is None else hi
    rows, cols = np.tril_indices(hi - lo)  # row-major: (0,0), (1,0), (1,1), (2,0) …  = i(i+1)/2 + j
    return _pack(w[..., lo:hi, lo:hi][..., rows, cols])


def pack_before(cap: AttentionCapture, lo: int, hi: int) -> str:
    """For every head (and mean) and query ``lo..hi-1``: its total weight on the tokens before ``lo``."""
    w = cap.weights.double().numpy()
    w = np.concatenate([w, w.mean(1, keepdims=True)], axis=1)
    return _pack(w[..., lo:hi, :lo].sum(-1))


def export_html(cap: AttentionCapture, path: str | Path | None = None, *, title: str | None = None,
                layer: int = 0, head: int | str = 0, token: int | None = None,
                direction: str = "attends_to", window: int = 32, effects=None, effect_label: str | None = None,
                max_tokens: int = 256) -> str:
    """Write (if ``path`` is given) and return a standalone HTML page for ``cap``.

    ``layer``, ``head`` (an index or ``"mean"``), ``token``, ``direction`` (``"attends_to"`` or
    ``"attended_by"``) and ``window`` (tokens in the heatmap) set what the page shows first.
    ``effects`` (a :class:`minigpt.interpret.HeadEffects`, or an (n_layer, n_head) tensor with
    ``effect_label``) adds a panel with the selected head's causal effect.
    Weights are stored to 1/65535, so a 256-token text of a 4×4 model is about 1.8 MB; a longer text
    keeps only ``max_tokens`` tokens around ``token`` (the size grows with their square).
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise ValueError(f"max_tokens must be an int >= 2, got {max_tokens!r}: it bounds the page's size "
                         "(the weights grow with its square); 256 is about 1.8 MB for a 4-layer, 4-head model")
    eff = as_effects(effects, effect_label, cap.n_layer, cap.n_head)
    if direction not in ("attends_to", "attended_by"):
        raise ValueError(f"direction must be 'attends_to' or 'attended_by', got {direction!r}")
    T = cap.n_tokens
    token = T - 1 if token is None else int(token) % T
    if head != "mean" and not 0 <= int(head) < cap.n_head:
        raise IndexError(f"head {head!r} does not exist: use 0..{cap.n_head - 1} or 'mean'")
    if not 0 <= layer < cap.n_layer:
        raise IndexError(f"layer {layer} does not exist: this model has layers 0..{cap.n_layer - 1}")
    lo, hi = token_window(T, token, max_tokens)
    data = {
        "tokens": [str(t) for t in cap.tokens[lo:hi]], "offset": lo, "n_total": T,
        "n_layer": cap.n_layer, "n_head": cap.n_head,
        "weights": pack_weights(cap, lo, hi), "before": pack_before(cap, lo, hi) if lo > 0 else None,
        "lut": cmap_hex(256), "masked": MASKED_FACE, "strip_rgb": list(STRIP_RGB),
        "init": {"layer": int(layer), "head": head if head == "mean" else int(head), "token": token - lo,
                 "direction": direction, "window": int(window)},
        "effects": None if eff is None else [[round(v, 6) for v in row] for row in eff[0].tolist()],
        "effect_label": None if eff is None else eff[1],
    }
    payload = json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    title = title or "Attention explorer"
    shown = f"{T} tokens" if hi - lo == T else (f"tokens {lo}–{hi - 1} of {T} (at most max_tokens={max_tokens} "
                                                  f"are stored, to bound the file's size)")
    subtitle = (f"{shown}, {cap.n_layer} layers × {cap.n_head} heads. Made with minigpt.viz — "
                f"a standalone page: no server, no network.")
    panel = "" if eff is None else (
        '<div id="effect" class="effect-panel"><p class="note"><b>Causal test.</b> <span id="effect-text"></span><br>'
        f'<span class="effect-label">{html.escape(eff[1])}</span>; red = the loss rises without the head; '
        f"click a cell to select its head.</p>{effects_grid_svg(eff[0])}</div>")
    page = PAGE.format(title=html.escape(title), subtitle=html.escape(subtitle), css=PAGE_CSS,
                       legend=strip_legend(), colorbar=colorbar_svg(), effect=panel, data=payload, js=PAGE_JS)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    return page
