"""Checks for chapter 04, the language-model objective.

Each check calls the learner's function on fresh random inputs (drawn from a private generator,
so the notebook's own random state is untouched), compares it with :mod:`minigpt`, and when the
answer is wrong, tries the usual mistakes one by one to say which one it most likely is.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import GPTConfig
from ..data import iter_eval_windows
from ..model import GPT
from ..objective import sequence_logprob, shift_for_lm
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_sequence_logprob", "check_shift", "check_cross_entropy", "check_uniform_loss",
           "check_perplexity", "check_bits_per_char", "check_bigram_probs", "check_windows", "check_trigram",
           "CheckFailed"]


def _call(fn: Callable, *args, what: str = "your function", hint: Callable[[str], str] = lambda e: ""):
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            fail(f"{what} raised {type(e).__name__}: {e}{hint(str(e))}")
    return out


def _number(x, what: str) -> float:
    if isinstance(x, torch.Tensor):
        if x.numel() != 1:
            fail(f"{what} should be a single number, got a tensor of shape {tuple(x.shape)}")
        return float(x.item())
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        try:
            return float(x)  # numpy scalars
        except (TypeError, ValueError):
            fail(f"{what} should be a number, got {type(x).__name__}")
    return float(x)


def _close(a: float, b: float, tol: float = 1e-4) -> bool:
    return math.isfinite(a) and abs(a - b) <= tol * max(1.0, abs(b))


def _name_mistake(got: float, ref: float, candidates, generic: str, tol: float = 1e-4) -> None:
    for value, message in candidates:
        if value is not None and _close(got, float(value), tol):
            fail(message)
    fail(f"{generic}: you got {got:.4f}, expected {ref:.4f}")


def _toy_model(seed: int = 17) -> GPT:
    """A small GPT with large random weights, so its conditionals are far from uniform."""
    cfg = GPTConfig(vocab_size=11, block_size=12, n_layer=1, n_head=2, n_embd=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeded(seed))
        model = GPT(cfg).eval()
        with torch.no_grad():
            model.transformer.wte.weight.normal_(0.0, 1.0)
    return model


@forbids('minigpt.objective.sequence_logprob', 'minigpt.objective.token_logprobs')
def check_sequence_logprob(fn: Callable) -> None:
    """Check ``fn(model, ids) -> float``: log P(w_2 … w_n | w_1) by the chain rule, the sum over
    positions of the log-probability the model gives each next token (``ids`` a 1-D tensor)."""
    model = _toy_model()
    g = torch.Generator().manual_seed(seeded(23))
    n = draw(23).choice([3, 12, draw(24).randint(4, 11)]) if is_hidden() else 9  # n > 2: sum != mean
    ids = torch.randint(0, model.config.vocab_size, (n,), generator=g)
    ref = float(sequence_logprob(model, ids))
    with torch.no_grad():
        got = _number(_call(fn, model, ids.clone(), what="your sequence_logprob"), "the log-probability")
        if _close(got, ref):
            passed(f"log P(sequence) = {ref:.4f} matches minigpt.sequence_logprob")
            return
        logits = model(ids[None])[0][0].double()  # (T, V)
        logp = torch.log_softmax(logits, -1)
        nxt, cur = ids[1:], ids[:-1]
        r = torch.arange(len(ids) - 1)
        _name_mistake(got, ref, [
            (logp[r, cur].sum(), "off-by-one: the logits at position i predict token i+1, so score "
                                 "ids[i+1] with logits[i] (and there is nothing to score for ids[0])"),
            (logp[torch.arange(len(ids)), ids].sum(), "off-by-one: the logits at position i predict token "
                                                      "i+1, not token i; score ids[1:] with logits[:-1]"),
            (logp[r + 1, nxt].sum(), "off-by-one: the logits at position i predict token i+1; score "
                                     "ids[i+1] with logits[i], not logits[i+1]"),
            (math.exp(ref), "you returned the probability (a product of probabilities); return its log, "
                            "the sum of the log-probabilities, which does not underflow"),
            (-ref, "sign: a log-probability is ≤ 0; you returned the negative log-likelihood"),
            (ref / (len(ids) - 1), "you averaged; the chain rule multiplies probabilities, so the "
                                   "log-probabilities are summed, not averaged"),
            (-ref / (len(ids) - 1), "you computed the loss (mean negative log-likelihood); this asks for "
                                    "the total log-probability, the sum of the log-conditionals"),
            (logits[r, nxt].sum(), "you summed raw logits; turn them into log-probabilities first with "
                                   "torch.log_softmax(logits, dim=-1)"),
            (torch.softmax(logits, -1)[r, nxt].sum(), "you summed probabilities; the chain rule multiplies "
                                                      "them, so sum their logs (log_softmax)"),
            (ref / math.log(2), "you used log base 2; use the natural log (nats), as log_softmax does"),
        ], "your log-probability differs from minigpt.sequence_logprob")


@forbids('minigpt.objective.shift_for_lm')
def check_shift(fn: Callable) -> None:
    """Check ``fn(ids) -> (x, y)`` for ids (B, T+1): inputs x = ids[:, :-1], targets y = ids[:, 1:]."""
    g = torch.Generator().manual_seed(seeded(29))
    shape = (draw(29).randint(1, 5), draw(30).randint(2, 20)) if is_hidden() else (3, 9)
    ids = torch.randint(0, 50, shape, generator=g)
    out = _call(fn, ids.clone(), what="your shift function")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail("return a pair (x, y): the inputs and the targets")
    x, y = (torch.as_tensor(t) for t in out)
    rx, ry = shift_for_lm(ids)
    if x.shape == rx.shape and y.shape == ry.shape and torch.equal(x, rx) and torch.equal(y, ry):
        passed("inputs and targets: y is x shifted left by one token")
        return
    if torch.equal(x, ids) and torch.equal(y, ids):
        fail("no shift: the targets equal the inputs, so the model would learn to copy its input. The "
             "target at position i is the NEXT token: x = ids[:, :-1], y = ids[:, 1:]")
    if x.shape == ry.shape and torch.equal(x, ry) and torch.equal(y, rx):
        fail("off-by-one target shift in the wrong direction: you swapped them. The input is "
             "ids[:, :-1] and the target is the next token, ids[:, 1:]")
    if x.shape == rx.shape and torch.equal(x, rx) and torch.equal(y, rx):
        fail("off-by-one target shift missing: y equals x. Targets are ids[:, 1:]")
    if x.dim() == 1 or y.dim() == 1 or x.shape[0] != ids.shape[0]:
        fail(f"shift along the time dimension (dim 1) of the (B, T+1) batch; got shapes "
             f"{tuple(x.shape)} and {tuple(y.shape)}, expected {tuple(rx.shape)}")
    if x.shape != rx.shape or y.shape != ry.shape:
        fail(f"x and y should both have shape {tuple(rx.shape)} (T = T+1 - 1), got {tuple(x.shape)} and "
             f"{tuple(y.shape)}: x = ids[:, :-1], y = ids[:, 1:]")
    fail("your (x, y) differ from x = ids[:, :-1], y = ids[:, 1:]")


IGNORE = -100  # the target of a position the loss skips (padding, a prompt): PyTorch's default ignore_index


def _ce_hint(error: str) -> str:
    e = error.lower()
    if "-100" in e or "out of bounds" in e or "non-negative" in e:
        return (" — -100 is not a token id, so it cannot be looked up: keep a mask of the real targets, look up "
                "a valid id in place of each -100, and leave those positions out of the mean")
    if "target" in e and ("size" in e or "shape" in e):
        return (" — check the shapes: logits are (B, T, V) and targets (B, T); the log-probability of each "
                "target is picked from the last axis (dim=-1) of the log-softmax, one per (b, t) position")
    return ""


def _ce_batches(g: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, targets) batches with targets of -100 where a position is skipped. Every batch that has
    real targets has one equal to 0 (a real token), and rows with different numbers of real targets.
    Visible: one batch padded at the end of one row and at the start (a prompt) of the other, and one
    batch with no real target at all. Hidden: other shapes, a vocabulary larger than 100 (where -100
    used as an index does not crash), a whole row of padding, no padding, and again no real target."""

    def batch(B: int, T: int, V: int, skipped: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.randn(B, T, V, generator=g) * 2
        targets = torch.randint(0, V, (B, T), generator=g)
        for b, (start, end) in enumerate(skipped):  # row b: real targets at positions start … end-1
            targets[b, :start] = IGNORE
            targets[b, end:] = IGNORE
            if end > start and b == 0:
                targets[b, start] = 0
        return logits, targets

    if not is_hidden():
        return [batch(2, 7, 9, [(0, 4), (2, 7)]), batch(2, 3, 5, [(3, 3), (3, 3)])]
    r = draw(31)
    B, T = r.randint(2, 4), r.randint(4, 12)
    rows = [(r.randint(0, 1), r.randint(T - 2, T)) for _ in range(B)]
    rows[0], rows[1] = (0, T - 3), (2, T)  # two rows with different numbers of real targets
    V = r.choice([r.randint(2, 40), r.randint(101, 160)])
    B2, T2, V2 = r.randint(2, 3), r.randint(3, 9), r.randint(101, 140)
    B3, T3, V3 = r.randint(1, 3), r.randint(2, 10), r.randint(2, 60)
    B4, T4, V4 = r.randint(1, 4), r.randint(1, 8), r.randint(2, 150)
    return [batch(B, T, V, rows),
            batch(B2, T2, V2, [(1, T2), (0, 0)] + [(0, T2)] * (B2 - 2)),  # row 1 all padding
            batch(B3, T3, V3, [(0, T3)] * B3),                              # no padding
            batch(B4, T4, V4, [(0, 0)] * B4)]                               # no real target at all


@forbids('minigpt.objective.lm_loss', 'torch.nn.functional.cross_entropy',
         'torch.nn.functional.nll_loss', 'torch.nn.CrossEntropyLoss', 'torch.nn.NLLLoss')
def check_cross_entropy(fn: Callable) -> None:
    """Check ``fn(logits, targets)``: the mean of -log softmax(logits)[target] over the positions whose
    target is not -100, logits (B, T, V), targets (B, T); nan when every target is -100 (nothing to
    average). Compared with ``F.cross_entropy(..., ignore_index=-100)``."""
    g = torch.Generator().manual_seed(seeded(31))
    for logits, targets in _ce_batches(g):
        B, T, V = logits.shape
        ref = float(F.cross_entropy(logits.reshape(-1, V).double(), targets.reshape(-1), ignore_index=IGNORE))
        got = _number(_call(fn, logits.clone(), targets.clone(), what="your cross-entropy", hint=_ce_hint),
                      "the loss")
        if math.isnan(ref):
            if math.isnan(got):
                continue
            fail("every target of this batch is -100: there is nothing to average, so the loss is 0/0 = nan (as "
                 "F.cross_entropy gives); you returned a number. Divide the sum over the real targets by their count")
        if _close(got, ref):
            continue
        if math.isnan(got):
            fail("your loss is nan on a batch that has real targets: a -100 target (or an empty row) reached the "
                 "mean; average over the real targets only, all rows together")
        real = targets != IGNORE                                               # (B, T)
        logp_all = torch.log_softmax(logits.double(), -1)                      # (B, T, V)
        logp = logp_all.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)  # (B, T); -100 reads token 0
        n = real.sum()
        candidates = [
            (-(logp * real).sum() / real.numel(), "you divided by all B×T positions: the -100 positions must not "
                                                  "count; divide by the number of real targets"),
            (-logp.mean(), "the -100 positions were scored (as token 0): leave every position whose target is "
                           "-100 out of the sum and out of the count"),
            (-logp[targets > 0].mean(), "you left out the targets equal to 0 as well: 0 is a real token id; only "
                                        "-100 marks a position to skip"),
            (-torch.stack([logp[b][real[b]].mean() for b in range(B) if real[b].any()]).mean(),
             "you averaged each sequence's targets first, then the sequences: a row with few real targets then "
             "weighs as much as a full one. Average over all real targets of the batch together"),
            (-(logp * real).sum(), "you summed; the loss is the mean over the real targets"),
            ((logp * real).sum() / n, "sign: the loss is the NEGATIVE log-likelihood, -log p (a positive number)"),
            (-(torch.log_softmax(logits.double(), 1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
               * real).sum() / n, "softmax over the wrong axis: normalize over the vocabulary (dim=-1), not over time"),
            (-(logits.double().gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1) * real).sum() / n,
             "you used raw logits; take log_softmax(logits, dim=-1) first"),
            (-(logp.exp() * real).sum() / n, "you averaged -p; the loss is the average of -log p"),
            (-torch.log((logp.exp() * real).sum() / n), "you took the log of the mean probability; the loss is the "
                                                        "mean of -log p"),
            (-(logp * real).sum() / n / math.log(2), "you used log base 2 (bits); the loss is in nats (natural log)"),
        ]
        if V > 100:  # -100 as an index counts from the end: token V - 100, silently
            wrapped = logp_all.gather(-1, (targets % V)[..., None]).squeeze(-1)
            candidates[:0] = [(-wrapped.mean(), "-100 is not a token id: used as an index it counts from the end "
                                                "and reads token V − 100. Leave the -100 positions out of the sum "
                                                "and out of the count"),
                              (-(wrapped * real).sum() / real.numel(), "you divided by all B×T positions: the -100 "
                               "positions must not count; divide by the number of real targets")]
        for value, message in candidates:
            if _close(got, float(value)):
                fail(message)
        fail(f"your cross-entropy differs from F.cross_entropy(..., ignore_index=-100) on a batch of shape "
             f"(B, T, V) = {(B, T, V)}: take the mean of -log_softmax(logits, dim=-1)[target] over the real targets")
    passed("cross-entropy over the real targets (-100 skipped) matches F.cross_entropy(ignore_index=-100)")


