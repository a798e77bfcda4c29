"""Checks for chapter 08, looking inside a trained model.

Each check runs the learner's answer on hand-built or random attention weights (from a private
generator, so the notebook's random state is untouched), compares it with :mod:`minigpt.viz`,
and when it is wrong, tries the usual mistakes one by one to name the likely one.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..viz.analysis import attention_rollout, first_token_score, previous_token_score
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_previous_token_score", "check_previous_token_head", "check_rollout", "check_ablation_effect",
           "check_induction_head", "check_patch_position", "CheckFailed"]


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


# ---------------------------------------------------------------- causal exercises: 08.4 - 08.6
# The references below are computed here by other means than the learner's forward hooks: a head is
# switched off by zeroing its columns of c_proj's weight, a patch by running the blocks one by one.


def _small_model(seed: int, L: int, H: int, hs: int, V: int):
    """A random GPT in float64 with large weights and non-zero biases (so that a wrong slice or
    a forgotten bias changes the answer), made without touching the global random state."""
    from ..config import GPTConfig
    from ..model import GPT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeded(seed))
        m = GPT(GPTConfig(vocab_size=V, block_size=24, n_layer=L, n_head=H, n_embd=H * hs, dropout=0.0))
        g = torch.Generator().manual_seed(seeded(seed) + 1)
        with torch.no_grad():  # weights of std 1.5/sqrt(fan-in), embeddings of std 1: every input matters
            for name, p in m.named_parameters():
                if p.dim() == 1:
                    p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
                elif name.endswith(("wte.weight", "wpe.weight")):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
                else:
                    p.copy_(1.5 * torch.randn(p.shape, generator=g, dtype=p.dtype) / p.shape[1] ** 0.5)
    return m.double().eval()


def _ids(seed: int, B: int, T: int, V: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seeded(seed))
    return torch.randint(0, V, (B, T), generator=g)


@torch.no_grad()
def _loss(model, idx) -> float:
    logits = model(idx)[0]
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1)).item()


@torch.no_grad()
def _with_weights(model, edit) -> torch.nn.Module:
    m = copy.deepcopy(model)
    edit(m)
    return m


def _n_hooks(model) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _number(x, what: str) -> float:
    t = _as(x, what)
    if t.numel() != 1:
        fail(f"{what} should be one number, got shape {tuple(t.shape)}")
    return float(t)


def _ablation_cases():
    if not is_hidden():
        return [(3, 4, 4, 13, 8, 2, 10, (1, 2))]
    r = draw(91)
    cases = []
    for k in range(3):
        L, H = r.randint(2, 4), r.randint(2, 5)
        layer, head = r.randrange(L), r.randrange(H)
        if k == 0 and L > 1 and H > 1:  # one case with layer != head, so that a swap shows
            layer, head = r.choice([(a, b) for a in range(L) for b in range(H) if a != b and b < L and a < H]
                                   or [(layer, head)])
        cases.append((L, H, r.choice([4, 6, 8]), r.randint(7, 31), r.randint(5, 20), r.randint(1, 3),
                      r.randint(5, 20), (layer, head)))
    return cases


@forbids('minigpt.interpret.ablation.ablate')
def check_ablation_effect(fn: Callable) -> None:
    """Check ``fn(model, idx, layer, head)``: the change in mean next-token loss (nats) on ``idx``
    (B, T) when head ``head`` of layer ``layer`` outputs zeros (its slice of ``c_proj``'s input),
    ablated minus clean. Hidden runs use other random models, heads and token batches."""
    for n, (L, H, hs, V, seed, B, T, (layer, head)) in enumerate(_ablation_cases()):
        model = _small_model(100 + seed, L, H, hs, V)
        idx = _ids(200 + seed, B, T, V)
        C = H * hs

        def zero_in(l, cols):
            def edit(m):
                m.transformer.h[l].attn.c_proj.weight[:, cols] = 0
            return edit

        clean = _loss(model, idx)
        sl = slice(head * hs, (head + 1) * hs)
        ref = _loss(_with_weights(model, zero_in(layer, sl)), idx) - clean
        before = _n_hooks(model)
        got = _number(_call(fn, model, idx.clone(), layer, head, what="your function"), "your loss change")
        if _n_hooks(model) != before:
            fail("your hook is still registered after the function returned: keep the handle that "
                 "register_forward_pre_hook returns and call handle.remove() (in a finally: block)")
        if abs(got - ref) <= 1e-6 + 1e-5 * abs(ref):
            continue

        def out_rows(m):
            p = m.transformer.h[layer].attn.c_proj
            p.weight[sl] = 0
            if p.bias is not None:
                p.bias[sl] = 0
        variants = [
            (-ref, "the sign is flipped: return ablated loss minus clean loss (a head the model needs "
                   "gives a positive number)"),
            (ref + clean, "that is the ablated loss itself; return the change, ablated minus clean"),
            (0.0, "your ablation changed nothing: a forward pre-hook must return the edited input as a "
                  "tuple, e.g. (z,), and edit a copy (z = args[0].clone())"),
            (_loss(_with_weights(model, zero_in(layer, slice(None))), idx) - clean,
             f"you switched off all {H} heads of the layer; zero only columns head*hs:(head+1)*hs of "
             "c_proj's input, hs = n_embd // n_head"),
            (_loss(_with_weights(model, out_rows), idx) - clean,
             "you zeroed a slice of c_proj's *output* (a slice of the residual stream); a head's output is "
             "its slice of c_proj's *input*: use a forward pre-hook on attn.c_proj"),
        ]
        if head < L and layer < H and (layer, head) != (head, layer):
            variants.append((_loss(_with_weights(model, zero_in(head, slice(layer * hs, (layer + 1) * hs))), idx)
                             - clean, "layer and head are swapped: the head lives in model.transformer.h[layer]"))
        if head + 1 < H:
            nxt = slice((head + 1) * hs, (head + 2) * hs)
            variants.append((_loss(_with_weights(model, zero_in(layer, nxt)), idx) - clean,
                             "you zeroed the next head's slice; head h is columns h*hs to (h+1)*hs"))
        for value, message in variants:
            if abs(got - value) <= 1e-6 + 1e-5 * abs(value):
                fail(message)
        fail(f"your loss change differs from the reference by {abs(got - ref):.3g} nats (case {n + 1}, "
             f"{L} layers x {H} heads, d_model {C}): zero head {head}'s slice of layer {layer}'s "
             "c_proj input and compare the mean next-token loss with the clean run's")
    passed("the loss change matches an independent computation (the head's columns of W_O set to zero)")


def _induction_reference(w: torch.Tensor) -> torch.Tensor:
    """Induction score by loops: (n, L, H, T, T) of [r, r] inputs -> (L, H)."""
    n_seq, L, H, T, _ = w.shape
    n = T // 2
    out = torch.zeros(L, H, dtype=torch.float64)
    for q in range(n, T):
        out += w[:, :, :, q, q - n + 1].mean(0)
    return out / (T - n)


def _pattern(T: int, key) -> torch.Tensor:
    """(T, T) attention putting all weight of query q on key(q) (or on itself where key(q) < 0)."""
    p = torch.zeros(T, T, dtype=torch.float64)
    for q in range(T):
        k = key(q)
        p[q, k if 0 <= k <= q else q] = 1
    return p


def _induction_weights(seed: int, n_seq: int, L: int, H: int, half: int, ind_at, prev_at, dup_at):
    """Random causal weights (n_seq, L, H, 2·half, 2·half) with an induction head, a stronger
    previous-token head and a duplicate-token head (attends to the earlier copy of the same token)."""
    T = 2 * half
    w = _causal_random((n_seq, L, H, T, T), seed=seed)
    for at, key, share in [(ind_at, lambda q: q - half + 1 if q >= half else -1, 0.6),
                           (prev_at, lambda q: q - 1, 0.9), (dup_at, lambda q: q - half if q >= half else -1, 0.8)]:
        w[:, at[0], at[1]] = share * _pattern(T, key) + (1 - share) * w[:, at[0], at[1]]
    return w


@forbids('minigpt.interpret.induction.induction_scores', 'minigpt.viz.analysis.induction_score',
         'minigpt.viz.analysis.induction_scores')
def check_induction_head(fn: Callable) -> None:
    """Check ``fn(weights)``: for attention weights (n_seq, n_layer, n_head, T, T) of sequences made
    of a random half repeated twice (half = T // 2), the ``(layer, head)`` with the highest induction
    score (mean weight from query q >= half to key q - half + 1). The weights are synthetic, with a
    planted induction head and two decoys: a stronger previous-token head and a duplicate-token head."""
    if is_hidden():
        r = draw(95)
        cases = []
        for _ in range(3):
            L, H = r.randint(2, 4), r.randint(3, 6)
            heads = r.sample([(a, b) for a in range(L) for b in range(H)], 3)
            if heads[0][0] == heads[0][1] and heads[0][1] < L:  # prefer a planted head where a swap shows
                heads[0] = next(((a, b) for a in range(1, L) for b in range(H) if a != b and (a, b) not in heads),
                                heads[0])
            cases.append((r.randint(0, 10_000), r.randint(2, 4), L, H, r.randint(4, 15), *heads))
    else:
        cases = [(95, 3, 2, 4, 8, (1, 2), (0, 1), (1, 3))]
    for seed, n_seq, L, H, half, ind_at, prev_at, dup_at in cases:
        w = _induction_weights(seed, n_seq, L, H, half, ind_at, prev_at, dup_at)
        s = _induction_reference(w)
        best = divmod(int(s.argmax()), H)
        assert best == tuple(ind_at), (best, ind_at)  # the planted head wins by construction
        answer = _call(fn, w.clone(), what="your induction_head")
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            fail(f"return a pair (layer, head), e.g. (1, 3); got {answer!r}")
        try:
            got = tuple(int(a) for a in answer)
        except (TypeError, ValueError):
            fail(f"layer and head should be whole numbers, got {answer!r}")
        if got == best:
            continue
        if got == (best[1], best[0]):
            fail("close: you swapped them — return (layer, head), not (head, layer)")
        if got == tuple(prev_at):
            fail("that is a previous-token head (it attends to q-1); an induction head attends to the "
                 "token *after* the earlier copy of the current token: key q - half + 1")
        if got == tuple(dup_at):
            fail("off by one: that head attends to the earlier copy of the *same* token (key q - half); "
                 "the induction head attends to the token after it, q - half + 1")
        if not (0 <= got[0] < L and 0 <= got[1] < H):
            fail(f"{got} is not a head of these weights: layers 0..{L - 1}, heads 0..{H - 1}")
        fail(f"layer {got[0]}, head {got[1]} scores {s[got].item():.2f}, another head scores "
             f"{s.max().item():.2f}: average over the sequences and over the queries of the second "
             "half only (q = half .. T-1), then take the largest")
    passed("induction_head finds the planted induction head (not the previous-token or duplicate-token decoy)")


@torch.no_grad()
def _patch_reference(model, clean, corrupted, layer: int, positions, target: int, into: str = "corrupted") -> float:
    """Log-prob of ``target`` at the last position when the residual stream entering block ``layer``
    at ``positions`` comes from the clean run: the blocks run one by one, no hooks."""
    tr = model.transformer

    def stream(idx):
        T = idx.shape[1]
        x = tr.wte(idx) + tr.wpe(torch.arange(T))
        out = []
        for block in tr.h:
            out.append(x)
            x, _ = block(x)
        out.append(x)
        return out

    src, dst = (clean, corrupted) if into == "corrupted" else (corrupted, clean)
    saved = stream(src)[layer]
    T = dst.shape[1]
    x = tr.wte(dst) + tr.wpe(torch.arange(T))
    for l, block in enumerate(tr.h):
        if l == layer:
            x = x.clone()
            x[:, positions] = saved[:, positions]
        x, _ = block(x)
    if layer == len(tr.h):
        x = x.clone()
        x[:, positions] = saved[:, positions]
    logits = model.lm_head(tr.ln_f(x))
    return torch.log_softmax(logits[:, -1], -1)[:, target].mean().item()


def _patch_case(L, H, hs, V, seed, B, T, layer, pos):
    """One case of check_patch_position: model, prompts, target, the reference and the mistakes."""
    model = _small_model(300 + seed, L, H, hs, V)
    clean = _ids(400 + seed, B, T, V)
    corrupted = clean.clone()
    corrupted[:, pos] = (clean[:, pos] + 1 + _ids(500 + seed, B, 1, V - 1)[:, 0]) % V  # another token there
    with torch.no_grad():
        target = int(model(clean)[0][0, -1].argsort()[V // 2])  # a middling token: its log-prob is not saturated
    ref = _patch_reference(model, clean, corrupted, layer, [pos], target)
    p = lambda **k: _patch_reference(model, clean, corrupted, k.get("layer", layer), k.get("positions", [pos]),  # noqa: E731
                                     target, k.get("into", "corrupted"))
    variants = [
        (p(layer=0, positions=[]), "your patch changed nothing: that is the corrupted run; the pre-hook "
                                   "must return the edited input, e.g. (x,), with the clean values at `position` "
                                   "(an earlier position changes nothing either: it saw no corrupted token)"),
        (p(layer=0, positions=slice(None)), "that is the clean run's value: you patched every position (or "
                                            "ran the clean prompt); replace only x[:, position]"),
        (p(positions=slice(None)), "you patched every position; replace only x[:, position]"),
        (p(layer=layer + 1), "one layer too late: patch the stream *entering* block `layer` (a forward pre-hook "
                             "on model.transformer.h[layer]), not its output"),
        (p(into="clean"), "the direction is reversed: run the *corrupted* prompt with the *clean* "
                          "activation patched in"),
        (math.exp(ref), "that is a probability; return the log-probability (log_softmax)"),
        (p(positions=[pos + 1]), "off by one position: patch x[:, position], the position itself"),
    ]
    return model, clean, corrupted, target, ref, variants


_TRIES: list[int] = []  # attempts per case (for the tests' timing)


def _patch_cases():
    if not is_hidden():
        return [(3, 4, 4, 11, 31, 2, 9, 1, 5)]
    r = draw(97)
    cases = []
    for _ in range(3):
        L, T = r.randint(3, 4), r.randint(6, 14)  # layer 1..L-2: at layer 0 a one-position patch IS the clean run
        cases.append((L, r.randint(2, 4), r.choice([4, 8]), r.randint(7, 23), r.randint(0, 999), r.randint(1, 3), T,
                      r.randint(1, L - 2), r.randint(1, T - 3)))  # layer + 1 is a block: a late patch shows
    return cases


@forbids('minigpt.interpret.patching.patched', 'minigpt.interpret.patching.patch_residual',
         'minigpt.interpret.patching.patch_heads')
def check_patch_position(fn: Callable) -> None:
    """Check ``fn(model, clean, corrupted, layer, position, target)``: the mean log-probability of
    ``target`` at the last position of the corrupted run (B, T) when the residual stream entering
    block ``layer``, at ``position`` only, is replaced by the clean run's."""
    for n, (L, H, hs, V, seed, B, T, layer, pos) in enumerate(_patch_cases()):
        for attempt in range(10):  # a case where every mistake below gives another number
            model, clean, corrupted, target, ref, variants = _patch_case(L, H, hs, V, seed + 1000 * attempt, B, T,
                                                                          layer, pos)
            if all(abs(v - ref) > 1e-3 for v, _ in variants):
                break
        _TRIES.append(attempt)
        before = _n_hooks(model)
        got = _number(_call(fn, model, clean.clone(), corrupted.clone(), layer, pos, target, what="your function"),
                      "your metric")
        if _n_hooks(model) != before:
            fail("your hook is still registered after the function returned: keep the handle that "
                 "register_forward_pre_hook returns and call handle.remove() (in a finally: block)")
        if abs(got - ref) <= 1e-6 + 1e-5 * abs(ref):
            continue
        for value, message in variants:
            if abs(got - value) <= 1e-6 + 1e-5 * abs(value):
                fail(message)
        fail(f"your metric differs from the reference by {abs(got - ref):.3g} (case {n + 1}: {L} layers, "
             f"T = {T}, layer {layer}, position {pos}): the mean over the batch of log_softmax(logits[:, -1])"
             "[:, target] of the corrupted run with the clean stream at that one position")
    passed("the patched metric matches an independent run that feeds the blocks one by one")
