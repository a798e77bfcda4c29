"""The transfer exercises of chapter 04 (04.3 cross-entropy that skips -100 targets, 04.7 sliding windows,
04.8 a trigram model): the honest
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


# ---------------------------------------------------------------- 04.3 cross-entropy that skips -100

def ce(logits, targets, real=lambda t: t != -100, logp=lambda z: torch.log_softmax(z, -1), count=None):
    """The honest answer, with a planted mistake where an argument is changed."""
    mask = real(targets)                                                      # (B, T)
    nll = -logp(logits).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)
    return (nll * mask).sum() / (mask.sum() if count is None else count(mask))


def ce_by_indexing(logits, targets):  # another honest answer: select the real positions, then look up
    real = targets != -100
    return -torch.log_softmax(logits[real], -1)[torch.arange(int(real.sum())), targets[real]].mean()


def test_cross_entropy_honest_answers_pass(capsys):
    passes(ch04.check_cross_entropy, ce, capsys)
    passes(ch04.check_cross_entropy, ce_by_indexing, capsys)
    passes(ch04.check_cross_entropy, lambda lo, t: float(ce(lo.double(), t)), capsys)


def test_cross_entropy_mistakes_are_named():
    check = ch04.check_cross_entropy

    def as_index(lo, t):  # -100 used as a token index: a crash for V < 100, token V - 100 otherwise
        B, T, _ = lo.shape
        return -torch.log_softmax(lo, -1)[torch.arange(B)[:, None], torch.arange(T), t].mean()

    def row_means(lo, t):
        real = t != -100
        nll = -torch.log_softmax(lo, -1).gather(-1, t.clamp(min=0)[..., None]).squeeze(-1)
        return ((nll * real).sum(1) / real.sum(1)).nan_to_num().sum() / real.any(1).sum()

    fails_with(check, lambda lo, t: ce(lo, t, count=lambda m: m.numel()), "all B×T positions")
    fails_with(check, lambda lo, t: ce(lo, t, real=lambda t: torch.ones_like(t, dtype=torch.bool)), "scored (as token 0)")
    fails_with(check, as_index, "not a token id")
    fails_with(check, lambda lo, t: -torch.log_softmax(lo, -1).gather(-1, t[..., None]).mean(), "not a token id")
    fails_with(check, lambda lo, t: ce(lo, t, real=lambda t: t > 0), "equal to 0")
    fails_with(check, row_means, "each sequence")
    fails_with(check, lambda lo, t: ce(lo, t, count=lambda m: m.sum().clamp(min=1)), "0/0 = nan")
    fails_with(check, lambda lo, t: ce(lo, t, count=lambda m: 1), "summed")
    fails_with(check, lambda lo, t: -ce(lo, t), "sign")
    fails_with(check, lambda lo, t: ce(lo, t, logp=lambda z: torch.log_softmax(z, 1)), "wrong axis")
    fails_with(check, lambda lo, t: ce(lo, t, logp=lambda z: z), "raw logits")
    fails_with(check, lambda lo, t: ce(lo, t, logp=lambda z: torch.softmax(z, -1)), "average of -log p")
    fails_with(check, lambda lo, t: ce(lo, t) / math.log(2), "base 2")


def test_cross_entropy_refuses_the_torch_loss_and_its_hints_give_no_code():
    assert {"torch.nn.functional.cross_entropy", "torch.nn.NLLLoss"} <= set(ch04.check_cross_entropy.forbidden)
    fails_with(ch04.check_cross_entropy,
               lambda lo, t: torch.nn.functional.cross_entropy(lo.view(-1, lo.size(-1)), t.view(-1)),
               "write it by hand", "torch.nn.functional.cross_entropy")
    for error in ("Expected target size (2, 9), got [2, 6]", "index -100 is out of bounds for dimension 2 with size 9"):
        hint = ch04._ce_hint(error)
        assert hint and "cross_entropy" not in hint and "clamp" not in hint


def test_cross_entropy_hidden_cases_cover_padding_edge_cases_and_a_large_vocabulary():
    seen = []

    def spy(lo, t):
        seen.append((tuple(lo.shape), t.clone()))
        return ce(lo, t)

    for offset in range(1, 25):
        with hidden_inputs(offset):
            ch04.check_cross_entropy(spy)
    real = [(t != -100) for _, t in seen]
    assert any(not r.any() for r in real)                                   # nothing to average: nan
    assert any(r.all() for r in real)                                       # no padding at all
    assert any(r.any() and (~r.any(1)).any() for r in real)                 # a whole row of padding
    assert any(shape[-1] > 100 for shape, _ in seen)                        # -100 would wrap, not crash
    assert all((t == 0).any() for t, r in zip((t for _, t in seen), real) if r.any())  # token 0 is real
    assert len({shape for shape, _ in seen}) > 40                           # they vary with the secret


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




def test_perplexity_message_names_no_vocabulary_size(capsys):
    ch04.check_perplexity(math.exp)
    assert "65" not in capsys.readouterr().out
