"""The static figures, the ipywidgets explorer (driven from Python) and the HTML export (without
a browser: the data it embeds decodes to the captured weights, and it references nothing outside)."""

import base64
import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minigpt import GPT, GPTConfig  # noqa: E402
from minigpt.viz import (AttentionExplorer, attention_heatmap, attention_rollout, attention_stages,  # noqa: E402
                         capture_attention, export_html, head_entropy, induction_scores, plot_attention_lines,
                         plot_attention_stages, plot_entropy, plot_head, plot_head_average, plot_head_scores,
                         plot_induction, plot_model_view, plot_query_bars, plot_rollout, previous_token_score,
                         save_figure, slide_style, token_label)

ALPHABET = "abcdefghij \n.,<>&"


class Chars:
    def encode(self, text):
        return [ALPHABET.index(c) for c in text]

    def tokens(self, ids):
        return [ALPHABET[i] for i in ids]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(ALPHABET), block_size=24, n_layer=2, n_head=3, n_embd=24)).eval()


@pytest.fixture(scope="module")
def cap(model):
    return capture_attention(model, "abc def.\nabc def", Chars())


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_attention_heatmap_keeps_chapter_02_signature(cap):
    fig, ax = plt.subplots()
    out = attention_heatmap(cap.head(0, 0), cap.tokens, ax=ax, title="t", masked_upper=True)
    assert out is ax and ax.get_title() == "t"
    img = ax.images[0].get_array()
    assert np.ma.getmaskarray(img)[0, 1] or np.isnan(img[0, 1]), "masked cells are not drawn as a value"
    assert img[1, 0] == pytest.approx(float(cap.head(0, 0)[1, 0]))
    assert (ax.images[0].get_clim()) == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()][:4] == ["a", "b", "c", "␣"]
    assert ax.figure.axes[-1].get_ylabel() == "attention weight (0–1)"
    with pytest.raises(ValueError, match="one head"):
        attention_heatmap(cap.weights[0], cap.tokens)


def test_token_labels_make_invisible_tokens_visible():
    assert token_label("\n") == "\\n" and token_label(" ") == "␣" and token_label(" the") == " the"
    assert token_label("") == "∅"


def test_every_static_view_draws(model, cap, tmp_path):
    plot_head(cap, 1, "mean")
    fig = plot_model_view(cap)
    assert len([a for a in fig.axes if a.images]) == cap.n_layer * cap.n_head
    plot_head_average(cap)
    ax = plot_query_bars(cap, 1, 2, 5)
    assert [p.get_height() for p in ax.patches] == pytest.approx(cap.attends_to(1, 2, 5)[:6].tolist())
    ax = plot_query_bars(cap, 1, 2, 5, direction="attended_by")
    assert [p.get_height() for p in ax.patches] == pytest.approx(cap.attended_by(1, 2, 5)[5:].tolist())
    ax = plot_attention_lines(cap, 0, 1, token=7)
    assert 0 < len(ax.lines) <= 8  # only the selected token's lines
    plot_attention_lines(cap, 0, "all")
    with pytest.raises(ValueError, match="direction"):
        plot_query_bars(cap, 0, 0, 1, direction="sideways")
    st = attention_stages(model, "abc de", Chars(), layer=1, head=0)
    fig = plot_attention_stages(st)
    assert [a.get_title()[:2] for a in fig.axes if a.get_title()] == ["1.", "2.", "3.", "4."]
    plot_head_scores(previous_token_score(cap.weights), "previous-token score")
    plot_entropy(head_entropy(cap.weights), bound=1.0)
    plot_rollout(attention_rollout(cap.weights), cap.tokens)
    plot_induction(induction_scores(model, length=8, n=2))
    with slide_style():
        ax = plot_head(cap, 0, 0)
        assert plt.rcParams["font.size"] > 10
    png, svg = save_figure(ax, tmp_path / "h.png"), save_figure(ax.figure, tmp_path / "h.svg")
    assert png.read_bytes()[:4] == b"\x89PNG" and b"<svg" in svg.read_bytes()[:500]
    with pytest.raises(ValueError, match="png"):
        save_figure(ax, tmp_path / "h.gif")


