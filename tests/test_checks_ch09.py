"""Chapter 09's exercises: the honest answers pass (visible and hidden inputs), and each typical
mistake, planted in a small wrong implementation written here, fails with the message that names
it. The honest answers are written by hand from the chapter's formulas, not taken from the package
or from the checks' own references."""

from __future__ import annotations

import math

import pytest
import torch

from minigpt.checks import CheckFailed, ch09, hidden_inputs
from minigpt.config import GPTConfig
from check_helpers import failure, fails_with, passes

OFFSETS = (101, 7919, 123_457)


# --- 09.1 rotary embedding ------------------------------------------------------------------

def _rope(x, start, theta, *, offset=0, sign=1.0, interleaved=False, exponent=2.0, float32=False):
    """Rotate by cos/sin of the halves (the honest answer), or one of the typical mistakes."""
    d, T = x.shape[-1], x.shape[-2]
    dt = torch.float32 if float32 else torch.float64
    pos = torch.arange(T, dtype=dt) + start + offset
    angle = sign * pos[:, None] * theta ** (-exponent * torch.arange(d // 2, dtype=dt) / d)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).flatten(-2)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat((a * cos - b * sin, a * sin + b * cos), -1)


def _rope_loop(x, start, theta):
    """The same rotation as a loop over positions and pairs, with math.cos/sin: another honest answer."""
    out = x.clone()
    d = x.shape[-1]
    for t in range(x.shape[-2]):
        for i in range(d // 2):
            ang = (start + t) * theta ** (-2 * i / d)
            a, b = x[..., t, i], x[..., t, i + d // 2]
            out[..., t, i], out[..., t, i + d // 2] = a * math.cos(ang) - b * math.sin(ang), a * math.sin(ang) + b * math.cos(ang)
    return out


def test_rope_honest_answers_pass(capsys):
    passes(ch09.check_rope, _rope, capsys)
    passes(ch09.check_rope, _rope_loop, capsys)
    passes(ch09.check_rope, lambda x, s, th: _rope(x, s, th, float32=True), capsys)  # float32 angles are fine
    for offset in OFFSETS:
        with hidden_inputs(offset):
            ch09.check_rope(_rope)
            ch09.check_rope(_rope_loop)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(offset=1), "off by one"),
    (dict(sign=-1.0), "wrong way"),
    (dict(interleaved=True), "paired neighbours"),
    (dict(exponent=1.0), "base^(-i/d)"),
    (dict(exponent=4.0), "base^(-2i/(d/2))"),
])
def test_rope_mistakes_are_named(kwargs, fragment):
    fails_with(ch09.check_rope, lambda x, s, th: _rope(x, s, th, **kwargs), fragment)


def test_rope_ignoring_start_and_no_rotation_are_named():
    fails_with(ch09.check_rope, lambda x, s, th: _rope(x, 0, th), "position 0")
    fails_with(ch09.check_rope, lambda x, s, th: x, "nothing was rotated")
    fails_with(ch09.check_rope, lambda x, s, th: x[..., : x.shape[-1] // 2], "shape")
    fails_with(ch09.check_rope, lambda x, s, th: 1 / 0, "ZeroDivisionError")


def test_rope_ignoring_start_fails_hidden_even_if_visible_start_were_zero():
    """Every hidden run has a case with start > 0."""
    for offset in OFFSETS:
        msg = failure(ch09.check_rope, lambda x, s, th: _rope(x, 0, th), offset)
        assert "position 0" in msg, msg


def test_rope_calling_the_package_is_refused():
    from minigpt.rope import apply_rope, rope_cos_sin

    def via_package(x, start, theta):
        cos, sin = rope_cos_sin(torch.arange(start, start + x.shape[-2]), x.shape[-1], theta, dtype=x.dtype)
        return apply_rope(x, cos, sin)

    with pytest.raises(CheckFailed):
        ch09.check_rope(via_package)


# --- 09.2 parameter count ---------------------------------------------------------------------

def _count(cfg, *, kv=True, rms_bias=False, qk=True, gate=True, wpe_always=False, untied=True, tied_twice=False,
           ffn_4c=False, qkv_bias_from_bias=False):
    C, hs = cfg.n_embd, cfg.head_size
    F = 4 * C if ffn_4c else cfg.ffn_width
    n_kv = cfg.kv_heads if kv else cfg.n_head
    norm = C + (C if cfg.bias and (cfg.norm == "layernorm" or rms_bias) else 0)
    qkv = (cfg.n_head + 2 * n_kv) * hs
    has_qkv_bias = cfg.bias if qkv_bias_from_bias else cfg.attn_bias
    attn = C * qkv + (qkv if has_qkv_bias else 0) + C * C + (C if cfg.bias else 0) + (2 * hs if cfg.qk_norm and qk else 0)
    up = 2 if cfg.activation == "swiglu" and gate else 1
    ffn = (up + 1) * C * F + ((up * F + C) if cfg.bias else 0)
    n = cfg.vocab_size * C + cfg.n_layer * (2 * norm + attn + ffn) + norm
    if cfg.pos_emb == "learned" or wpe_always:
        n += cfg.block_size * C
    if (not cfg.tie_weights and untied) or (cfg.tie_weights and tied_twice):
        n += cfg.vocab_size * C
    return n


def test_param_count_honest_answer_passes(capsys):
    passes(ch09.check_param_count, _count, capsys)
    for offset in OFFSETS:
        with hidden_inputs(offset):
            ch09.check_param_count(_count)


def test_param_count_matches_real_models_on_many_configs():
    """The honest formula above is right, by the model's own tensors (so the mistakes below are mistakes)."""
    import random

    from minigpt.model import GPT

    r = random.Random(9)
    for _ in range(50):
        cfg = ch09._random_config(r)
        with torch.device("meta"):
            assert _count(cfg) == sum(p.numel() for p in GPT(cfg).parameters()), cfg


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(kv=False), "n_kv_head key and value heads"),
    (dict(gate=False), "three matrices"),
    (dict(ffn_4c=True), "not 4·n_embd"),
    (dict(wpe_always=True), "no wpe"),
    (dict(untied=False), "its own vocab_size × n_embd"),
    (dict(tied_twice=True), "count that matrix once"),
    (dict(qk=False), "qk_norm adds"),
    (dict(qkv_bias_from_bias=True), "qkv_bias=True gives c_attn a bias even with bias=False"),
])
def test_param_count_mistakes_are_named(kwargs, fragment):
    fails_with(ch09.check_param_count, lambda cfg: _count(cfg, **kwargs), fragment)


def test_rmsnorm_bias_is_named_on_the_config_that_has_it():
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, norm="rmsnorm",
                    pos_emb="rope", activation="swiglu", n_kv_head=2)
    assert cfg.bias and _count(cfg, rms_bias=True) != _count(cfg)
    fails_with(ch09.check_param_count, lambda c: _count(c, rms_bias=True), "RMSNorm has a gain and no bias")


