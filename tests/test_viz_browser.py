"""A real browser opens the exported HTML: it draws the expected tokens, its controls change what
is drawn, and it loads nothing from the network.

Headless Chromium (Debian's ``chromium`` package, installed by ``.ci/run``) driven by Playwright's
Python package with the *system* browser (``executable_path``; never ``playwright install``).
Skipped on a machine without chromium or playwright — unless ``CI`` (or ``MINIGPT_REQUIRE_BROWSER``,
which ``.ci/run`` sets) is set: there it must run, and a missing browser fails.
Set ``MINIGPT_VIZ_SCREENSHOT=/some/file.png`` to keep a screenshot of the page.
"""

import os
import shutil
from pathlib import Path

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.viz import capture_attention, export_html

def _set(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


IN_CI = _set("CI") or _set("MINIGPT_REQUIRE_BROWSER")  # .ci/run sets the latter
CHROMIUM = os.environ.get("MINIGPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def _unavailable() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    if sync_playwright is None:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    why = _unavailable()
    if why:
        if IN_CI:
            pytest.fail(f"the browser test must run in CI, but {why}")
        pytest.skip(why)
    profile = tmp_path_factory.mktemp("chromium-profile")  # a new, empty user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=FLAGS, viewport={"width": 1200, "height": 1400})
        try:
            yield ctx
        finally:
            ctx.close()


WORDS = ["ROMEO", ":", "\n", "But", " soft", ",", " what", " light", " <b>", " &", "</script>", " breaks", "?"]


class Words:
    def tokens(self, ids):
        return [WORDS[i] for i in ids]


class Numbered:
    def tokens(self, ids):
        return [f" word{i}" for i in ids]


@pytest.fixture(scope="module")
def capture():
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=len(WORDS), block_size=32, n_layer=2, n_head=3, n_embd=24))
    ids = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 3, 4, 5, 6, 12]
    return capture_attention(model, ids, Words())


def _open(ctx, path: Path):
    page = ctx.new_page()
    errors, requests = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(path.as_uri())
    page.wait_for_selector("#heatmap rect[data-i]")
    return page, errors, requests


def _strip_weights(page) -> list[float]:
    return page.eval_on_selector_all("#strip .tok", "els => els.map(e => Number(e.dataset.w))")


def _fills(page) -> list[str]:
    return page.eval_on_selector_all("#heatmap rect[data-i]", "els => els.map(e => e.getAttribute('fill'))")


def test_exported_page_renders_and_controls_change_the_drawing(browser_page, capture, tmp_path):
    path = tmp_path / "attention.html"
    export_html(capture, path, title="Browser test", layer=0, head=0, token=12, window=16)
    page, errors, requests = _open(browser_page, path)

    # the expected tokens, in order, as running text (a newline shows as ↵)
    texts = page.eval_on_selector_all("#strip .tok", "els => els.map(e => e.textContent)")
    assert texts == [t.replace("\n", "↵\n") for t in capture.tokens]
    assert page.locator("#grid canvas").count() == capture.n_layer * (capture.n_head + 1)
    assert page.locator("#heatmap rect[data-i]").count() == 16 * 16  # a window of 16 tokens

    # what is drawn is the capture's weights: row 12 of layer 0, head 0
    w0 = _strip_weights(page)
    torch.testing.assert_close(torch.tensor(w0, dtype=torch.float64), capture.attends_to(0, 0, 12).double(), atol=1e-4, rtol=0)
    fills0 = _fills(page)

    # change the head: the strip and the heatmap change, to head 2's weights
    page.select_option("#head", "2")
    w1 = _strip_weights(page)
    assert w1 != w0 and _fills(page) != fills0
    torch.testing.assert_close(torch.tensor(w1, dtype=torch.float64), capture.attends_to(0, 2, 12).double(), atol=1e-4, rtol=0)
    page.select_option("#layer", "1")
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               capture.attends_to(1, 2, 12).double(), atol=1e-4, rtol=0)

    # select another token by clicking it; then flip the direction: what attends to it
    page.locator("#strip .tok").nth(5).click()
    assert page.get_attribute("body", "data-state").split(",")[:4] == ["1", "2", "5", "attends_to"]
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               capture.attends_to(1, 2, 5).double(), atol=1e-4, rtol=0)
    page.select_option("#direction", "attended_by")
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               capture.attended_by(1, 2, 5).double(), atol=1e-4, rtol=0)

    # the mean over heads, and hovering a heatmap cell reads out its weight
    page.select_option("#head", "mean")
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               capture.attended_by(1, "mean", 5).double(), atol=1e-4, rtol=0)
    page.hover("#heatmap rect[data-i='7'][data-j='5']")
    assert f"{capture.head(1, 'mean')[7, 5].item():.3f}" in page.inner_text("#readout")

    # clicking a thumbnail of the model view selects that layer and head
    page.locator("#grid canvas[data-l='0'][data-h='1']").click()
    assert page.input_value("#layer") == "0" and page.input_value("#head") == "1"
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("body", "data-state").split(",")[2] == "6"

    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MINIGPT_VIZ_SCREENSHOT"):
        shutil.copy(shot, os.environ["MINIGPT_VIZ_SCREENSHOT"])
    assert not errors, f"JavaScript errors: {errors}"
    assert not requests, f"the page tried to load from the network: {requests}"
    page.close()


