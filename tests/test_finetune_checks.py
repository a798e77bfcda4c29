"""The chapter 06 checks accept the reference answers and name the usual mistakes (06.1, the
conversation's loss mask: tests/test_checks_ch06_transfer.py)."""

import pytest
import torch

from minigpt.checks import CheckFailed, ch06


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def fwd_good(x, W, b, A, B, alpha, r):
    return x @ W.T + b + (alpha / r) * (x @ A.T @ B.T)


def fwd_noscale(x, W, b, A, B, alpha, r):
    return x @ W.T + b + x @ A.T @ B.T


def fwd_inverted(x, W, b, A, B, alpha, r):
    return x @ W.T + b + (r / alpha) * (x @ A.T @ B.T)


def init_good(i, o, r):
    return torch.randn(r, i) * 0.1, torch.zeros(o, r)


def init_random_b(i, o, r):
    return torch.randn(r, i) * 0.1, torch.randn(o, r)


def init_both_zero(i, o, r):
    return torch.zeros(r, i), torch.zeros(o, r)


def count_good(C, L, r):
    return L * r * (4 * C + 2 * C + 5 * C + 5 * C)


def count_attn_only(C, L, r):
    return L * r * (4 * C + 2 * C)


def count_one_block(C, L, r):
    return r * (4 * C + 2 * C + 5 * C + 5 * C)


@pytest.mark.parametrize("check, good", [
    (ch06.check_lora_forward, fwd_good),
    (ch06.check_lora_init, init_good), (ch06.check_lora_count, count_good)])
def test_reference_answers_pass(check, good, capsys):
    check(good)
    assert capsys.readouterr().out.startswith("✅")


@pytest.mark.parametrize("check, bad, words", [
    (ch06.check_lora_forward, fwd_noscale, "forgot the scaling"),
    (ch06.check_lora_forward, fwd_inverted, "inverted"),
    (ch06.check_lora_init, init_random_b, "B must start at zero"),
    (ch06.check_lora_init, init_both_zero, "no gradient"),
    (ch06.check_lora_count, count_attn_only, "only the attention"),
    (ch06.check_lora_count, count_one_block, "n_layer"),
])
def test_mistakes_are_named(check, bad, words):
    with pytest.raises(CheckFailed, match=words):
        check(bad)