def test_param_count_non_int_answers_fail_clearly():
    fails_with(ch09.check_param_count, lambda cfg: "many", "should be an int")
    fails_with(ch09.check_param_count, lambda cfg: _count(cfg) + 1, "off by +1")
    passes_float = lambda cfg: float(_count(cfg))  # noqa: E731 - 809856.0 is the same number
    ch09.check_param_count(passes_float)


# --- 09.3 KV-cache bytes ------------------------------------------------------------------------

def _kv(cfg, T, B, nbytes, *, heads=None, factor=2, layers=True, batch=True, bits=False, numbers=False, ctx=False):
    h = cfg.kv_heads if heads is None else heads(cfg)
    n = factor * (cfg.n_layer if layers else 1) * h * cfg.head_size * (cfg.block_size if ctx else T) * (B if batch else 1)
    return n if numbers else n * nbytes * (8 if bits else 1)


def test_kv_cache_bytes_honest_answer_passes(capsys):
    passes(ch09.check_kv_cache_bytes, _kv, capsys)
    for offset in OFFSETS:
        with hidden_inputs(offset):
            ch09.check_kv_cache_bytes(_kv)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(heads=lambda c: c.n_head), "only the n_kv_head"),
    (dict(factor=1), "keys AND values"),
    (dict(layers=False), "one layer"),
    (dict(batch=False), "one sequence"),
    (dict(bits=True), "that is bits"),
    (dict(numbers=True), "multiply by bytes_per_element"),
    (dict(ctx=True), "block_size"),
])
def test_kv_cache_bytes_mistakes_are_named(kwargs, fragment):
    fails_with(ch09.check_kv_cache_bytes, lambda c, T, B, nb: _kv(c, T, B, nb, **kwargs), fragment)


def test_kv_cache_bytes_calling_the_package_is_refused():
    with pytest.raises(CheckFailed):
        ch09.check_kv_cache_bytes(lambda c, T, B, nb: c.kv_cache_bytes_per_token(nb) * T * B)


# --- 09.4 multi-head -> grouped-query ----------------------------------------------------------

def _to_gqa(w, n_head, n_kv, *, strided=False, how="mean", pool_q=False, kv_only=False):
    """Loop over the groups (the honest answer), or a typical mistake."""
    C = w.shape[1]
    hs, group = C // n_head, n_head // n_kv
    q, k, v = w[:C], w[C:2 * C], w[2 * C:]

    def pool(block):
        out = []
        for j in range(n_kv):
            members = [j + n_kv * m for m in range(group)] if strided else [j * group + m for m in range(group)]
            rows = [block[h * hs:(h + 1) * hs] for h in members]
            out.append(rows[0] if how == "first" else sum(rows) / (1 if how == "sum" else len(rows)))
        return torch.cat(out)

    if kv_only:
        return torch.cat((pool(k), pool(v)))
    return torch.cat((pool(q) if pool_q else q, pool(k), pool(v)))