def check_uniform_loss(answer, vocab_size: int = 50257) -> None:
    """Check the loss of a uniform guess over V tokens: -log(1/V) = ln V.

    ``answer`` is a function ``V -> loss`` (checked on ``vocab_size``, and on other vocabulary
    sizes in hidden runs) or, as in earlier versions of the course, the number for ``vocab_size``.
    """
    sizes = [vocab_size]
    if callable(answer) and is_hidden():
        r = draw(65)
        sizes = [2, r.randint(3, 100), r.randint(1000, 300_000)]
    for V in sizes:
        value = _call(answer, V, what="your uniform_loss") if callable(answer) else answer
        got = _number(value, "the uniform loss")
        ref = math.log(V)
        if _close(got, ref):
            continue
        _name_mistake(got, ref, [
            (math.log2(V), "you used log base 2 (bits); the loss is in nats: math.log(V)"),
            (math.log10(V), "you used log base 10; the loss is in nats: math.log(V)"),
            (-math.log(V), "sign: the loss is -log(1/V) = +ln V"),
            (1 / V, "1/V is the probability of each token; the loss is -log(1/V)"),
            (float(V), "V is the perplexity of a uniform guess; the loss is its log, ln V"),
        ], f"for V = {V} the uniform loss is -log(1/V)")
    passed(f"uniform loss = ln {vocab_size} = {math.log(vocab_size):.4f} nats")


