"""The transfer exercises of chapter 04 (04.7 sliding windows, 04.8 a trigram model): the honest
answers pass, on visible and hidden inputs, and each mistake the chapter names, planted in a small
wrong implementation, fails with the message that names it, on visible and hidden inputs alike."""

from __future__ import annotations

import math

import pytest
import torch

from minigpt.checks import CheckFailed, ch04, hidden_inputs

OFFSETS = (0, 101, 7919, 123_457, 9_999_991, 31_337)  # 0: the visible inputs


def fails_with(check, fn, *fragments):
    """``fn`` fails ``check`` with every fragment in the message, on the visible and hidden inputs."""
    for offset in OFFSETS:
        with hidden_inputs(offset) if offset else _visible():
            with pytest.raises(CheckFailed) as info:
                check(fn)
        msg = str(info.value)
        for frag in fragments:
            assert frag.lower() in msg.lower(), f"offset {offset}: expected {frag!r} in: {msg}"


class _visible:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def passes(check, fn, capsys):
    check(fn)
    assert capsys.readouterr().out.startswith("✅")
    for offset in (*OFFSETS[1:], *range(1, 40)):
        with hidden_inputs(offset):
            check(fn)


# ---------------------------------------------------------------- 04.7 sliding windows

def windows(ids, T, stride):
    N = (len(ids) - T - 1) // stride + 1
    idx = torch.arange(N)[:, None] * stride + torch.arange(T + 1)  # (N, T+1)
    w = ids[idx]
    return w[:, :-1], w[:, 1:]


def by_unfold(ids, T, stride):
    w = ids.unfold(0, T + 1, stride)  # PyTorch's own sliding window: (N, T+1)
    return w[:, :-1], w[:, 1:]


def with_count(n_of):
    """The honest answer with another window count ``n_of(L, T, stride)``."""
    def answer(ids, T, stride):
        N = n_of(len(ids), T, stride)
        idx = torch.arange(N)[:, None] * stride + torch.arange(T + 1)
        w = ids[idx]
        return w[:, :-1], w[:, 1:]
    return answer


def t_token_windows(ids, T, stride):  # windows of T tokens: y runs past the end
    starts = range(0, len(ids) - T + 1, stride)
    return (torch.stack([ids[s:s + T] for s in starts]), torch.stack([ids[s + 1:s + T + 1] for s in starts]))


def t_token_windows_short(ids, T, stride):  # windows of T tokens, split into x and y of T - 1
    w = ids.unfold(0, T, stride)
    return w[:, :-1], w[:, 1:]


def test_windows_honest_answers_pass(capsys):
    passes(ch04.check_windows, windows, capsys)
    passes(ch04.check_windows, by_unfold, capsys)


def test_windows_mistakes_are_named():
    check = ch04.check_windows
    fails_with(check, t_token_windows, "runs off the end", "T + 1")
    fails_with(check, t_token_windows_short, "hold T tokens", "T + 1")
    fails_with(check, with_count(lambda L, T, s: (L - T) // s + 1), "runs off the end")  # one window too many
    fails_with(check, with_count(lambda L, T, s: (L - T - 1) // s), "missed the last",
               "⌊(L − T − 1)/stride⌋ + 1")
    fails_with(check, lambda ids, T, s: (windows(ids, T, s)[0], windows(ids, T, s)[0]), "not shifted")
    fails_with(check, lambda ids, T, s: windows(ids, T, s)[::-1], "swapped")
    fails_with(check, lambda ids, T, s: windows(ids, T, 1), "use the stride")
    fails_with(check, lambda ids, T, s: tuple(t.T for t in windows(ids, T, s)), "transposed")
    fails_with(check, lambda ids, T, s: windows(ids, T, s)[0], "pair")
    fails_with(check, lambda ids, T, s: tuple(t.float() for t in windows(ids, T, s)), "integers")


def test_windows_extra_window_that_does_not_crash_is_named():
    def padded(ids, T, stride):  # one more window, padded with zeros past the end
        x, y = windows(torch.cat([ids, torch.zeros(2 * T + stride, dtype=ids.dtype)]), T, stride)
        n = (len(ids) - T - 1) // stride + 2
        return x[:n], y[:n]

    fails_with(ch04.check_windows, padded, "N + 1 windows", "runs off the end")


def test_windows_hidden_cases_cover_stride_above_T_a_tail_and_a_single_window():
    seen = []
    for offset in range(1, 30):
        with hidden_inputs(offset):
            ch04.check_windows(lambda ids, T, s: seen.append((len(ids), T, s)) or windows(ids, T, s))
    assert any(s > T for L, T, s in seen)
    assert any(s == T and (L - 1) % T for L, T, s in seen)  # a tail that fills no window
    assert any(L == T + 1 for L, T, s in seen)
    assert any(s < T and (L - T) % s == 0 for L, T, s in seen)  # a T-token window would start at L - T
    assert len({(L, T, s) for L, T, s in seen}) > 60  # they vary with the secret


# ---------------------------------------------------------------- 04.8 a trigram model

def trigram(train, val, V, alpha, order=(0, 1, 2), norm=-1, count=None, smooth_unseen=True):
    N = torch.zeros(V, V, V, dtype=torch.float64)
    cols = (train[:-2], train[1:-1], train[2:])
    N.index_put_(tuple(cols[i] for i in order), torch.ones(len(train) - 2, dtype=torch.float64), accumulate=True)
    if smooth_unseen:
        N = N + alpha
    else:  # smooth only the contexts seen in train
        N = N + alpha * (N.sum(-1, keepdim=True) > 0)
    P = N / N.sum(norm, keepdim=True)
    nll = -P.log()[val[:-2], val[1:-1], val[2:]]
    loss = nll.mean() if count is None else nll.sum() / count(len(val))
    return P, loss


def test_trigram_honest_answer_passes(capsys):
    passes(ch04.check_trigram, trigram, capsys)

    def float32(train, val, V, alpha):
        P, loss = trigram(train, val, V, alpha)
        return P.float(), loss.float()

    passes(ch04.check_trigram, float32, capsys)


def test_trigram_mistakes_are_named():
    check = ch04.check_trigram
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, order=(1, 0, 2)), "wrong pair order")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, norm=0), "normalised over the first axis")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, norm=1), "normalised over the second axis")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, norm=(0, 1, 2)), "whole table")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, smooth_unseen=False), "unseen contexts", "uniform")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, 0.0), "no smoothing", "uniform")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, 1.0), "added 1")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, count=lambda n: n - 1), "wrong count")
    fails_with(check, lambda tr, va, V, a: trigram(tr, va, V, a, count=lambda n: n), "wrong count")
    fails_with(check, lambda tr, va, V, a: (trigram(tr, va, V, a)[0], -trigram(tr, va, V, a)[1]), "sign")
    fails_with(check, lambda tr, va, V, a: (trigram(tr, va, V, a)[0], trigram(tr, va, V, a)[1] / math.log(2)),
               "base 2")


