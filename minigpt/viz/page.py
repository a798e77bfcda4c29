"""The standalone page's template: inline CSS and JavaScript, no external file, no network.

The data sits in a ``<script type="application/json">`` block: tokens, and each layer's heads
(plus their mean, as head index ``n_head``) as packed lower triangles of uint16 (weight·65535),
base64-encoded; for a long text, only a window of tokens (``offset`` = its first token's index in
the text) and each windowed query's weight on the earlier tokens left out (``before``). The script
draws the same views as :mod:`minigpt.viz.render`: a token strip shaded by one token's attention, a
heatmap of a window of tokens, a grid of every head and, when ``effects`` is given, the selected
head's causal effect beside its pattern (the grid of effects is drawn in Python; the script
outlines the selected head and writes the sentence of :func:`minigpt.viz.effects.effect_text`).
"""

from __future__ import annotations

from .render import CSS

PAGE_CSS = CSS + """
body { margin: 16px; }
.mgpt h1 { font-size: 18px; margin: 0 0 4px 0; }
.mgpt .controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin: 8px 0; }
.mgpt .controls label { display: inline-flex; gap: 4px; align-items: center; }
.mgpt #readout { min-height: 1.4em; font-family: ui-monospace, Menlo, Consolas, monospace; }
.mgpt .grid { display: inline-grid; gap: 4px; align-items: center; justify-items: center; margin-top: 6px; }
.mgpt .grid canvas { width: 64px; height: 64px; image-rendering: pixelated; border: 2px solid transparent;
  cursor: pointer; background: #ddd; }
.mgpt .grid canvas.sel { border-color: #d62728; }
.mgpt .grid .hdr { font-size: 11px; color: #555; }
.mgpt .tok.hov { outline: 2px dashed #ff7f0e; }
.mgpt #strip { position: relative; }
.mgpt .effect-panel { max-width: 270px; }
.mgpt .effects rect[data-l] { cursor: pointer; }
"""

