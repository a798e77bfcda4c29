"""Chapter 02's transfer exercises (02.2, the causal mask of t_q queries at the end of t_k positions;
02.5, causal attention over a left-padded batch), and the named mistakes added to 02.1 and 02.4:
the honest answer passes on the visible and hidden inputs, and each planted mistake fails with the
message that names it, on both."""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch

from minigpt.checks import CheckFailed, ch02, hidden_inputs

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
    with hidden_inputs(offset) if offset else nullcontext():
        with pytest.raises(CheckFailed) as info:
            ch02.check_padded_causal_attention(wrong)
    assert fragment in str(info.value), str(info.value)


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
    with hidden_inputs(offset) if offset else nullcontext():
        with pytest.raises(CheckFailed) as info:
            ch02.check_causal_mask(wrong)
    assert fragment in str(info.value), str(info.value)


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
             (ch02.check_multi_head, lambda x, attn: attn(x)[0], "minigpt.attention.CausalSelfAttention.forward")]
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
    with hidden_inputs(offset) if offset else nullcontext():
        with pytest.raises(CheckFailed) as info:
            ch02.check_attention(wrong)
    assert fragment in str(info.value), str(info.value)
