"""An interactive attention explorer for the notebook (ipywidgets; needs a live kernel).

Type a text; pick a layer, a head (one, the mean, or all), a token and a direction — what the token
attends to, or what attends to it — and the view updates in place. The view is plain HTML and
SVG made in Python (:mod:`minigpt.viz.render`): no JavaScript from anywhere, so it renders the same
in JupyterLab, VS Code and Colab, and a long text only draws a window of tokens.

With ``effects=`` (e.g. :func:`minigpt.interpret.head_ablation_effects`) the selected head's causal
effect — its number, its rank and a grid of every head's — is drawn beside its pattern.
"""

from __future__ import annotations

import ipywidgets as widgets
import torch

from .capture import AttentionCapture, capture_attention
from .effects import as_effects, effect_panel_html, effect_text
from .headview import DIRECTIONS, token_window
from .render import CSS, colorbar_svg, heatmap_svg, short_label, strip_legend, token_strip


FIT = {"description_width": "initial"}  # the label takes its text's width, not a fixed 80 px


def dropdown_width(description: str, options) -> str:
    """A Dropdown width (em) that shows its longest option in full, next to its label.

    In Chromium at 13 px, "mean of heads" is 96.9 px wide and "48: ␣something_long" (19 characters)
    136.7 px, at most 0.57 em a character; 0.62 em a character leaves room for wider fonts, and 5.2 em
    covers the select's padding (8 px left, 20 px arrow), its border and the label's margin.
    """
    longest = max(len(str(label)) for label, _ in options)
    return f"{0.62 * (len(description) + longest) + 5.2:.1f}em"


class AttentionExplorer(widgets.VBox):
    """``AttentionExplorer(model, tokenizer, "some text")`` — display it as the last line of a cell.

    Drive it from Python too: ``ex.layer.value = 1``, ``ex.head.value = "mean"``,
    ``ex.token.value = 5``, ``ex.direction.value = "attended_by"``, ``ex.text.value = "…"``.
    ``ex.values`` holds the weights the token strip currently shows, ``ex.capture`` the capture.

    ``effects``: optional per-head causal effects, a :class:`minigpt.interpret.HeadEffects` or an
    (n_layer, n_head) tensor with ``effect_label`` naming the metric and the baseline; the panel
    beside the heatmap then shows the selected head's effect (``ex.effect_text`` holds its sentence).
    """

    def __init__(self, model, tokenizer=None, text: str = "", *, layer: int = 0, head: int | str = 0,
                 token: int | None = None, direction: str = "attends_to", window: int = 32, effects=None,
                 effect_label: str | None = None) -> None:
        self.model, self.tokenizer, self.window = model, tokenizer, window
        cfg = model.config
        eff = as_effects(effects, effect_label, cfg.n_layer, cfg.n_head)
        self.effects, self.effect_label = eff if eff is not None else (None, None)
        self.effect_text: str | None = None
        self.text = widgets.Textarea(value=text, description="text", continuous_update=False,
                                     layout=widgets.Layout(width="95%", height="4em"))
        layer_opts = [(str(l), l) for l in range(cfg.n_layer)]
        self.layer = widgets.Dropdown(options=layer_opts, value=layer, description="layer",
                                      style=FIT, layout=widgets.Layout(width=dropdown_width("layer", layer_opts)))
        head_opts = [(str(h), h) for h in range(cfg.n_head)] + [("mean of heads", "mean"), ("all heads", "all")]
        self.head = widgets.Dropdown(options=head_opts, value=head, description="head",
                                     style=FIT, layout=widgets.Layout(width=dropdown_width("head", head_opts)))
        self.token = widgets.Dropdown(options=[("0", 0)], value=0, description="token", style=FIT,
                                      layout=widgets.Layout(width=dropdown_width("token", [("0000: " + "x" * 14, 0)])))
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
            eff = ("" if self.effects is None else
                   [f" · ablation effect {self.effects[layer, h].item():+.3f}" for h in range(cap.n_head)])
            rows = "".join(f'<div><b>head {h}</b>{eff[h] if eff else ""}{token_strip(cap.tokens, self.values[h], t)}</div>'
                           for h in range(cap.n_head))
            maps = "".join(heatmap_svg(cap.head(layer, h), cap.tokens, lo, hi, selected=t, direction=d,
                                       cell=max(4, 160 // (hi - lo)), labels=False, title=f"head {h}")
                           for h in range(cap.n_head))
            body = f'{rows}<div class="views">{maps}{colorbar_svg(120)}{self._effect_panel()}</div>'
        else:
            self.values = self._values(head)
            body = (token_strip(cap.tokens, self.values, t) +
                    f'<div class="views">{heatmap_svg(cap.head(layer, head), cap.tokens, lo, hi, selected=t, direction=d)}'
                    f"{colorbar_svg()}{self._effect_panel()}</div>")
        self.view.value = f'<div class="mgpt"><style>{CSS}</style>{note}{strip_legend()}{body}</div>'

    def _effect_panel(self) -> str:
        if self.effects is None:
            self.effect_text = None
            return ""
        panel = effect_panel_html(self.effects, self.effect_label, self.layer.value, self.head.value)
        self.effect_text = effect_text(self.effects, self.layer.value, self.head.value)
        return panel

    def export_html(self, path=None, **kwargs) -> str:
        """Export the current text as a standalone HTML page (see :func:`minigpt.viz.export_html`)."""
        from .export import export_html

        if self.effects is not None:
            kwargs.setdefault("effects", self.effects)
            kwargs.setdefault("effect_label", self.effect_label)
        return export_html(self.capture, path, layer=self.layer.value,
                           head=self.head.value if self.head.value != "all" else 0,
                           token=self.token.value, direction=self.direction.value, **kwargs)

    def __repr__(self) -> str:  # the text/plain of the widget output (nbval compares this)
        cap = self.capture
        what = f"{cap.n_tokens} tokens" if cap is not None else "no text"
        return (f"AttentionExplorer({what}, layer={self.layer.value}, head={self.head.value!r}, "
                f"token={self.token.value}, direction={self.direction.value!r})")

