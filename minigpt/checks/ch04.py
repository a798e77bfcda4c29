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
from ..model import GPT
from ..objective import lm_loss, sequence_logprob, shift_for_lm
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_sequence_logprob", "check_shift", "check_cross_entropy", "check_uniform_loss",
           "check_perplexity", "check_bits_per_char", "check_bigram_probs", "CheckFailed"]


def _call(fn: Callable, *args, what: str = "your function", hint: Callable[[str], str] = lambda e: ""):
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            fail(f"{what} raised {type(e).__name__}: {e}{hint(str(e))}")
    return out


def _ce_hint(error: str) -> str:
    if "target" in error.lower() and ("size" in error.lower() or "shape" in error.lower()):
        return (" — F.cross_entropy wants logits of shape (N, V) and targets (N,): flatten them first, "
                "F.cross_entropy(logits.view(-1, V), targets.view(-1)) (with (B, T, V) logits it takes dim 1, "
                "time, for the classes)")
    return ""


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


@forbids('minigpt.objective.lm_loss')
def check_cross_entropy(fn: Callable) -> None:
    """Check ``fn(logits, targets)``: mean over positions of -log softmax(logits)[target],
    logits (B, T, V), targets (B, T); compared with ``minigpt.lm_loss``."""
    g = torch.Generator().manual_seed(seeded(31))
    B, T, V = 2, 6, 9
    if is_hidden():
        r = draw(31)
        B, T, V = r.randint(2, 4), r.choice([1, r.randint(2, 12)]), r.randint(2, 40)  # B*T > 1: sum != mean
    logits = torch.randn(B, T, V, generator=g) * 2
    targets = torch.randint(0, V, (B, T), generator=g)
    ref = float(lm_loss(logits, targets))
    got = _number(_call(fn, logits.clone(), targets.clone(), what="your cross-entropy", hint=_ce_hint), "the loss")
    if _close(got, ref):
        passed(f"cross-entropy {ref:.4f} matches minigpt.lm_loss and F.cross_entropy")
        return
    logits_d = logits.double()
    logp = torch.log_softmax(logits_d, -1).gather(-1, targets[..., None]).squeeze(-1)
    logp_t = torch.log_softmax(logits_d, 1).gather(-1, targets[..., None]).squeeze(-1)
    p = torch.softmax(logits_d, -1).gather(-1, targets[..., None]).squeeze(-1)
    raw = logits_d.gather(-1, targets[..., None]).squeeze(-1)
    _name_mistake(got, ref, [
        (-logp.sum(), "you summed; the loss is the mean over the B×T positions"),
        (logp.mean(), "sign: the loss is the NEGATIVE log-likelihood, -log p (a positive number)"),
        (-logp_t.mean(), "softmax over the wrong axis: normalize over the vocabulary (dim=-1), not over time"),
        (-raw.mean(), "you used raw logits; take log_softmax(logits, dim=-1) first"),
        (-p.mean(), "you averaged -p; the loss is the average of -log p"),
        (-torch.log(p.mean()), "you took the log of the mean probability; the loss is the mean of -log p"),
        (-logp.mean() / math.log(2), "you used log base 2 (bits); the loss is in nats (natural log)"),
    ], "your cross-entropy differs from minigpt.lm_loss")


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
    passed("perplexity = exp(loss); a uniform guess over 65 tokens has perplexity 65")


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