@forbids('minigpt.objective.perplexity')
def check_perplexity(fn: Callable) -> None:
    """Check ``fn(loss) -> float``: perplexity = exp(loss), for a loss in nats per token."""
    losses = (0.0, 1.2345, math.log(65))
    if is_hidden():
        r = draw(61)
        losses = (r.uniform(0.01, 1), r.uniform(1, 6), math.log(r.randint(2, 60000)))
    for loss in losses:
        got = _number(_call(fn, loss, what="your perplexity"), "the perplexity")
        ref = math.exp(loss)
        if _close(got, ref):
            continue
        _name_mistake(got, ref, [
            (2 ** loss, "the loss is in nats, so perplexity = e^loss (math.exp), not 2^loss"),
            (math.exp(-loss) if loss else None, "sign: perplexity = exp(+loss), a number ≥ 1"),
            (math.log(loss) if loss > 0 else None, "perplexity = exp(loss), not log(loss)"),
            (10 ** loss, "perplexity = e^loss (math.exp), not 10^loss"),
        ], f"for loss {loss:.4f} the perplexity is exp(loss)")
    passed("perplexity = exp(loss); a uniform guess over V tokens has perplexity V")


@forbids('minigpt.objective.bits_per_char')
def check_bits_per_char(fn: Callable) -> None:
    """Check ``fn(loss) -> float``: bits per character of a character-level model = loss / ln 2."""
    losses = (1.0, 2.5, math.log(65))
    if is_hidden():
        r = draw(62)
        losses = (r.uniform(0.05, 1), r.uniform(1, 6), math.log(r.randint(2, 60000)))
    for loss in losses:
        got = _number(_call(fn, loss, what="your bits-per-character"), "bits per character")
        ref = loss / math.log(2)
        if _close(got, ref):
            continue
        _name_mistake(got, ref, [
            (loss * math.log(2), "divide by ln 2 to convert nats to bits (you multiplied)"),
            (math.log2(loss), "bits = nats / ln 2; log2 of the loss is something else"),
            (loss / math.log(10), "divide by ln 2, not ln 10"),
            (loss, "the loss is in nats; bits = nats / ln 2"),
        ], f"for loss {loss:.4f} nats the bits per character are loss / ln 2")
    passed("bits per character = loss / ln 2")


