"""Per-head causal effects beside the pattern (issue 20): the explorer's panel (driven from Python),
the export's precomputed data, the long-text size bound, and one-line errors for bad input.
The browser half (the export's panel in Chromium) is in test_viz_browser.py."""

import base64
import json
import re

import numpy as np
import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.interpret import HeadEffects
from minigpt.viz import AttentionExplorer, capture_attention, export_html
from minigpt.viz.explorer import dropdown_width

from test_viz_views import ALPHABET, Chars  # the same character tokenizer as the view tests


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(ALPHABET), block_size=64, n_layer=2, n_head=3, n_embd=24)).eval()


# hand-made effects: distinct numbers, so a wrong (layer, head) lookup or a transposed grid shows
EFF = torch.tensor([[0.25, -0.0625, 0.5], [0.125, 1.5, -0.75]], dtype=torch.float64)
LABEL = "Δ mean next-token loss (nats), zero ablation, vs unablated 2.500"


def _data(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="mgpt-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))


def test_explorer_shows_the_selected_heads_effect(model):
    ex = AttentionExplorer(model, Chars(), "abc abc", layer=1, head=1, effects=EFF, effect_label=LABEL)
    assert ex.effect_text == "Layer 1, head 1: ablation effect +1.500, rank 1 of 6 (largest rise first)."
    assert "Causal test." in ex.view.value and LABEL in ex.view.value
    assert ex.view.value.count('class="effsel"') == 1
    ex.layer.value = 0
    ex.head.value = 1
    assert ex.effect_text == "Layer 0, head 1: ablation effect -0.062, rank 5 of 6 (largest rise first)."
    ex.head.value = "mean"
    assert ex.effect_text == ("Layer 0, mean of heads: n/a, an ablation effect belongs to one head; "
                              "layer 0's heads range from -0.062 to +0.500.")
    ex.head.value = "all"
    assert "<b>head 2</b> · ablation effect +0.500" in ex.view.value
    # the old call, without effects, is unchanged: no panel
    plain = AttentionExplorer(model, Chars(), "abc abc", layer=1, head=1)
    assert plain.effect_text is None and "Causal test" not in plain.view.value


def test_explorer_takes_head_effects_with_their_label_and_passes_them_to_the_export(model, tmp_path):
    he = HeadEffects(EFF, 2.5, LABEL)
    ex = AttentionExplorer(model, Chars(), "abc abc", effects=he)
    assert ex.effect_label == LABEL
    data = _data(ex.export_html(tmp_path / "e.html"))
    assert data["effects"] == EFF.tolist() and data["effect_label"] == LABEL
    assert "override" in AttentionExplorer(model, Chars(), "ab", effects=he, effect_label="override").effect_label


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(3, 2), r"effects must have shape \(n_layer, n_head\) = \(2, 3\), got \(3, 2\): pass one number per head"),
    (torch.zeros(6), r"got \(6,\)"),
    (torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]), r"finite numbers, got nan at layer 0, head 1"),
])
def test_bad_effects_give_a_one_line_error(model, bad, match, tmp_path):
    cap = capture_attention(model, "abc", Chars())
    for make in (lambda: AttentionExplorer(model, Chars(), "abc", effects=bad),
                 lambda: export_html(cap, effects=bad)):
        with pytest.raises(ValueError, match=match) as e:
            make()
        assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match="effects must be numbers"):
        export_html(cap, effects="big")
    with pytest.raises(ValueError, match="effect_label was given without effects="):
        export_html(cap, effect_label=LABEL)


def test_export_precomputes_effects_and_draws_their_grid(model):
    cap = capture_attention(model, "abc abc", Chars())
    page = export_html(cap, effects=EFF, effect_label=LABEL, head=2)
    data = _data(page)
    assert data["effects"] == EFF.tolist() and data["effect_label"] == LABEL
    assert 'id="effect"' in page and page.count('data-effect="') == 6
    assert 'data-l="1" data-h="1" data-effect="1.500000"' in page  # the cell of head (1, 1) holds its number
    plain = export_html(cap)
    assert _data(plain)["effects"] is None and 'id="effect"' not in plain


def test_export_of_a_long_text_keeps_a_window_and_the_weight_left_out(model):
    torch.manual_seed(1)
    ids = torch.randint(0, len(ALPHABET), (60,)).tolist()
    cap = capture_attention(model, ids, Chars())
    full, cut = export_html(cap, token=40), export_html(cap, token=40, max_tokens=16)
    data = _data(cut)
    assert len(data["weights"]) * 13 < len(_data(full)["weights"])  # 16·17/2 = 136 of 60·61/2 = 1830 pairs
    lo = data["offset"]
    assert (lo, data["n_total"], len(data["tokens"])) == (32, 60, 16) and data["tokens"] == cap.tokens[32:48]
    assert data["init"]["token"] == 40 - lo and "tokens 32–47 of 60" in cut
    T, L, H = 16, 2, 3
    w = np.frombuffer(base64.b64decode(data["weights"]), dtype="<u2").reshape(L, H + 1, -1) / 65535
    r, c = np.tril_indices(T)
    ref = cap.weights.double()[:, :, 32:48, 32:48]
    np.testing.assert_allclose(w[:, :H], ref.numpy()[..., r, c], atol=1 / 65535)
    before = np.frombuffer(base64.b64decode(data["before"]), dtype="<u2").reshape(L, H + 1, T) / 65535
    # independent of the packing: a row sums to 1, so what lies before the window is 1 - the window's part
    np.testing.assert_allclose(before[:, :H], 1 - ref.sum(-1).numpy(), atol=2e-5)
    assert before[:, :H].min() > 0.05
    with pytest.raises(ValueError, match="max_tokens must be an int >= 2"):
        export_html(cap, max_tokens=1)


def test_dropdowns_are_wide_enough_for_their_labels(model):
    ex = AttentionExplorer(model, Chars(), "abc")
    # Chromium, 13 px system font (measured): "mean of heads" 96.9 px, "48: ␣something_long" 136.7 px;
    # the select needs 8 px left padding + 20 px arrow + 2 px border, the label its text + 8 px margin.
    px = lambda w: float(w.removesuffix("em")) * 13  # noqa: E731
    assert ex.head.style.description_width == "initial"
    assert px(ex.head.layout.width) >= 32.5 + 8 + 96.9 + 30
    assert px(ex.token.layout.width) >= 36.4 + 8 + 136.7 + 30
    assert float(dropdown_width("head", [("x" * 40, 0)]).removesuffix("em")) > px(ex.head.layout.width) / 13