def test_mha_to_gqa_honest_answer_passes(capsys):
    passes(ch09.check_mha_to_gqa, _to_gqa, capsys)
    for offset in OFFSETS:
        with hidden_inputs(offset):
            ch09.check_mha_to_gqa(_to_gqa)


def test_mha_to_gqa_gives_a_working_gqa_layer_that_equals_mha_when_heads_agree():
    """Independent of the checks' reference: with the K/V heads of each group made equal, the pooled
    weight in a real GQA layer gives the multi-head layer's output."""
    from minigpt import GPT

    mha = GPT(GPTConfig(n_layer=1, n_head=4, n_embd=32, bias=False)).transformer.h[0].attn
    gqa = GPT(GPTConfig(n_layer=1, n_head=4, n_embd=32, bias=False, n_kv_head=2)).transformer.h[0].attn
    with torch.no_grad():
        w = mha.c_attn.weight  # (96, 32); head size 8
        for base in (32, 64):  # keys, values: head 1 := head 0, head 3 := head 2
            w[base + 8:base + 16] = w[base:base + 8]
            w[base + 24:base + 32] = w[base + 16:base + 24]
        gqa.c_attn.weight.copy_(_to_gqa(w, 4, 2))
        gqa.c_proj.weight.copy_(mha.c_proj.weight)
        x = torch.randn(2, 5, 32)
        torch.testing.assert_close(gqa(x)[0], mha(x)[0])


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(strided=True), "CONSECUTIVE"),
    (dict(how="sum"), "summed"),
    (dict(how="first"), "first head of each group"),
    (dict(pool_q=True), "query heads too"),
    (dict(kv_only=True), "keys and values only"),
])
def test_mha_to_gqa_mistakes_are_named(kwargs, fragment):
    fails_with(ch09.check_mha_to_gqa, lambda w, nh, kv: _to_gqa(w, nh, kv, **kwargs), fragment)


# --- 09.5 the most key/value heads that fit ------------------------------------------------------

def _heads_that_fit(cfg, T, B, nbytes, budget, *, smallest=False, any_int=False, batch=True, lt=False):
    """Written from the formula 2·L·kv·hs·T·B·bytes (the honest answer), or one of the typical mistakes."""
    per_head = 2 * cfg.n_layer * cfg.head_size * T * (B if batch else 1) * nbytes
    if any_int:
        return min(cfg.n_head, budget // per_head)
    ok = [d for d in range(1, cfg.n_head + 1) if cfg.n_head % d == 0
          and (d * per_head < budget if lt else d * per_head <= budget)]
    if not ok:
        return 0
    return min(ok) if smallest else max(ok)


def test_kv_heads_that_fit_honest_answer_passes(capsys):
    passes(ch09.check_kv_heads_that_fit, _heads_that_fit, capsys)
    for offset in OFFSETS:
        with hidden_inputs(offset):
            ch09.check_kv_heads_that_fit(_heads_that_fit)


def test_kv_heads_that_fit_llama_case_is_eight():
    """Independent arithmetic: 80 layers · 128 dims · 8,192 tokens · 16 sequences · 2 bytes · 2 (K, V)
    = 5 GiB per key/value head, so 40 GiB hold 8 of them."""
    assert 2 * 80 * 128 * 8192 * 16 * 2 == 5 * 2**30
    cfg = GPTConfig(vocab_size=32000, block_size=4096, n_layer=80, n_head=64, n_embd=8192)
    assert _heads_that_fit(cfg, 8192, 16, 2, 40 * 2**30) == 8


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(smallest=True), "the MOST key/value heads"),
    (dict(any_int=True), "does not divide n_head"),
    (dict(batch=False), "more than the budget"),
])
def test_kv_heads_that_fit_mistakes_are_named(kwargs, fragment):
    fails_with(ch09.check_kv_heads_that_fit, lambda c, T, B, nb, bud: _heads_that_fit(c, T, B, nb, bud, **kwargs),
               fragment)


def test_kv_heads_that_fit_none_slip_is_named():
    """cfg.n_kv_head is None for a multi-head config: using it crashes, and the message says what to use."""
    fails_with(ch09.check_kv_heads_that_fit,
               lambda c, T, B, nb, bud: 2 * c.n_layer * c.n_kv_head * c.head_size * T * B * nb, "use cfg.kv_heads")
    fails_with(ch09.check_kv_cache_bytes, lambda c, T, B, nb: 2 * c.n_layer * c.n_kv_head * c.head_size * T * B * nb,
               "use cfg.kv_heads")
