"""Chapter 02's transfer exercises (02.2, the causal mask of t_q queries at the end of t_k positions;
02.4, grouped-query attention; 02.5, causal attention over a left-padded batch), and the named
mistakes added to 02.1 and to the multi-head check:
the honest answer passes on the visible and hidden inputs, and each planted mistake fails with the
message that names it, on both."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch

from minigpt.checks import CheckFailed, ch02, hidden_inputs
from check_helpers import failure

NEG = float("-inf")


def _attend(q, k, v, mask, fill=NEG):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    return torch.softmax(s.masked_fill(~mask, fill), -1) @ v


def _masks(q, lengths):
    T = q.size(-2)
    pos = torch.arange(T)
    real = pos[None, :] >= T - lengths[:, None]  # (B, T)
    return torch.tril(torch.ones(T, T, dtype=torch.bool)), real, pos


def honest(q, k, v, lengths):
    causal, real, _ = _masks(q, lengths)
    mask = (causal & real[:, None, None, :]) | torch.eye(q.size(-2), dtype=torch.bool)  # a pad sees itself
    return _attend(q, k, v, mask)


def nan_rows(q, k, v, lengths):  # right on real queries, 0/0 on every pad query
    causal, real, _ = _masks(q, lengths)
    return _attend(q, k, v, causal & real[:, None, None, :])


def causal_only(q, k, v, lengths):
    causal, _, _ = _masks(q, lengths)
    return _attend(q, k, v, causal)


def query_axis(q, k, v, lengths):
    causal, real, _ = _masks(q, lengths)
    return _attend(q, k, v, causal & real[:, None, :, None])


def no_head_axis(q, k, v, lengths):  # (B, T, T): crashes, or lines up with the heads when B == H
    causal, real, _ = _masks(q, lengths)
    return _attend(q, k, v, (causal & real[:, None, :]) | torch.eye(q.size(-2), dtype=torch.bool))


def right_padded_eye(q, k, v, lengths):  # the hint's | eye, but padded on the wrong side
    causal, _, pos = _masks(q, lengths)
    mask = causal & (pos[None, :] < lengths[:, None])[:, None, None, :]
    return _attend(q, k, v, mask | torch.eye(q.size(-2), dtype=torch.bool))


def right_padded(q, k, v, lengths):
    causal, _, pos = _masks(q, lengths)
    return _attend(q, k, v, causal & (pos[None, :] < lengths[:, None])[:, None, None, :])


def no_causal(q, k, v, lengths):
    _, real, _ = _masks(q, lengths)
    return _attend(q, k, v, real[:, None, None, :] | torch.eye(q.size(-2), dtype=torch.bool))


def zero_fill(q, k, v, lengths):
    causal, real, _ = _masks(q, lengths)
    return _attend(q, k, v, causal & real[:, None, None, :], fill=0.0)


def after_softmax(q, k, v, lengths):
    causal, real, _ = _masks(q, lengths)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), -1)
    return (w * (causal & real[:, None, None, :])) @ v


MISTAKES = [
    (nan_rows, "NaN"),
    (causal_only, "causal mask alone does not hide LEFT padding"),
    (query_axis, "instead of the padded KEYS"),
    (right_padded, "RIGHT-padded"),
    (right_padded_eye, "RIGHT-padded"),
    (no_head_axis, "(B, 1, T, T)"),
    (no_causal, "forgot the causal part"),
    (zero_fill, "instead of -inf"),
    (after_softmax, "after the softmax"),
]


@pytest.mark.parametrize("offset", [0, 101, 7919])
def test_honest_answer_passes(offset, capsys):
    if offset:
        with hidden_inputs(offset):
            ch02.check_padded_causal_attention(honest)
        assert capsys.readouterr().out == ""
    else:
        ch02.check_padded_causal_attention(honest)
        assert capsys.readouterr().out.startswith("✅")


def test_returning_output_and_weights_is_accepted(capsys):
    ch02.check_padded_causal_attention(lambda q, k, v, n: (honest(q, k, v, n), None))
    assert capsys.readouterr().out.startswith("✅")


@pytest.mark.parametrize("offset", [0, 101, 7919])
@pytest.mark.parametrize("wrong, fragment", MISTAKES, ids=[f.__name__ for f, _ in MISTAKES])
def test_each_mistake_is_named(wrong, fragment, offset):
    msg = failure(ch02.check_padded_causal_attention, wrong, offset)
    assert fragment in msg, msg


def test_a_wrong_shape_is_named():
    with pytest.raises(CheckFailed, match="expected"):
        ch02.check_padded_causal_attention(lambda q, k, v, n: honest(q, k, v, n).transpose(1, 2))


def test_hidden_cases_hold_a_full_row_and_a_length_one_row():
    for offset in (101, 7919, 31_337):
        with hidden_inputs(offset):
            cases = ch02._left_padded_cases(True)
        visible = ch02._left_padded_cases(False)
        for B, H, T, d_k, d_v, lengths in cases:
            assert T in lengths and 1 in lengths and len(lengths) == B
            assert (B, H, T) not in [c[:3] for c in visible]



def test_the_no_head_axis_mistake_is_named_when_batch_equals_heads():
    for offset in range(1, 2000):  # a hidden draw whose first case has B == H: the (B, T, T) mask does not crash
        with hidden_inputs(offset):
            if ch02._left_padded_cases(True)[0][0] == ch02._left_padded_cases(True)[0][1]:
                with pytest.raises(CheckFailed, match="HEAD axis"):
                    ch02.check_padded_causal_attention(no_head_axis)
                return
    pytest.fail("no hidden draw with B == H")


# ---------------------------------------------------------------- 02.2: my_causal_mask(t_q, t_k=None)

def mask_honest(t_q, t_k=None):
    t_k = t_q if t_k is None else t_k
    q_pos = torch.arange(t_k - t_q, t_k)[:, None]  # the queries are the last t_q positions
    return torch.arange(t_k)[None, :] <= q_pos


def _ones(t_q, t_k):
    return torch.ones(t_q, t_q if t_k is None else t_k, dtype=torch.bool)


MASK_MISTAKES = [
    (lambda t_q, t_k=None: _ones(t_q, t_k).tril(), "top-left"),                       # no offset t_k - t_q
    (lambda t_q, t_k=None: mask_honest(t_q, t_k).T, "transposed"),                    # (t_k, t_q)
    (lambda t_q, t_k=None: mask_honest(t_q, t_k).float(), "boolean"),                 # float 0/1
    (lambda t_q, t_k=None: mask_honest(t_q), "square"),                               # ignores t_k
    (lambda t_q, t_k=None: ~mask_honest(t_q, t_k), "inverted"),
    (lambda t_q, t_k=None: mask_honest(t_q, t_k).logical_and(
        ~torch.eye(t_q, t_q if t_k is None else t_k, dtype=torch.bool, ).roll((t_q if t_k is None else t_k) - t_q, 1)),
     "diagonal"),                                                                       # j < i, not j <= i
    (lambda t_q, t_k=None: _ones(t_q, t_k).tril(t_q - (t_q if t_k is None else t_k)), "wrong way"),
    (lambda t_q, t_k=None: _ones(t_q, t_k), "allows everything"),
    (lambda t_q, t_k: mask_honest(t_q, t_k), "t_k=None"),                             # no default for t_k
]


@pytest.mark.parametrize("offset", [0, 101, 7919])
def test_mask_honest_answer_passes(offset, capsys):
    with hidden_inputs(offset) if offset else nullcontext():
        ch02.check_causal_mask(mask_honest)
    assert capsys.readouterr().out.startswith("✅") != bool(offset)


@pytest.mark.parametrize("offset", [0, 101, 7919])
@pytest.mark.parametrize("wrong, fragment", MASK_MISTAKES, ids=[f for _, f in MASK_MISTAKES])
def test_each_mask_mistake_is_named(wrong, fragment, offset):
    msg = failure(ch02.check_causal_mask, wrong, offset)
    assert fragment in msg, msg


def test_hidden_mask_cases_differ_and_cover_the_edges():
    visible = ch02._mask_cases(False)
    for offset in (101, 7919, 31_337):
        with hidden_inputs(offset):
            cases = ch02._mask_cases(True)
        assert not set(cases) & set(visible)
        full = [(t_q, t_q if t_k is None else t_k) for t_q, t_k in cases]
        assert any(t_k is not None and t_q == t_k for t_q, t_k in cases)  # t_q = t_k spelled out
        assert any(t_q == 1 for t_q, _ in full) and any(1 < t_q < t_k for t_q, t_k in full)


# ---------------------------------------------------------------- the local check refuses what the grader refuses

def test_calling_the_package_fails_locally_with_the_graders_message():
    from minigpt import attention, causal_mask
    from minigpt.assignments.forbidden import forbidden_message

    cases = [(ch02.check_attention, lambda q, k, v, mask=None: attention(q, k, v, mask), "minigpt.attention.attention"),
             (ch02.check_causal_mask, lambda t_q, t_k=None: causal_mask(t_q, t_k), "minigpt.attention.causal_mask"),
             (ch02.check_multi_head, lambda x, attn: attn(x)[0], "minigpt.attention.CausalSelfAttention.forward"),
             (ch02.check_grouped_query, lambda x, attn: attn(x)[0], "minigpt.attention.CausalSelfAttention.forward"),
             (ch02.check_grouped_query, lambda x, attn: gqa_honest(x, attn, project=True),
              "minigpt.attention.CausalSelfAttention.project")]
    for check, fn, name in cases:
        assert name in check.forbidden
        with pytest.raises(CheckFailed) as info:
            check(fn)
        assert forbidden_message([name]).split(name)[0] + name in str(info.value), str(info.value)


def test_02_5_may_call_the_package():  # its exercise text says so: the mask is the exercise
    from minigpt import attention

    def allowed(q, k, v, lengths):
        causal, real, _ = _masks(q, lengths)
        return attention(q, k, v, (causal & real[:, None, None, :]) | torch.eye(q.size(-2), dtype=torch.bool))[0]

    ch02.check_padded_causal_attention(allowed)


# ---------------------------------------------------------------- 02.1: named mistakes

def _scores(q, k, mask):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    return s if mask is None else s.masked_fill(~mask, NEG)


def dot_T(q, k, v, mask=None):  # .T reverses every axis of a (B, H, T, d_k) tensor
    s = q @ k.T / math.sqrt(q.size(-1))
    return torch.softmax(s if mask is None else s.masked_fill(~mask, NEG), -1) @ v


def always_causal(q, k, v, mask=None):
    T = q.size(-2)
    return torch.softmax(_scores(q, k, torch.tril(torch.ones(T, T, dtype=torch.bool))), -1) @ v


def scores_as_weights(q, k, v, mask=None):
    s = _scores(q, k, mask)
    return torch.softmax(s, -1) @ v, s


def weights_of_other_rows(q, k, v, mask=None):
    w = torch.softmax(_scores(q, k, mask), -1)
    return w @ v, w.flip(-2)


ATTENTION_MISTAKES = [
    (dot_T, "k.transpose(-2, -1)"),
    (always_causal, "although mask is None"),
    (scores_as_weights, "scores before the softmax"),
    (weights_of_other_rows, "weights you returned differ"),
]


@pytest.mark.filterwarnings("ignore:The use of `x.T`")
@pytest.mark.parametrize("offset", [0, 101, 7919])
@pytest.mark.parametrize("wrong, fragment", ATTENTION_MISTAKES, ids=[f.__name__ for f, _ in ATTENTION_MISTAKES])
def test_each_attention_mistake_is_named(wrong, fragment, offset):
    msg = failure(ch02.check_attention, wrong, offset)
    assert fragment in msg, msg


# ---------------------------------------------------------------- 02.4: grouped-query attention

def gqa_honest(x, attn, *, repeat="interleave", swap=False, proj=True, merge=True, mask=True, scale="head",
               project=False):
    """Grouped-query attention written out, independently of minigpt: the keywords plant one mistake
    each (``repeat``: "interleave" right, "tile" the wrong order, "gather" right by indexing, "none"
    no repeat at all; ``project=True`` calls the module's own projection, which the check refuses)."""
    B, T, C = x.shape
    H, H_kv, hs = attn.n_head, attn.n_kv_head, attn.head_size
    g = H // H_kv
    if project:
        q, k, v = attn.project(x)
    else:
        q, k, v = attn.c_attn(x).split([H * hs, H_kv * hs, H_kv * hs], dim=2)
        q = q.view(B, T, H, hs).transpose(1, 2)                                   # (B, H, T, hs)
        k, v = (t.view(B, T, H_kv, hs).transpose(1, 2) for t in (k, v))           # (B, H_kv, T, hs)
    if swap:
        k, v = v, k
    if repeat == "interleave":
        k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
    elif repeat == "tile":
        k, v = k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)
    elif repeat == "gather":
        group = torch.arange(H) // g                                              # query head h -> kv head h // g
        k, v = k[:, group], v[:, group]
    s = q @ k.transpose(-2, -1) / {"head": math.sqrt(hs), "none": 1.0, "embd": math.sqrt(C)}[scale]
    if mask:
        s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), NEG)
    y = torch.softmax(s, -1) @ v                                                  # (B, H, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C) if merge else y.reshape(B, T, C)
    return attn.c_proj(y) if proj else y