def check_bigram_probs(fn: Callable) -> None:
    """Check ``fn(ids, vocab_size, alpha) -> P`` (V, V): P[a, b] = P(next = b | current = a) with
    add-alpha smoothing, (count(a→b) + alpha) / (count(a→·) + alpha·V)."""
    g = torch.Generator().manual_seed(seeded(37))
    V, alpha, n = 7, 0.5, 200
    if is_hidden():
        r = draw(37)
        V, alpha, n = r.randint(3, 15), r.choice([0.1, 0.25, 2.0, r.uniform(0.01, 3)]), r.randint(20, 400)
    ids = torch.randint(0, V - 1, (n,), generator=g)  # token V-1 never occurs: its row needs smoothing
    counts = torch.zeros(V, V, dtype=torch.float64)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.float64), accumulate=True)
    ref = (counts + alpha) / (counts + alpha).sum(1, keepdim=True)
    got = _call(fn, ids.clone(), V, alpha, what="your bigram model")
    if not isinstance(got, torch.Tensor):
        got = torch.as_tensor(got)
    got = got.detach().double()
    if got.shape == ref.shape and torch.allclose(got, ref, atol=1e-6):
        passed("bigram probabilities: rows are P(next | current), smoothed, each summing to 1")
        return
    if got.shape != (V, V):
        fail(f"P should be a (vocab_size, vocab_size) = ({V}, {V}) matrix, got {tuple(got.shape)}")

    def close(x):
        return torch.allclose(got, x, atol=1e-6)

    if close(counts) or close(counts + alpha):
        fail("you returned counts; normalize each row so that it sums to 1: P = N / N.sum(1, keepdim=True)")
    if close(ref.T) or close(
            (counts.T + alpha) / (counts.T + alpha).sum(1, keepdim=True)):
        fail("your matrix is transposed: row a must hold P(next = b | current = a), counting pairs "
             "(ids[i], ids[i+1]) as N[ids[i], ids[i+1]]")
    if close((counts + alpha) / (counts + alpha).sum(0, keepdim=True)):
        fail("you normalized the columns; normalize each row (sum over dim=1), so that P[a] is a "
             "distribution over the next token")
    if close((counts + alpha) / (counts + alpha).sum()):
        fail("you normalized the whole matrix (a joint distribution); normalize each row separately")
    raw = counts / counts.sum(1, keepdim=True).clamp_min(1e-300)
    if close(raw) or (torch.isnan(got).any() and not torch.isnan(ref).any()):
        fail("no smoothing: add alpha to every count before normalizing, or unseen pairs get probability 0 "
             "(an infinite loss) and a token never seen has a row of 0/0")
    once = (counts > 0).double()  # what N[ids[:-1], ids[1:]] += 1 gives: each distinct pair counted once
    if close((once + alpha) / (once + alpha).sum(1, keepdim=True)):
        fail("advanced-index += does not accumulate: N[a, b] += 1 with index tensors adds 1 once per distinct "
             "pair, however often it repeats; count with index_put_(..., accumulate=True) or torch.bincount")
    if close((counts + 1) / (counts + 1).sum(1, keepdim=True)):
        fail(f"you added 1 to the counts; use the alpha you were given (here {alpha})")
    shifted = torch.zeros(V, V, dtype=torch.float64)
    shifted.index_put_((ids[:-2], ids[2:]), torch.ones(len(ids) - 2, dtype=torch.float64), accumulate=True)
    if close((shifted + alpha) / (shifted + alpha).sum(1, keepdim=True)):
        fail("off-by-one: a bigram is a pair of neighbours (ids[i], ids[i+1]), not (ids[i], ids[i+2])")
    sums = got.sum(1)
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-6):
        fail("the rows of P do not sum to 1: each row is the distribution of the next token")
    fail("your bigram probabilities differ from (N + alpha) / (N + alpha).sum(1, keepdim=True), "
         "with N[a, b] the number of times b follows a")