PAGE_JS = r"""
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("mgpt-data").textContent);
  const T = D.tokens.length, L = D.n_layer, H = D.n_head, P = T * (T + 1) / 2;
  const bin = atob(D.weights), bytes = new Uint8Array(bin.length);
  for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
  const W = new Uint16Array(bytes.buffer);
  const O = D.offset || 0, NT = D.n_total || T;  // a long text: tokens O .. O+T-1 of NT are stored
  let BEFORE = null;  // each stored query's weight on the O tokens before the window
  if (D.before) { const b2 = atob(D.before), by = new Uint8Array(b2.length); for (let k = 0; k < b2.length; k++) by[k] = b2.charCodeAt(k); BEFORE = new Uint16Array(by.buffer); }
  function before(l, h, i) { return BEFORE ? BEFORE[(l * (H + 1) + hidx(h)) * T + i] / 65535 : 0; }
  const fmt = (v) => (v >= 0 ? "+" : "") + v.toFixed(3);
  const S = { layer: D.init.layer, head: D.init.head, token: D.init.token, dir: D.init.direction, win: D.init.window };
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const hidx = (h) => (h === "mean" ? H : Number(h));
  function w(l, h, i, j) { return j > i ? 0 : W[(l * (H + 1) + hidx(h)) * P + i * (i + 1) / 2 + j] / 65535; }
  function color(v) { return D.lut[Math.round(Math.min(1, Math.max(0, v)) * 255)]; }
  function label(t, n) { t = String(t); let s = /^ +$/.test(t) ? "\u2423".repeat(t.length) : (JSON.stringify(t).slice(1, -1) || "\u2205"); return s.length <= n ? s : s.slice(0, n - 1) + "\u2026"; }
  const [R, G, B] = D.strip_rgb;

  // controls
  const layerSel = $("layer"), headSel = $("head"), dirSel = $("direction"), tokIn = $("token"), winSel = $("window");
  for (let l = 0; l < L; l++) layerSel.add(new Option("layer " + l, String(l)));
  for (let h = 0; h < H; h++) headSel.add(new Option("head " + h, String(h)));
  headSel.add(new Option("mean of heads", "mean"));
  tokIn.max = String(T - 1);  // positions inside the stored window; labels show the index in the text
  for (const n of [16, 32, 64, 128]) if (n < T) winSel.add(new Option(n + " tokens", String(n)));
  winSel.add(new Option("all " + T, String(T)));
  if (![...winSel.options].some((o) => o.value === String(S.win))) S.win = T;

  // token strip: built once, re-shaded on every change (cheap for long texts)
  const strip = $("strip");
  strip.innerHTML = D.tokens.map((t, i) => '<span class="tok" data-i="' + i + '">' +
    esc(String(t).replace(/\n/g, "\u21b5\n").replace(/\t/g, "\u21e5")) + "</span>").join("");
  const spans = [...strip.querySelectorAll(".tok")];

  function values() {
    const v = new Float64Array(T), l = S.layer, h = S.head, t = S.token;
    for (let k = 0; k < T; k++) v[k] = S.dir === "attends_to" ? w(l, h, t, k) : w(l, h, k, t);
    return v;
  }
  function windowRange() {
    const n = Math.min(S.win, T); let lo = Math.max(0, S.token - Math.floor(n / 2));
    lo = Math.min(lo, T - n); return [lo, lo + n];
  }
  function heatmap(lo, hi) {
    const n = hi - lo, cell = Math.max(6, Math.min(16, Math.floor(448 / n))), pad = n <= 64 ? 78 : 4, size = pad + n * cell + 2;
    const out = ['<svg width="' + size + '" height="' + size + '" class="heatmap"><defs><pattern id="mgpt-hatch" width="6" height="6" ' +
      'patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="' + D.masked + '"/>' +
      '<line x1="0" y1="0" x2="0" y2="6" stroke="#aaa" stroke-width="2"/></pattern></defs><g transform="translate(' + pad + ',' + pad + ')">'];
    for (let i = lo; i < hi; i++) for (let j = lo; j < hi; j++) {
      const x = (j - lo) * cell, y = (i - lo) * cell;
      if (j > i) out.push('<rect x="' + x + '" y="' + y + '" width="' + cell + '" height="' + cell + '" fill="url(#mgpt-hatch)" data-i="' + i + '" data-j="' + j + '" data-masked="1"/>');
      else out.push('<rect x="' + x + '" y="' + y + '" width="' + cell + '" height="' + cell + '" fill="' + color(w(S.layer, S.head, i, j)) + '" data-i="' + i + '" data-j="' + j + '"/>');
    }
    const s = (S.token - lo) * cell;
    if (S.dir === "attends_to") out.push('<rect class="selbox" x="0" y="' + s + '" width="' + n * cell + '" height="' + cell + '" fill="none" stroke="#d62728" stroke-width="2"/>');
    else out.push('<rect class="selbox" x="' + s + '" y="0" width="' + cell + '" height="' + n * cell + '" fill="none" stroke="#d62728" stroke-width="2"/>');
    out.push("</g>");
    if (pad > 4) for (let k = 0; k < n; k++) {
      const lab = esc(label(D.tokens[lo + k], 10)), c = pad + k * cell + cell / 2;
      out.push('<text x="' + (pad - 4) + '" y="' + (c + 4) + '" font-size="10" text-anchor="end">' + lab + "</text>");
      out.push('<text x="' + (c + 3) + '" y="' + (pad - 4) + '" font-size="10" transform="rotate(-90 ' + (c + 3) + " " + (pad - 4) + ')">' + lab + "</text>");
    }
    out.push('<text x="2" y="10" font-size="10" fill="#555">rows: query</text><text x="2" y="22" font-size="10" fill="#555">cols: key</text></svg>');
    return out.join("");
  }
  function drawGrid() {  // every head, drawn once; click to select
    const grid = $("grid"); grid.style.gridTemplateColumns = "auto repeat(" + (H + 1) + ", auto)";
    const parts = ['<span class="hdr"></span>'];
    for (let h = 0; h <= H; h++) parts.push('<span class="hdr">' + (h === H ? "mean" : "head " + h) + "</span>");
    for (let l = 0; l < L; l++) {
      parts.push('<span class="hdr">layer ' + l + "</span>");
      for (let h = 0; h <= H; h++) parts.push('<canvas width="' + T + '" height="' + T + '" data-l="' + l + '" data-h="' + (h === H ? "mean" : h) + '"></canvas>');
    }
    grid.innerHTML = parts.join("");
    for (const cv of grid.querySelectorAll("canvas")) {
      const ctx = cv.getContext("2d"), img = ctx.createImageData(T, T), l = Number(cv.dataset.l), h = cv.dataset.h;
      for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
        const c = j > i ? D.masked : color(w(l, h, i, j)), o = 4 * (i * T + j);
        img.data[o] = parseInt(c.slice(1, 3), 16); img.data[o + 1] = parseInt(c.slice(3, 5), 16); img.data[o + 2] = parseInt(c.slice(5, 7), 16); img.data[o + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
      cv.title = "layer " + l + ", " + (h === "mean" ? "mean of heads" : "head " + h);
      cv.addEventListener("click", () => { S.layer = l; S.head = h === "mean" ? "mean" : Number(h); render(); });
    }
  }
  function render() {
    layerSel.value = String(S.layer); headSel.value = String(S.head); dirSel.value = S.dir; tokIn.value = String(S.token); winSel.value = String(S.win);
    const v = values();
    spans.forEach((sp, k) => {
      sp.style.background = "rgba(" + R + "," + G + "," + B + "," + v[k].toFixed(3) + ")";
      sp.style.color = v[k] > 0.55 ? "#fff" : "#222";
      sp.dataset.w = v[k].toFixed(4);
      sp.title = (O + k) + ": " + label(D.tokens[k], 30) + " \u2014 " + v[k].toFixed(3);
      sp.classList.toggle("sel", k === S.token);
    });
    const sel = spans[S.token];  // keep the selected token visible inside the scrolling strip
    if (sel.offsetTop < strip.scrollTop || sel.offsetTop + sel.offsetHeight > strip.scrollTop + strip.clientHeight)
      strip.scrollTop = Math.max(0, sel.offsetTop - strip.clientHeight / 2);
    const [lo, hi] = windowRange();
    $("heatmap").innerHTML = heatmap(lo, hi);
    const verb = S.dir === "attends_to" ? "attends to" : "is attended by";
    let cut = "";
    if (O > 0 && S.dir === "attends_to") cut = " It gives " + before(S.layer, S.head, S.token).toFixed(3) + " of its attention to the " + O + " earlier tokens not stored in this page.";
    if (O + T < NT && S.dir === "attended_by") cut = " The " + (NT - O - T) + " later tokens are not stored in this page.";
    $("caption").textContent = "Layer " + S.layer + ", " + (S.head === "mean" ? "mean of heads" : "head " + S.head) + ": token " + (O + S.token) +
      " \u201c" + label(D.tokens[S.token], 20) + "\u201d " + verb + " the shaded tokens" + (hi - lo < NT ? " (heatmap: tokens " + (O + lo) + "\u2013" + (O + hi - 1) + " of " + NT + ")" : "") + "." + cut;
    $("toklabel").textContent = (O + S.token) + ": " + label(D.tokens[S.token], 14);
    for (const cv of document.querySelectorAll("#grid canvas")) cv.classList.toggle("sel", Number(cv.dataset.l) === S.layer && String(cv.dataset.h) === String(S.head));
    if (D.effects) drawEffect();
    document.body.dataset.state = [S.layer, S.head, O + S.token, S.dir, O + lo, O + hi].join(",");
  }
  function drawEffect() {  // the same sentence as minigpt.viz.effects.effect_text, and the outline
    const E = D.effects, l = S.layer, row = E[l];
    if (S.head === "mean") {
      $("effect-text").textContent = "Layer " + l + ", mean of heads: n/a, an ablation effect belongs to one head; layer " + l +
        "'s heads range from " + fmt(Math.min(...row)) + " to " + fmt(Math.max(...row)) + ".";
    } else {
      const v = row[S.head], n = L * H, rank = 1 + E.flat().filter((x) => x > v).length;
      $("effect-text").textContent = "Layer " + l + ", head " + S.head + ": ablation effect " + fmt(v) + ", rank " + rank + " of " + n + " (largest rise first).";
    }
    for (const r of document.querySelectorAll("#effect rect[data-l]")) {
      const on = Number(r.dataset.l) === l && (S.head === "mean" || Number(r.dataset.h) === S.head);
      r.setAttribute("stroke", on ? "#d62728" : "#ddd"); r.setAttribute("stroke-width", on ? "2" : "1");
      r.classList.toggle("sel", on);
    }
  }
  function readout(i, j) {
    spans.forEach((sp, k) => sp.classList.toggle("hov", k === i || k === j));
    if (i === null) { $("readout").textContent = "\u00a0"; return; }
    $("readout").textContent = j > i ? "masked: token " + (O + i) + " cannot see the future token " + (O + j)
      : (O + i) + " \u201c" + label(D.tokens[i], 14) + "\u201d \u2192 " + (O + j) + " \u201c" + label(D.tokens[j], 14) + "\u201d: " + w(S.layer, S.head, i, j).toFixed(3);
  }
  layerSel.addEventListener("change", () => { S.layer = Number(layerSel.value); render(); });
  headSel.addEventListener("change", () => { S.head = headSel.value === "mean" ? "mean" : Number(headSel.value); render(); });
  dirSel.addEventListener("change", () => { S.dir = dirSel.value; render(); });
  winSel.addEventListener("change", () => { S.win = Number(winSel.value); render(); });
  tokIn.addEventListener("input", () => { S.token = Number(tokIn.value); render(); });
  strip.addEventListener("click", (e) => { const sp = e.target.closest(".tok"); if (sp) { S.token = Number(sp.dataset.i); render(); } });
  strip.addEventListener("mouseover", (e) => { const sp = e.target.closest(".tok"); if (sp) { const k = Number(sp.dataset.i);
    if (S.dir === "attends_to") readout(S.token, k); else readout(k, S.token); } });
  $("heatmap").addEventListener("mouseover", (e) => { const r = e.target; if (r.dataset && r.dataset.i !== undefined) readout(Number(r.dataset.i), Number(r.dataset.j)); });
  $("heatmap").addEventListener("click", (e) => { const r = e.target; if (r.dataset && r.dataset.i !== undefined) { S.token = Number(S.dir === "attends_to" ? r.dataset.i : r.dataset.j); render(); } });
  $("heatmap").addEventListener("mouseleave", () => readout(null, null));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT") return;
    if (e.key === "ArrowRight" && S.token < T - 1) { S.token++; render(); }
    if (e.key === "ArrowLeft" && S.token > 0) { S.token--; render(); }
  });
  if (D.effects) $("effect").addEventListener("click", (e) => { const r = e.target; if (r.dataset && r.dataset.l !== undefined) {
    S.layer = Number(r.dataset.l); S.head = Number(r.dataset.h); render(); } });
  drawGrid();
  render();
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style></head>
<body class="mgpt">
<h1>{title}</h1>
<p class="note">{subtitle}</p>
<div class="controls">
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <label>show <select id="direction"><option value="attends_to">what the token attends to →</option>
    <option value="attended_by">← what attends to the token</option></select></label>
  <label>token <input id="token" type="range" min="0" step="1"> <span id="toklabel"></span></label>
  <label>heatmap window <select id="window"></select></label>
</div>
<p id="caption" class="note"></p>
{legend}
<div id="strip" class="strip"></div>
<p id="readout">&nbsp;</p>
<div class="views"><div id="heatmap"></div>{colorbar}{effect}</div>
<p class="note">Every head (click one to select it). Rows of each square are queries, columns keys; grey = masked future.
Click a token to select it; arrow keys move the selection; hover a heatmap cell for its weight.</p>
<div id="grid" class="grid"></div>
<noscript><p>This page needs JavaScript (inline, no network) to draw the attention views.</p></noscript>
<script type="application/json" id="mgpt-data">{data}</script>
<script>{js}</script>
</body></html>
"""