def test_explorer_updates_when_driven_from_python(model):
    ex = AttentionExplorer(model, Chars(), "abc abc", layer=0, head=0)
    assert ex.token.value == 6  # the last token by default
    torch.testing.assert_close(ex.values, ex.capture.attends_to(0, 0, 6))
    html0 = ex.view.value
    assert 'data-i="6"' in html0 and "tok sel" in html0
    ex.head.value = 2
    torch.testing.assert_close(ex.values, ex.capture.attends_to(0, 2, 6))
    assert ex.view.value != html0
    ex.layer.value = 1
    ex.token.value = 3
    torch.testing.assert_close(ex.values, ex.capture.attends_to(1, 2, 3))
    ex.direction.value = "attended_by"
    torch.testing.assert_close(ex.values, ex.capture.attended_by(1, 2, 3))
    ex.head.value = "mean"
    torch.testing.assert_close(ex.values, ex.capture.attended_by(1, "mean", 3))
    ex.head.value = "all"
    assert ex.values.shape == (3, 7) and ex.view.value.count("<svg") >= 3
    ex.text.value = "ab.\ncd,e"
    assert ex.capture.tokens == list("ab.\ncd,e") and ex.token.value == 3  # kept where it still exists
    assert len(ex.token.options) == 8 and "↵" in ex.view.value
    assert repr(ex) == "AttentionExplorer(8 tokens, layer=1, head='all', token=3, direction='attended_by')"
    assert ex._repr_mimebundle_()["text/plain"] == repr(ex)
    ex.text.value = ""
    assert ex.capture is None and "Type a text" in ex.view.value


def test_explorer_long_text_draws_a_window(model):
    ex = AttentionExplorer(model, Chars(), "abcdefghij" * 3, window=8)  # 30 chars, cut to 24
    assert ex.capture.n_tokens == 24 and ex.capture.truncated == 6
    assert ex.view.value.count('<rect x=') >= 64 and ex.view.value.count("data-j=") == 8 * 9 // 2
    assert "showing tokens 16–23 of 24" in ex.view.value


def _decode(page: str):
    data = json.loads(re.search(r'<script type="application/json" id="mgpt-data">(.*?)</script>', page, re.S)
                      .group(1).replace("<\\/", "</"))
    T, L, H = len(data["tokens"]), data["n_layer"], data["n_head"]
    packed = np.frombuffer(base64.b64decode(data["weights"]), dtype="<u2").reshape(L, H + 1, -1) / 65535
    full = np.zeros((L, H + 1, T, T))
    r, c = np.tril_indices(T)
    full[..., r, c] = packed
    return data, torch.from_numpy(full)


def test_export_is_self_contained_and_holds_the_weights(cap, tmp_path):
    page = export_html(cap, tmp_path / "a.html", title="<T> & test", head="mean", token=4)
    assert (tmp_path / "a.html").read_text(encoding="utf-8") == page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "nothing may load from elsewhere"
    assert "http://" not in page and "https://" not in page
    assert "&lt;T&gt; &amp; test" in page and "Content-Security-Policy" in page
    data, w = _decode(page)
    assert data["tokens"] == cap.tokens and data["init"]["head"] == "mean" and data["init"]["token"] == 4
    torch.testing.assert_close(w[:, :3], cap.weights.double(), atol=1 / 65535, rtol=0)
    torch.testing.assert_close(w[:, 3], cap.weights.double().mean(1), atol=1 / 65535, rtol=0)


def test_export_escapes_a_closing_script_tag(model):
    class Evil:
        def tokens(self, ids):
            return ["</script><script>alert(1)</script>"] * len(ids)

    page = export_html(capture_attention(model, [1, 2, 3], Evil()))
    assert page.count("</script>") == 2  # the data block's and the code block's own
    assert _decode(page)[0]["tokens"][0] == "</script><script>alert(1)</script>"
    with pytest.raises(IndexError, match="head"):
        export_html(capture_attention(model, [1, 2, 3], Evil()), head=5)