def test_long_text_draws_only_a_window(browser_page, tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=256, n_layer=2, n_head=2, n_embd=16))
    cap = capture_attention(model, torch.randint(0, 50, (256,)).tolist(), Numbered())
    path = tmp_path / "long.html"
    export_html(cap, path, window=32, token=100)
    page, errors, _ = _open(browser_page, path)
    assert page.locator("#strip .tok").count() == 256
    assert page.locator("#heatmap rect[data-i]").count() == 32 * 32
    assert page.get_attribute("body", "data-state").split(",")[4:] == ["84", "116"]
    page.select_option("#window", "64")
    assert page.locator("#heatmap rect[data-i]").count() == 64 * 64
    box = page.eval_on_selector("#strip", "e => [e.scrollHeight, e.clientHeight]")
    assert box[0] > box[1], "a long text scrolls inside its box instead of growing the page"
    page.fill("#token", "250")  # the range input: select a token far down the text
    page.dispatch_event("#token", "input")
    visible = page.eval_on_selector("#strip", """s => { const t = s.querySelectorAll('.tok')[250];
        return t.offsetTop >= s.scrollTop && t.offsetTop + t.offsetHeight <= s.scrollTop + s.clientHeight; }""")
    assert visible, "the selected token is scrolled into view"
    assert page.get_attribute("body", "data-state").split(",")[4:] == ["192", "256"]  # the 64-token window, at the end
    assert not errors, f"JavaScript errors: {errors}"
    page.close()


def test_exported_effect_panel_follows_the_selected_head(browser_page, capture, tmp_path):
    """The causal panel (issue 20): selecting a head, by the menu or by a cell of the effects grid,
    shows THAT head's number; the mean of heads says n/a; a page without effects has no panel."""
    L, H = capture.n_layer, capture.n_head
    eff = torch.arange(L * H, dtype=torch.float64).reshape(L, H) * 0.125 - 0.3  # distinct per head, both signs
    label = "Δ mean next-token loss (nats), zero ablation, vs unablated 2.345"
    path = tmp_path / "effects.html"
    export_html(capture, path, layer=0, head=0, token=12, effects=eff, effect_label=label)
    page, errors, requests = _open(browser_page, path)
    text = lambda: page.inner_text("#effect-text")  # noqa: E731
    assert text() == f"Layer 0, head 0: ablation effect {eff[0, 0].item():+.3f}, rank {L * H} of {L * H} (largest rise first)."
    assert label in page.inner_text("#effect")
    assert page.is_visible("#effect") and page.is_visible("#heatmap")
    page.select_option("#head", "2")
    assert f"head 2: ablation effect {eff[0, 2].item():+.3f}," in text()
    page.select_option("#layer", "1")
    assert text().startswith(f"Layer 1, head 2: ablation effect {eff[1, 2].item():+.3f}, rank 1 of {L * H}")
    outlined = page.eval_on_selector_all("#effect rect.sel", "els => els.map(e => [e.dataset.l, e.dataset.h])")
    assert outlined == [["1", "2"]]
    page.locator("#effect rect[data-l='1'][data-h='0']").click()  # a cell of the grid selects its head
    assert page.input_value("#layer") == "1" and page.input_value("#head") == "0"
    assert f"head 0: ablation effect {eff[1, 0].item():+.3f}," in text()
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               capture.attends_to(1, 0, 12).double(), atol=1e-4, rtol=0)  # the pattern followed
    page.select_option("#head", "mean")
    assert text().startswith("Layer 1, mean of heads: n/a")
    assert len(page.eval_on_selector_all("#effect rect.sel", "els => els")) == H
    assert not errors, f"JavaScript errors: {errors}"
    assert not requests, f"the page tried to load from the network: {requests}"
    page.close()

    plain = tmp_path / "plain.html"
    export_html(capture, plain, layer=0, head=1, token=12)  # the old call: no effects, no panel, no error
    page, errors, _ = _open(browser_page, plain)
    assert page.locator("#effect").count() == 0
    page.select_option("#head", "2")
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               capture.attends_to(0, 2, 12).double(), atol=1e-4, rtol=0)
    assert not errors, f"JavaScript errors: {errors}"
    page.close()


def test_long_text_beyond_max_tokens_is_windowed_with_true_indices(browser_page, tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=400, n_layer=2, n_head=2, n_embd=16))
    cap = capture_attention(model, torch.randint(0, 50, (400,)).tolist(), Numbered())
    path = tmp_path / "long.html"
    export_html(cap, path, window=32, token=300, max_tokens=128)  # tokens 236..363 stored
    page, errors, _ = _open(browser_page, path)
    assert page.locator("#strip .tok").count() == 128
    assert page.get_attribute("body", "data-state").split(",")[2:] == ["300", "attends_to", "284", "316"]
    torch.testing.assert_close(torch.tensor(_strip_weights(page), dtype=torch.float64),
                               cap.attends_to(0, 0, 300)[236:364].double(), atol=1e-4, rtol=0)
    left_out = cap.attends_to(0, 0, 300)[:236].sum().item()
    assert f"gives {left_out:.3f} of its attention to the 236 earlier tokens" in page.inner_text("#caption")
    assert "tokens 236–363 of 400" in page.inner_text("body")
    page.hover("#heatmap rect[data-i='64'][data-j='54']")  # data-i/j count inside the window: 300 - 236
    assert page.inner_text("#readout").startswith("300 ")
    assert not errors, f"JavaScript errors: {errors}"
    page.close()
