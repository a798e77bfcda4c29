"""An interactive attention explorer for the notebook (ipywidgets; needs a live kernel).

Type a text; pick a layer, a head (one, the mean, or all), a token and a direction — what the token
attends to, or what attends to it — and the view updates in place. The view is plain HTML and
SVG made in Python (:mod:`minigpt.viz.render`): no JavaScript from anywhere, so it renders the same
in JupyterLab, VS Code and Colab, and a long text only draws a window of tokens.
"""

from __future__ import annotations

import ipywidgets as widgets
import torch

from .capture import AttentionCapture, capture_attention
from .headview import DIRECTIONS, token_window
from .render import CSS, colorbar_svg, heatmap_svg, short_label, strip_legend, token_strip


class AttentionExplorer(widgets.VBox):
    """``AttentionExplorer(model, tokenizer, "some text")`` — display it as the last line of a cell.

    Drive it from Python too: ``ex.layer.value = 1``, ``ex.head.value = "mean"``,
    ``ex.token.value = 5``, ``ex.direction.value = "attended_by"``, ``ex.text.value = "…"``.
    ``ex.values`` holds the weights the token strip currently shows, ``ex.capture`` the capture.
    """

    def __init__(self, model, tokenizer=None, text: str = "", *, layer: int = 0, head: int | str = 0,
                 token: int | None = None, direction: str = "attends_to", window: int = 32) -> None:
        self.model, self.tokenizer, self.window = model, tokenizer, window
        cfg = model.config
        self.text = widgets.Textarea(value=text, description="text", continuous_update=False,
                                     layout=widgets.Layout(width="95%", height="4em"))
        self.layer = widgets.Dropdown(options=[(str(l), l) for l in range(cfg.n_layer)], value=layer,
                                      description="layer", layout=widgets.Layout(width="11em"))
        head_opts = [(str(h), h) for h in range(cfg.n_head)] + [("mean of heads", "mean"), ("all heads", "all")]
        self.head = widgets.Dropdown(options=head_opts, value=head, description="head",
                                     layout=widgets.Layout(width="15em"))
        self.token = widgets.Dropdown(options=[("0", 0)], value=0, description="token",
                                      layout=widgets.Layout(width="18em"))
        self.direction = widgets.ToggleButtons(options=[("attends to →", "attends_to"), ("← attended by", "attended_by")],
                                               value=direction, description="show")
        self.direction.style.button_width = "9em"
        self.view = widgets.HTML()
        self.capture: AttentionCapture | None = None
        self._busy = False
        self.values: torch.Tensor | None = None
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self._recapture(token)
        self.text.observe(lambda change: self._recapture(self.token.value), names="value")  # keep the token
        for w in (self.layer, self.head, self.token, self.direction):
            w.observe(lambda change: None if self._busy else self.redraw(), names="value")
        controls = widgets.HBox([self.layer, self.head, self.token])
        super().__init__([self.text, controls, self.direction, self.view])

    def _recapture(self, token: int | None) -> None:
        text = self.text.value
        if self.tokenizer is None:  # no tokenizer: the text is a list of token ids
            text = [int(t) for t in text.replace(",", " ").split()]
        if not text:
            self.capture, self.values = None, None
            self.view.value = '<div class="mgpt"><p class="note">Type a text to see its attention.</p></div>'
            return
        self.capture = capture_attention(self.model, text, self.tokenizer)
        T = self.capture.n_tokens
        token = T - 1 if token is None else max(0, min(token, T - 1))
        self._busy = True  # new options fire change events: draw once, at the end
        try:
            self.token.options = [(f"{i}: {short_label(t, 14)}", i) for i, t in enumerate(self.capture.tokens)]
            self.token.value = token
        finally:
            self._busy = False
        self.redraw()

    def _values(self, head) -> torch.Tensor:
        cap, t = self.capture, self.token.value
        if self.direction.value == "attends_to":
            return cap.attends_to(self.layer.value, head, t)
        return cap.attended_by(self.layer.value, head, t)

    def redraw(self) -> None:
        """Render the current selection into ``self.view`` (called whenever a control changes)."""
        cap = self.capture
        if cap is None:
            return
        layer, head, t, d = self.layer.value, self.head.value, self.token.value, self.direction.value
        lo, hi = token_window(cap.n_tokens, t, self.window)
        verb = "attends to" if d == "attends_to" else "is attended by"
        note = (f'<p class="note">Layer {layer}: token {t} <b>{short_label(cap.tokens[t], 20)}</b> {verb} the '
                f"shaded tokens. Heatmap rows = queries, columns = keys; grey hatched = masked future; "
                f"{'showing tokens ' + str(lo) + '–' + str(hi - 1) + ' of ' + str(cap.n_tokens) if hi - lo < cap.n_tokens else str(cap.n_tokens) + ' tokens'}"
                + (f"; {cap.truncated} tokens beyond the context were dropped" if cap.truncated else "") + ".</p>")
        if head == "all":
            self.values = torch.stack([self._values(h) for h in range(cap.n_head)])
            rows = "".join(f'<div><b>head {h}</b>{token_strip(cap.tokens, self.values[h], t)}</div>'
                           for h in range(cap.n_head))
            maps = "".join(heatmap_svg(cap.head(layer, h), cap.tokens, lo, hi, selected=t, direction=d,
                                       cell=max(4, 160 // (hi - lo)), labels=False, title=f"head {h}")
                           for h in range(cap.n_head))
            body = f'{rows}<div class="views">{maps}{colorbar_svg(120)}</div>'
        else:
            self.values = self._values(head)
            body = (token_strip(cap.tokens, self.values, t) +
                    f'<div class="views">{heatmap_svg(cap.head(layer, head), cap.tokens, lo, hi, selected=t, direction=d)}'
                    f"{colorbar_svg()}</div>")
        self.view.value = f'<div class="mgpt"><style>{CSS}</style>{note}{strip_legend()}{body}</div>'

    def export_html(self, path=None, **kwargs) -> str:
        """Export the current text as a standalone HTML page (see :func:`minigpt.viz.export_html`)."""
        from .export import export_html

        return export_html(self.capture, path, layer=self.layer.value,
                           head=self.head.value if self.head.value != "all" else 0,
                           token=self.token.value, direction=self.direction.value, **kwargs)

    def __repr__(self) -> str:  # the text/plain of the widget output (nbval compares this)
        cap = self.capture
        what = f"{cap.n_tokens} tokens" if cap is not None else "no text"
        return (f"AttentionExplorer({what}, layer={self.layer.value}, head={self.head.value!r}, "
                f"token={self.token.value}, direction={self.direction.value!r})")

