"""Checks for chapter 08, looking inside a trained model.

Each check runs the learner's answer on hand-built or random attention weights (from a private
generator, so the notebook's random state is untouched), compares it with :mod:`minigpt.viz`,
and when it is wrong, tries the usual mistakes one by one to name the likely one.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..viz.analysis import attention_rollout, first_token_score, previous_token_score
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_previous_token_score", "check_previous_token_head", "check_rollout", "CheckFailed"]


def _causal_random(shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seeded(seed))
    T = shape[-1]
    s = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    return torch.softmax(s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")), -1)


def _call(fn: Callable, *args, what: str):
    with torch.random.fork_rng(devices=[]):
        try:
            return fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - any crash becomes a friendly message
            fail(f"{what} raised {type(e).__name__}: {e}")


def _as(x, what: str) -> torch.Tensor:
    try:
        return torch.as_tensor(x, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError):
        fail(f"{what} should be a tensor of numbers, got {type(x).__name__}")
        raise  # unreachable


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-6, rtol=1e-5))


@forbids('minigpt.viz.analysis.previous_token_score')
def check_previous_token_score(fn: Callable) -> None:
    """Check ``fn(weights)``: (n_layer, n_head, T, T) -> (n_layer, n_head), the mean over queries
    i = 1..T-1 of ``weights[..., i, i-1]``."""
    L, H, T = 3, 4, 9
    if is_hidden():
        r = draw(81)
        L, H, T = r.randint(2, 5), r.choice([1, 3, 5]), r.choice([2, r.randint(3, 40)])
    w = _causal_random((L, H, T, T), seed=8)
    prev = torch.zeros(T, T, dtype=torch.float64)
    prev[0, 0] = 1
    prev[torch.arange(1, T), torch.arange(T - 1)] = 1
    pl, ph = (2, 1) if not is_hidden() else (draw(82).randrange(L), draw(83).randrange(H))
    w[pl, ph] = prev  # a perfect previous-token head: it must score exactly 1
    got = _as(_call(fn, w.clone(), what="your function"), "your score")
    ref = previous_token_score(w)
    if _same(got, ref):
        passed("previous-token score matches minigpt.viz.previous_token_score (a perfect head scores 1)")
        return
    if got.shape != ref.shape:
        if got.numel() == 1:
            fail("you returned one number; return one score per head, shape (n_layer, n_head): "
                 "average over the queries (the last-but-one dimension) only")
        fail(f"your score has shape {tuple(got.shape)}, expected {tuple(ref.shape)} = (n_layer, n_head)")
    diag = lambda off: torch.diagonal(w, offset=off, dim1=-2, dim2=-1)  # noqa: E731
    variants = [
        (torch.cat([w[..., :1, 0], diag(-1)], -1).mean(-1),
         "you counted query 0 too (its only choice is itself): average over queries 1..T-1"),
        (diag(-1).sum(-1), "you summed over the queries; take the mean, so a perfect head scores 1"),
        (diag(0).mean(-1), "you read the diagonal w[i, i] (a token attending to itself); the previous "
                           "token is w[i, i-1]: torch.diagonal(w, offset=-1, dim1=-2, dim2=-1)"),
        (diag(0)[..., 1:].mean(-1), "you read the diagonal w[i, i] (a token attending to itself); the "
                                    "previous token is w[i, i-1]: offset=-1"),
        (w[..., 1:, 0].mean(-1), "that is the weight on the first token; the previous token of query i is i-1"),
        (diag(1).mean(-1), "offset=+1 reads w[i, i+1], the *next* token, which the causal mask hides (all "
                           "zeros); use offset=-1"),
    ]
    for variant, message in variants:
        if _same(got, variant):
            fail(message)
    if _same(got.T, ref) if got.dim() == 2 else False:
        fail("layers and heads are swapped: keep the (n_layer, n_head) order of the weights")
    worst = (got - ref).abs().max().item()
    fail(f"your scores differ from the reference (largest difference {worst:.3g}); a perfect "
         f"previous-token head (layer {pl}, head {ph}) should score 1 and scored {got[pl, ph].item():.3f}")


@forbids('minigpt.viz.analysis.previous_token_score')
def check_previous_token_head(answer, weights: torch.Tensor) -> None:
    """Check ``answer == (layer, head)``: the head of ``weights`` (n_layer, n_head, T, T) with the
    highest previous-token score. ``answer`` may be that pair or a function ``windows -> (layer,
    head)`` of weights (n_windows, n_layer, n_head, T, T); hidden runs call the function on other
    weights, with a planted previous-token head and a first-token sink as a distractor."""
    if callable(answer):
        fn = answer
        if is_hidden():  # two weight sets, with the previous-token head planted at two different heads
            r = draw(84)
            # H >= 3, so there are always 3 heads with layer != head (a swapped answer then fails)
            L, H, T, n = r.randint(2, 5), r.randint(3, 6), r.randint(6, 24), r.randint(2, 4)
            heads = r.sample([(layer, head) for layer in range(L) for head in range(H) if layer != head], 3)
            for planted in heads[:2]:
                w = _planted(n, L, H, T, planted, heads[2])
                _check_head(_call(fn, w.clone(), what="your previous_token_head"), w.mean(0))
            passed("previous_token_head finds the planted previous-token head (and not the first-token sink)")
            return
        weights = torch.as_tensor(weights, dtype=torch.float64)
        answer = _call(fn, weights[None].clone(), what="your previous_token_head")
    _check_head(answer, weights)


def _planted(n: int, L: int, H: int, T: int, prev_at: tuple[int, int], sink_at: tuple[int, int]) -> torch.Tensor:
    """Random causal weights (n, L, H, T, T) with a previous-token head and a first-token sink."""
    w = _causal_random((n, L, H, T, T), seed=84 + 7 * prev_at[0] + prev_at[1])
    prev = torch.zeros(T, T, dtype=torch.float64)
    prev[0, 0] = 1
    prev[torch.arange(1, T), torch.arange(T - 1)] = 1
    sink = torch.zeros(T, T, dtype=torch.float64)
    sink[:, 0] = 1
    w[:, prev_at[0], prev_at[1]] = 0.7 * prev + 0.3 * w[:, prev_at[0], prev_at[1]]
    w[:, sink_at[0], sink_at[1]] = 0.8 * sink + 0.2 * w[:, sink_at[0], sink_at[1]]
    return w


def _check_head(answer, weights) -> None:
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        fail(f"answer with a pair (layer, head), e.g. (1, 3); got {answer!r}")
    try:
        layer, head = (int(a) for a in answer)
    except (TypeError, ValueError):
        fail(f"layer and head should be whole numbers, got {answer!r}")
    w = torch.as_tensor(weights, dtype=torch.float64)
    L, H = w.shape[:2]
    s = previous_token_score(w)
    best = divmod(int(s.argmax()), H)
    if (layer, head) == best:
        passed(f"layer {layer}, head {head} has the highest previous-token score ({s[layer, head].item():.2f})")
        return
    if (head, layer) == best:
        fail(f"close: you swapped them — the answer is (layer, head) = {best}, not (head, layer)")
    if not (0 <= layer < L and 0 <= head < H):
        fail(f"({layer}, {head}) is not a head of this model: layers 0..{L - 1}, heads 0..{H - 1}")
    sink = divmod(int(first_token_score(w).argmax()), H)
    if (layer, head) == sink:
        fail(f"layer {layer}, head {head} attends mostly to the *first* token (a sink); look for the head "
             "whose weight sits just below the diagonal, w[i, i-1]")
    fail(f"layer {layer}, head {head} scores {s[layer, head].item():.2f}, but another head scores "
         f"{s.max().item():.2f}: compute the score for every head and take the largest")


@forbids('minigpt.viz.analysis.attention_rollout')
def check_rollout(fn: Callable) -> None:
    """Check ``fn(weights)``: attention rollout of (n_layer, n_head, T, T) weights — average the
    heads, Â = 0.5·A + 0.5·I, multiply R = Â_l · R_(l-1) — returning (n_layer, T, T) or the last (T, T)."""
    shape = (3, 2, 6, 6)
    if is_hidden():
        r = draw(88)
        T = r.randint(2, 20)  # T > 1 and two layers at least, or every mistake gives the same result
        shape = (r.randint(2, 5), r.choice([1, 3, 4]), T, T)
    w = _causal_random(shape, seed=88)
    got = _as(_call(fn, w.clone(), what="your rollout"), "your rollout")
    ref = attention_rollout(w)
    if _same(got, ref) or _same(got, ref[-1]):
        passed("rollout matches minigpt.viz.attention_rollout: rows sum to 1, causal, composed over layers")
        return
    if got.shape not in (ref.shape, ref[-1].shape):
        fail(f"your rollout has shape {tuple(got.shape)}; expected (T, T) = {tuple(ref[-1].shape)} "
             f"(or one per layer, {tuple(ref.shape)})")
    last = got if got.dim() == 2 else got[-1]
    eye = torch.eye(shape[-1], dtype=torch.float64)
    a = w.mean(1)
    hat = 0.5 * a + 0.5 * eye

    def chain(mats, left=True):
        r = eye
        for m in mats:
            r = m @ r if left else r @ m
        return r

    variants = [
        (chain(a), "no residual: the skip connection carries each token's own vector too — use "
                   "0.5 * A + 0.5 * I (I = torch.eye(T)) for each layer"),
        (chain(hat, left=False), "wrong order: the later layer acts on what the earlier ones produced, "
                                 "R = Â_l @ R (new layer on the left)"),
        (chain(0.5 * w.sum(1) + 0.5 * eye), "you summed the heads; average them (mean over dim 1) so rows still sum to 1"),
        (hat[-1], "that is only the last layer; multiply the layers together, first to last"),
    ]
    for variant, message in variants:
        if _same(last, variant):
            fail(message)
    sums = last.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        fail("the rows of your rollout do not sum to 1: each Â = 0.5·A + 0.5·I has rows summing to 1, "
             "and so does a product of such matrices")
    worst = (last - ref[-1]).abs().max().item()
    fail(f"your rollout differs from the reference (largest difference {worst:.3g})")
