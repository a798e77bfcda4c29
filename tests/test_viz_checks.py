"""Chapter 08's exercise checks: right answers pass, the usual mistakes are named."""

import pytest
import torch

from minigpt.checks import CheckFailed, ch08


def good_score(w):
    return torch.diagonal(w, offset=-1, dim1=-2, dim2=-1).mean(-1)


def good_rollout(w):
    a = 0.5 * w.mean(1) + 0.5 * torch.eye(w.shape[-1], dtype=w.dtype)
    r = torch.eye(w.shape[-1], dtype=w.dtype)
    for layer in a:
        r = layer @ r
    return r


@pytest.mark.parametrize("fn, message", [
    (lambda w: torch.diagonal(w, offset=-1, dim1=-2, dim2=-1).sum(-1), "summed"),
    (lambda w: torch.diagonal(w, dim1=-2, dim2=-1).mean(-1), "diagonal w\\[i, i\\]"),
    (lambda w: torch.diagonal(w, offset=1, dim1=-2, dim2=-1).mean(-1), "next"),
    (lambda w: torch.cat([w[..., :1, 0], torch.diagonal(w, offset=-1, dim1=-2, dim2=-1)], -1).mean(-1), "query 0"),
    (lambda w: torch.diagonal(w, offset=-1, dim1=-2, dim2=-1).mean(), "one number"),
    (lambda w: w[..., 1:, 0].mean(-1), "first token"),
    (lambda w: 1 / 0, "ZeroDivisionError"),
])
def test_previous_token_score_check_names_mistakes(fn, message):
    ch08.check_previous_token_score(good_score)
    with pytest.raises(CheckFailed, match=message):
        ch08.check_previous_token_score(fn)


def test_previous_token_head_check():
    w = torch.softmax(torch.randn(2, 3, 8, 8, dtype=torch.float64).masked_fill(
        torch.ones(8, 8, dtype=torch.bool).triu(1), float("-inf")), -1)
    w[1, 2] = torch.eye(8, dtype=torch.float64).roll(-1, 1).tril()
    w[1, 2, 0, 0] = 1
    w[0, 1] = 0
    w[0, 1, :, 0] = 1  # a sink head
    ch08.check_previous_token_head((1, 2), w)
    with pytest.raises(CheckFailed, match="swapped"):
        ch08.check_previous_token_head((2, 1), w)
    with pytest.raises(CheckFailed, match="first"):
        ch08.check_previous_token_head((0, 1), w)
    with pytest.raises(CheckFailed, match="pair"):
        ch08.check_previous_token_head(5, w)
    with pytest.raises(CheckFailed, match="not a head"):
        ch08.check_previous_token_head((4, 0), w)


@pytest.mark.parametrize("fn, message", [
    (lambda w: torch.linalg.multi_dot(list(w.mean(1).flip(0))), "no residual"),
    (lambda w: torch.linalg.multi_dot(list((0.5 * w.mean(1) + 0.5 * torch.eye(6, dtype=w.dtype)))), "wrong order"),
    (lambda w: 0.5 * w.mean(1)[-1] + 0.5 * torch.eye(6, dtype=w.dtype), "only the last layer"),
    (lambda w: torch.zeros(3, 3), "shape"),
])
def test_rollout_check_names_mistakes(fn, message):
    ch08.check_rollout(good_rollout)
    with pytest.raises(CheckFailed, match=message):
        ch08.check_rollout(fn)
