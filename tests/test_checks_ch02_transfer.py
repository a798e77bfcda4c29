"""Chapter 02's transfer exercise (02.5, causal attention over a left-padded batch): the honest
answer passes on the visible and hidden inputs, and each planted mistake fails with the message
that names it, on both."""

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


def nan_rows(q, k, v, lengths):  # right on real queries, 0/0 on the leading pads
    causal, real, _ = _masks(q, lengths)
    return _attend(q, k, v, causal & real[:, None, None, :])


def causal_only(q, k, v, lengths):
    causal, _, _ = _masks(q, lengths)
    return _attend(q, k, v, causal)


def query_axis(q, k, v, lengths):
    causal, real, _ = _masks(q, lengths)
    return _attend(q, k, v, causal & real[:, None, :, None])


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