def test_trigram_wrong_order_in_the_loss_only_is_named():
    def swapped_lookup(train, val, V, alpha):
        P, _ = trigram(train, val, V, alpha)
        return P, -P.log()[val[1:-1], val[:-2], val[2:]].mean()

    fails_with(ch04.check_trigram, swapped_lookup, "wrong pair order in the loss")


def test_trigram_bigram_and_counts_are_named():
    def bigram(train, val, V, alpha):
        N = torch.zeros(V, V, dtype=torch.float64)
        N.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), accumulate=True)
        P = ((N + alpha) / (N + alpha).sum(-1, keepdim=True))[None].expand(V, V, V)
        return P, -P.log()[val[:-2], val[1:-1], val[2:]].mean()

    def counts(train, val, V, alpha):
        N = torch.zeros(V, V, V, dtype=torch.float64)
        N.index_put_((train[:-2], train[1:-1], train[2:]), torch.ones(len(train) - 2, dtype=torch.float64),
                     accumulate=True)
        return N, torch.tensor(1.0)

    fails_with(ch04.check_trigram, bigram, "bigram")
    fails_with(ch04.check_trigram, counts, "returned counts")
    fails_with(ch04.check_trigram, lambda tr, va, V, a: trigram(tr, va, V, a)[0], "pair (P, loss)")


# ---------------------------------------------------------------- counting with a non-accumulating +=

def _named_when_wrong(check, fn, fragment):
    """``fn`` fails ``check`` on the visible inputs, and wherever it fails (on hidden inputs without
    a repeated pair it is right by luck) the message names ``fragment``."""
    failed_visible = False
    for offset in OFFSETS:
        with hidden_inputs(offset) if offset else _visible():
            try:
                check(fn)
            except CheckFailed as info:
                assert fragment in str(info), f"offset {offset}: expected {fragment!r} in: {info}"
                failed_visible |= offset == 0
    assert failed_visible, "the visible inputs do not expose the mistake"


def test_bigram_non_accumulating_plus_equals_is_named():
    def plus_equals(ids, V, alpha):
        N = torch.zeros(V, V, dtype=torch.float64)
        N[ids[:-1], ids[1:]] += 1           # the mistake: a repeated pair is counted once
        return (N + alpha) / (N + alpha).sum(1, keepdim=True)

    _named_when_wrong(ch04.check_bigram_probs, plus_equals, "does not accumulate")


def test_trigram_non_accumulating_plus_equals_is_named():
    def plus_equals(train, val, V, alpha):
        N = torch.zeros(V, V, V, dtype=torch.float64)
        N[train[:-2], train[1:-1], train[2:]] += 1
        P = (N + alpha) / (N + alpha).sum(-1, keepdim=True)
        return P, -P.log()[val[:-2], val[1:-1], val[2:]].mean()

    _named_when_wrong(ch04.check_trigram, plus_equals, "does not accumulate")


def test_cross_entropy_forbids_the_torch_loss_and_hint_gives_no_code():
    assert "torch.nn.functional.cross_entropy" in ch04.check_cross_entropy.forbidden
    hint = ch04._ce_hint("Expected target size (2, 9), got [2, 6]")
    assert hint and "cross_entropy" not in hint


def test_perplexity_message_names_no_vocabulary_size(capsys):
    ch04.check_perplexity(math.exp)
    assert "65" not in capsys.readouterr().out