# ---------------------------------------------------------------- 04.7 sliding windows

def _windows_hint(error: str) -> str:
    e = error.lower()
    if "out of" in e or "index" in e or "equal size" in e:
        return (" — a window runs off the end of ids: window i needs the T+1 tokens ids[i·stride : "
                "i·stride + T + 1], so the last start is at most L − T − 1 and there are "
                "N = ⌊(L − T − 1)/stride⌋ + 1 windows (a window of T tokens, or one extra window, runs past)")
    return ""


def _brute_windows(ids: torch.Tensor, T: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition, one window at a time: starts 0, stride, 2·stride, … while T+1 tokens fit."""
    xs, ys, s = [], [], 0
    while s + T + 1 <= len(ids):
        xs.append(ids[s:s + T])
        ys.append(ids[s + 1:s + T + 1])
        s += stride
    return torch.stack(xs), torch.stack(ys)


@forbids("minigpt.data.iter_eval_windows", "minigpt.data._windows")
def check_windows(fn: Callable) -> None:
    """Check ``fn(ids, T, stride) -> (X, Y)``: X, Y (N, T) with X[i] = ids[i·stride : i·stride + T],
    Y[i] = ids[i·stride + 1 : i·stride + T + 1] and N = ⌊(L − T − 1)/stride⌋ + 1 for L = len(ids).

    Compared with a window-by-window loop, and for stride = T with ``minigpt.data.iter_eval_windows``.
    Hidden cases: other lengths, T and strides (stride > T too), a tail that fills no window, and a
    text of exactly one window."""
    g = torch.Generator().manual_seed(seeded(71))
    cases = [(20, 4, 4), (23, 5, 2)]  # (L, T, stride): stride = T with a tail of 3 tokens; overlapping
    if is_hidden():
        r = draw(71)
        T = r.randint(2, 12)
        cases = [(T * r.randint(2, 9) + 1 + r.randint(1, T - 1), T, T)]  # stride = T, a tail that fits no window
        T = r.randint(3, 16)
        s = r.randint(1, T - 1)
        cases.append((T + s * r.randint(2, 12), T, s))  # overlapping; a window of T tokens would start at L − T
        T = r.randint(1, 8)
        s = T + r.randint(1, 5)
        cases.append((T + 1 + s * r.randint(1, 8) + r.randint(1, s - 1), T, s))  # gaps: stride > T
        T = r.randint(1, 10)
        cases.append((T + 1, T, r.randint(1, 2 * T)))  # exactly one window
    for L, T, stride in cases:
        ids = torch.randint(0, 50, (L,), generator=g)
        rx, ry = _brute_windows(ids, T, stride)
        if stride == T:  # the package's evaluation windows are the stride-T case
            ex = torch.cat([x for x, _ in iter_eval_windows(ids, T, batch_size=4)])
            ey = torch.cat([y for _, y in iter_eval_windows(ids, T, batch_size=4)])
            if not (torch.equal(ex, rx) and torch.equal(ey, ry)):
                raise RuntimeError("minigpt.data.iter_eval_windows disagrees with the window-by-window loop")
        where = f"for len(ids) = {L}, T = {T}, stride = {stride}"
        out = _call(fn, ids.clone(), T, stride, what="your make_windows", hint=_windows_hint)
        if isinstance(out, torch.Tensor) or not isinstance(out, (tuple, list)) or len(out) != 2:
            fail("return a pair (X, Y): the inputs and the targets, each of shape (N, T)")
        try:
            X, Y = (torch.as_tensor(t) for t in out)
        except (TypeError, ValueError, RuntimeError):
            fail("X and Y should be tensors (or lists of lists) of token ids")
        if X.is_floating_point() or Y.is_floating_point():
            fail("X and Y hold token ids: keep them integers (torch.long), as ids is")
        N = len(rx)
        if X.shape == rx.shape and Y.shape == ry.shape and torch.equal(X, rx) and torch.equal(Y, ry):
            continue
        if X.dim() != 2 or Y.dim() != 2:
            fail(f"{where} X and Y should be 2-D, (N, T) = ({N}, {T}), got {tuple(X.shape)} and {tuple(Y.shape)}")
        if X.shape == (T, N) and Y.shape == (T, N) and torch.equal(X.T, rx):
            fail(f"{where} X and Y are transposed: one window per row, shape (N, T) = ({N}, {T})")
        if X.shape[1:] == (T - 1,) and Y.shape[1:] == (T - 1,):
            fail(f"{where} your windows hold T tokens, so x and y have T − 1: a window is T + 1 tokens, "
                 "x = window[:-1] and y = window[1:], T each")
        if X.shape[1:] != (T,) or Y.shape[1:] != (T,):
            fail(f"{where} each row should hold T = {T} tokens, got X {tuple(X.shape)} and Y {tuple(Y.shape)}")
        if torch.equal(X, Y) and X.shape == rx.shape and torch.equal(X, rx):
            fail("Y is not shifted: Y equals X. The target of each input token is the token after it: "
                 "Y[i] = ids[start + 1 : start + T + 1]")
        if X.shape == rx.shape and torch.equal(X, ry) and torch.equal(Y, rx):
            fail("X and Y are swapped: the input is the window without its last token, the target the "
                 "window without its first")
        for other in {1, T} - {stride}:
            ox, oy = _brute_windows(ids, T, other)
            if X.shape == ox.shape and torch.equal(X, ox) and torch.equal(Y, oy):
                fail(f"{where} your windows start every {other} token(s): use the stride you were given")
        if len(X) == N + 1 and torch.equal(X[:N], rx) and torch.equal(Y[:N], ry):
            fail(f"{where} you made N + 1 windows: the last one runs off the end of ids. A window needs "
                 "T + 1 tokens, so there are N = ⌊(L − T − 1)/stride⌋ + 1 of them")
        if len(X) < N and torch.equal(X, rx[:len(X)]) and torch.equal(Y, ry[:len(X)]):
            fail(f"{where} you made {len(X)} windows and missed the last {N - len(X)}: window i starts at "
                 "i·stride and fits while i·stride + T + 1 ≤ L, so N = ⌊(L − T − 1)/stride⌋ + 1")
        if len(X) != N:
            fail(f"{where} you made {len(X)} windows: there are N = ⌊(L − T − 1)/stride⌋ + 1 of them")
        if torch.equal(X, rx):
            fail(f"{where} X is right but Y is not: Y[i] is X[i] shifted left by one token, "
                 "ids[i·stride + 1 : i·stride + T + 1]")
        fail(f"{where} your windows differ from X[i] = ids[i·stride : i·stride + T], "
             "Y[i] = ids[i·stride + 1 : i·stride + T + 1]")
    passed("sliding windows: N = ⌊(L − T − 1)/stride⌋ + 1 pairs (x, y), y shifted by one; "
           "stride = T matches minigpt.data.iter_eval_windows")


# ---------------------------------------------------------------- 04.8 a trigram model

def _trigram_counts(ids: torch.Tensor, V: int) -> torch.Tensor:
    """N[a, b, c]: how often c follows the pair (a, b), by a plain loop (independent of the answer's
    vectorised counting)."""
    N = torch.zeros(V, V, V, dtype=torch.float64)
    for a, b, c in zip(ids[:-2].tolist(), ids[1:-1].tolist(), ids[2:].tolist()):
        N[a, b, c] += 1
    return N


def _nll(P: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """-log P[w_{i-2}, w_{i-1}, w_i] for every i >= 2 (float64)."""
    return -torch.log(P[ids[:-2], ids[1:-1], ids[2:]])


def check_trigram(fn: Callable) -> None:
    """Check ``fn(train, val, vocab_size, alpha) -> (P, loss)``: P (V, V, V) with
    P[a, b, c] = P(next = c | two previous = a, b) = (N[a, b, c] + α) / (Σ_c' N[a, b, c'] + α·V)
    counted on ``train``, and ``loss`` the mean of -ln P over the len(val) − 2 predictions of ``val``.

    The train text never holds token V − 1, so some contexts are never seen: their row must be
    uniform. Hidden cases draw other V, α and texts (a validation text of one prediction among them).
    """
    g = torch.Generator().manual_seed(seeded(73))
    V, alpha, n_train, n_val = 6, 0.5, 300, 40
    if is_hidden():
        r = draw(73)
        V, alpha = r.randint(3, 12), r.choice([0.05, 0.2, 2.0, round(r.uniform(0.01, 3), 3)])
        n_train, n_val = r.randint(20, 400), r.choice([3, r.randint(4, 200)])
    train = torch.randint(0, V - 1, (n_train,), generator=g)  # token V-1 never in train: unseen contexts
    val = torch.randint(0, V, (n_val,), generator=g)
    if not bool((val == V - 1).any()):
        val[0] = V - 1  # the validation text uses an unseen context
    N = _trigram_counts(train, V)
    ref_P = (N + alpha) / (N + alpha).sum(-1, keepdim=True)
    if n_val == 3:  # one prediction: a seen triple whose probability changes when the pair is swapped
        a, b, c = train[:-2], train[1:-1], train[2:]
        differ = ((ref_P[a, b, c] - ref_P[b, a, c]).abs() > 1e-3).nonzero().flatten()
        if len(differ):
            i = int(differ[0])
            val = train[i:i + 3].clone()
    nll = _nll(ref_P, val)
    ref_loss = float(nll.mean())
    out = _call(fn, train.clone(), val.clone(), V, alpha, what="your trigram model")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail("return a pair (P, loss): the (V, V, V) table of probabilities and the validation loss")
    try:
        P = torch.as_tensor(out[0]).detach().double()
    except (TypeError, ValueError, RuntimeError):
        fail("P should be a tensor of probabilities")
    loss = _number(out[1], "the validation loss")

    def close(x: torch.Tensor) -> bool:
        return P.shape == x.shape and bool(torch.allclose(P, x, atol=1e-6))

    if not close(ref_P):
        if P.shape != (V, V, V):
            fail(f"P should be a (vocab_size, vocab_size, vocab_size) = ({V}, {V}, {V}) table, got {tuple(P.shape)}")
        seen = N.sum(-1) > 0  # (V, V): contexts that occur in train
        if close(N) or close(N + alpha):
            fail("you returned counts; normalise over the next token: P = N / N.sum(-1, keepdim=True)")
        if close(ref_P.transpose(0, 1)):
            fail("wrong pair order: P[a, b] must condition on a = ids[i-2] (two back) and b = ids[i-1] (the "
                 "previous token); you indexed the context as (previous, two back)")
        for dim, name in ((0, "the first axis (two back)"), (1, "the second axis (previous token)")):
            if close((N + alpha) / (N + alpha).sum(dim, keepdim=True)):
                fail(f"you normalised over {name}; normalise over the last axis, the next token, so that "
                     "P[a, b] is a distribution over what follows (a, b)")
        if close((N + alpha) / (N + alpha).sum()):
            fail("you normalised the whole table (a joint distribution); normalise each context's row over "
                 "the next token")
        once = (N > 0).double()  # what N[a, b, c] += 1 with index tensors gives: each distinct triple once
        if close((once + alpha) / (once + alpha).sum(-1, keepdim=True)):
            fail("advanced-index += does not accumulate: N[a, b, c] += 1 with index tensors adds 1 once per distinct "
                 "pair, however often it repeats; count with index_put_(..., accumulate=True) or torch.bincount")
        if close((N + 1) / (N + 1).sum(-1, keepdim=True)):
            fail(f"you added 1 to the counts; use the alpha you were given (here {alpha})")
        bi = torch.zeros(V, V, dtype=torch.float64)
        bi.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64), accumulate=True)
        if close(((bi + alpha) / (bi + alpha).sum(-1, keepdim=True))[None].expand(V, V, V)):
            fail("you built a bigram: P[a, b] must depend on both previous tokens, counting triples "
                 "(ids[i-2], ids[i-1], ids[i])")
        unseen_rows = P[~seen]  # (number of unseen contexts, V)
        if not torch.allclose(unseen_rows, torch.full_like(unseen_rows, 1 / V), atol=1e-6):  # nan fails too
            if torch.allclose(P[seen], ref_P[seen], atol=1e-6):
                fail("not smoothed for unseen contexts: a context (a, b) that never occurs in train must give "
                     "the uniform row 1/V (add alpha to every cell, including the rows of all-zero counts)")
            fail("no smoothing: add alpha to every count before normalising; a context never seen in train "
                 "must give the uniform row 1/V, not 0/0 or zeros")
        if not torch.allclose(P.sum(-1), torch.ones(V, V, dtype=torch.float64), atol=1e-6):
            fail("the rows P[a, b] do not sum to 1: each is the distribution of the token after (a, b)")
        fail("your P differs from (N + alpha) / (N + alpha).sum(-1, keepdim=True), with N[a, b, c] the "
             "number of times c follows the pair (a, b) in train")
    if _close(loss, ref_loss):
        passed("trigram: P(next | two previous) with add-α smoothing, and its validation loss, "
               "match a brute-force count")
        return
    n = len(val) - 2
    transposed = _nll(ref_P.transpose(0, 1), val)
    _name_mistake(loss, ref_loss, [
        (float(transposed.mean()), "wrong pair order in the loss: look up P[ids[i-2], ids[i-1], ids[i]] "
                                   "(two back first, then the previous token)"),
        (float(nll.sum()) / (n + 1),
         f"loss averaged over the wrong count: len(val) − 2 = {n} tokens are predicted (each needs two before "
         "it); you divided by len(val) − 1"),
        (float(nll.sum()) / (n + 2), f"loss averaged over the wrong count: len(val) − 2 = {n} tokens are "
                                     "predicted (each needs two before it); you divided by len(val)"),
        (float(nll.sum()) if n > 1 else None, "you summed; the loss is the mean over the predictions"),
        (-ref_loss, "sign: the loss is the NEGATIVE log-probability, a positive number"),
        (ref_loss / math.log(2), "you used log base 2; the loss is in nats (natural log)"),
        (float(_nll(ref_P, train).mean()), "you scored the training text; the loss is on val"),
    ], "your validation loss differs from the mean of -ln P[val[i-2], val[i-1], val[i]] over i ≥ 2")