GQA_MISTAKES = [
    (dict(repeat="tile"), "h % n_kv_head"),
    (dict(repeat="none"), "repeat each key/value head"),
    (dict(swap=True), "swapped the keys and the values"),
    (dict(proj=False), "output projection"),
    (dict(merge=False), "without transposing back"),
    (dict(mask=False), "missing causal mask"),
    (dict(scale="none"), "no √d_k scaling"),
    (dict(scale="embd"), "√n_embd"),
]


def _first_grouped_case_has(offset, pred):
    with hidden_inputs(offset) if offset else nullcontext():
        return pred(*ch02._gqa_cases(bool(offset))[0])


@pytest.mark.parametrize("offset", [0, 101, 7919])
@pytest.mark.parametrize("repeat", ["interleave", "gather"])
def test_gqa_honest_answers_pass(repeat, offset, capsys):
    with hidden_inputs(offset) if offset else nullcontext():
        ch02.check_grouped_query(lambda x, attn: gqa_honest(x, attn, repeat=repeat))
    assert capsys.readouterr().out.startswith("✅") != bool(offset)


@pytest.mark.parametrize("offset", [0, 101, 7919])
@pytest.mark.parametrize("mistake, fragment", GQA_MISTAKES, ids=[f for _, f in GQA_MISTAKES])
def test_each_gqa_mistake_is_named(mistake, fragment, offset):
    assert _first_grouped_case_has(offset, lambda nh, nkv, hs, B, T: 1 < nkv < nh and T > 1)
    msg = failure(ch02.check_grouped_query, lambda x, attn: gqa_honest(x, attn, **mistake), offset)
    assert fragment in msg, msg


def test_gqa_splitting_c_attn_in_three_equal_parts_is_named():
    def thirds(x, attn):
        q, k, v = attn.c_attn(x).split(x.shape[-1], dim=2)
        return q
    with pytest.raises(CheckFailed, match=r"n_head \+ 2·n_kv_head"):
        ch02.check_grouped_query(thirds)


def test_gqa_hidden_cases_cover_multi_query_multi_head_and_other_groups():
    visible = ch02._gqa_cases(False)
    for offset in (101, 7919, 123_457, 31_337):
        with hidden_inputs(offset):
            cases = ch02._gqa_cases(True)
        assert not set(cases) & set(visible)
        kinds = [(nkv == 1, nkv == nh, 1 < nkv < nh) for nh, nkv, *_ in cases]
        assert kinds == [(False, False, True), (True, False, False), (False, True, False)]
        for nh, nkv, hs, B, T in cases:
            assert nh % nkv == 0 and 1 <= T <= 16
            if 1 < nkv < nh:
                assert nkv * nkv != nh  # repeating by n_kv_head instead of n_head // n_kv_head cannot pass by luck


def test_gqa_reference_is_minigpts_grouped_module_and_sdpa_agrees():
    """The module the check compares with, against PyTorch's SDPA given the keys and values repeated."""
    import torch.nn.functional as F

    from minigpt import GPTConfig
    from minigpt.attention import CausalSelfAttention

    torch.manual_seed(0)
    attn = CausalSelfAttention(GPTConfig(n_embd=24, n_head=6, n_kv_head=2, block_size=8)).eval()
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        q, k, v = attn.c_attn(x).split([24, 8, 8], dim=2)
        q = q.view(2, 7, 6, 4).transpose(1, 2)
        k, v = (t.view(2, 7, 2, 4).transpose(1, 2).repeat_interleave(3, dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 7, 24)
        assert torch.allclose(attn.c_proj(y), attn(x)[0], atol=1e-6)
        assert torch.allclose(gqa_honest(x, attn), attn(x)[0], atol=1e-6)
