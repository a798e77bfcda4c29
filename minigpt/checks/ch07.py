"""Checks for chapter 07, sampling: temperature, top-k, top-p (nucleus) and the repetition
penalty, each compared with :func:`minigpt.sampling.process_logits`, and the repetition rate of a
generated sequence (07.6), compared with a brute-force count; each names the usual mistake."""

from __future__ import annotations

from typing import Callable

import torch

from ..sampling import process_logits
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_temperature", "check_top_k", "check_top_p", "check_repetition_penalty", "check_repetition_rate",
           "CheckFailed"]


def _call(fn: Callable, *args, what: str) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        try:
            out = fn(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001
            fail(f"{what} raised {type(e).__name__}: {e}")
    if not isinstance(out, torch.Tensor):
        try:
            out = torch.as_tensor(out)
        except (TypeError, ValueError, RuntimeError):
            fail(f"{what} should return a tensor, got {type(out).__name__}")
    return out.detach().double()


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    if a.shape != b.shape:
        return False
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    return bool(torch.equal(fa, fb) and torch.allclose(a[fa], b[fb], atol=atol)
                and torch.equal(a[~fa], b[~fb]))


def _size() -> int:
    """The vocabulary size of a case: 10, or another in hidden runs."""
    return draw(77).randint(3, 60) if is_hidden() else 10


def _logits(seed: int, V: int | None = None) -> torch.Tensor:
    V = V or _size()
    g = torch.Generator().manual_seed(seeded(seed))
    return torch.randn(V, generator=g, dtype=torch.float64) * 2


@forbids('minigpt.sampling.process_logits', 'minigpt.sampling.next_token_distributions')
def check_temperature(fn: Callable) -> None:
    """Check ``fn(logits, T) -> probs``: softmax(logits / T) for a 1-D logits vector, T > 0."""
    temps = ((1, 0.5), (2, 2.0), (3, 0.8))
    if is_hidden():
        r = draw(71)
        temps = ((1, r.uniform(0.1, 0.9)), (2, r.uniform(1.1, 5.0)), (3, 1.0), (4, r.choice([0.25, 3.0])))
    for seed, T in temps:
        z = _logits(seed)
        ref = torch.softmax(z / T, -1)
        got = _call(fn, z, T, what="your temperature function")
        if got.shape != ref.shape:
            fail(f"return probabilities of shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        if _same(got, ref):
            continue
        p = torch.softmax(z, -1)
        for value, msg in (
            (p / T, "temperature applied after softmax: divide the LOGITS by T, then take the softmax"),
            ((p / T) / (p / T).sum(), "temperature applied after softmax: dividing probabilities by T and "
                                     "renormalising changes nothing; divide the logits by T before softmax"),
            (torch.softmax(z * T, -1), "you multiplied by T; divide the logits by T (T < 1 sharpens)"),
            (z / T, "return probabilities: softmax(logits / T), not the scaled logits"),
            (p, "the temperature had no effect: divide the logits by T before the softmax"),
            (torch.exp(z / T), "forgot to renormalise: divide exp(logits / T) by its sum (use softmax)"),
            (p ** (1 / T), "you raised the probabilities to the power 1/T but did not renormalise: divide by "
                           "their sum (or, simpler, softmax(logits / T))"),
        ):
            if msg and _same(got, value):
                fail(msg)
        fail(f"for T={T} your probabilities differ from softmax(logits / T)")
    passed("temperature: softmax(logits / T) — T < 1 sharpens, T > 1 flattens")


@forbids('minigpt.sampling.process_logits', 'minigpt.sampling.next_token_distributions')
def check_top_k(fn: Callable) -> None:
    """Check ``fn(logits, k) -> logits``: keep the k largest logits, set the others to -inf."""
    cases = ((4, 3), (5, 1), (6, 7))
    if is_hidden():
        V = _size()
        r = draw(72)
        cases = ((4, r.randint(1, V)), (5, 1), (6, V), (7, r.randint(1, max(1, V - 1))))
    for seed, k in cases:
        z = _logits(seed)
        ref = process_logits(z[None], top_k=k)[0].double()
        got = _call(fn, z, k, what="your top-k function")
        top = z.topk(k)
        if got.shape == (k,) and k < len(z) and (_same(got, top.values) or _same(got, top.indices.double())):
            fail("you returned the k largest values (in sorted order) or their positions; return the whole "
                 "logits vector, each logit at its own position, with the others set to -inf")
        if got.shape != ref.shape:
            fail(f"return logits of shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        if _same(got, ref):
            continue
        kept = int(torch.isfinite(got).sum())
        if _same(got, torch.full_like(z, float("-inf")).index_copy(0, torch.arange(k), top.values)) and \
                not _same(got, ref):
            fail("you put the k largest logits at positions 0..k-1 (sorted order); keep each at its own "
                 "position (token id): use the indices from topk, or mask logits below the k-th largest")
        if _same(got, torch.softmax(ref, -1)):
            fail("return the filtered LOGITS (removed ones -inf), not probabilities")
        if kept == k and set(torch.isfinite(got).nonzero().flatten().tolist()) == set(z.topk(k, largest=False).indices.tolist()):
            fail("you kept the k SMALLEST logits; keep the k largest (torch.topk returns the largest)")
        if kept in (k - 1, k + 1):
            fail(f"off by one: you kept {kept} tokens, top-k keeps exactly k = {k}")
        if bool((got[~torch.isfinite(ref)] == 0).all()) and kept == len(z):
            fail("removed tokens must get -inf (probability 0 after softmax), not 0 (a logit of 0 is likely)")
        fail(f"for k={k} your logits differ: keep the {k} largest unchanged and set the rest to -inf")
    if is_hidden():
        _top_k_tie(fn)
    passed("top-k keeps the k largest logits and sets the rest to -inf (with a tie at the k-th largest, "
           "exactly k or every tied logit)")


def _top_k_tie(fn: Callable) -> None:
    """A tie at the k-th largest logit: keeping exactly k (any of the tied) or every tied one are
    both right; keeping fewer than k (a strict ``>``) or changing the kept logits is not."""
    r = draw(73)
    V = r.randint(6, 30)
    z = torch.randn(V, generator=torch.Generator().manual_seed(seeded(73)), dtype=torch.float64)
    top = z.argsort(descending=True)
    k = r.randint(2, V - 3)
    z[top[k - 1: k + 2]] = float(z[top[k - 1]])  # the k-th largest is tied with the next two
    got = _call(fn, z, k, what="your top-k function")
    if got.shape != z.shape:
        fail(f"return logits of shape {tuple(z.shape)}, got {tuple(got.shape)}")
    kept = torch.isfinite(got)
    kth = z[top[k - 1]]
    if not torch.equal(got[kept], z[kept]) or bool((got[~kept] != float("-inf")).any()):
        fail("keep the kept logits unchanged and set the removed ones to -inf")
    if int(kept.sum()) < k:
        fail(f"with a tie at the k-th largest logit you kept {int(kept.sum())} < k = {k} tokens: keep the logits "
             ">= the k-th largest (not > it)")
    if bool((z[~kept] > kth).any()) or bool((z[kept] < kth).any()) or int(kept.sum()) not in (k, int((z >= kth).sum())):
        fail(f"with a tie at the k-th largest logit, keep the {k} largest (or every logit tied with the k-th)")


def _top_p_exact(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Top-p by the rule, in float64 (for cases on the boundary, where float32 rounding decides)."""
    sp, order = probs.sort(descending=True, stable=True)
    keep = torch.zeros_like(sp, dtype=torch.bool).scatter(0, order, (sp.cumsum(0) - sp) < p)
    kept = probs * keep
    return kept / kept.sum()


def _top_p_ref(probs: torch.Tensor, p: float) -> torch.Tensor:
    return torch.softmax(process_logits(probs.log()[None], top_p=p)[0].double(), -1)


@forbids('minigpt.sampling.process_logits', 'minigpt.sampling.next_token_distributions')
def check_top_p(fn: Callable) -> None:
    """Check ``fn(probs, p) -> probs``: nucleus sampling on a 1-D probability vector. Keep the
    smallest set of most likely tokens whose total probability is at least p (the token that
    crosses p is kept), zero the others and renormalise so the result sums to 1."""
    cases = ((torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15], dtype=torch.float64), 0.75),
             (torch.softmax(_logits(7), -1), 0.9), (torch.softmax(_logits(8), -1), 0.5),
             (torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64), 0.3))
    exact = False
    if is_hidden():  # other sizes; ties; a kept mass exactly p (the `<` / `<=` boundary)
        r = draw(74)
        perm = torch.randperm(5, generator=torch.Generator().manual_seed(seeded(74)))
        tied = torch.tensor([0.25, 0.25, 0.25, 0.125, 0.125], dtype=torch.float64)[perm]
        half = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625], dtype=torch.float64)[perm]
        cases = ((torch.softmax(_logits(7), -1), r.uniform(0.3, 0.95)), (tied, 0.75), (half, 0.75), (half, 0.5),
                 (torch.softmax(_logits(8) * 3, -1), r.uniform(0.05, 0.3)))
        exact = True
    for probs, p in cases:
        ref = _top_p_exact(probs, p) if exact else _top_p_ref(probs, p)
        got = _call(fn, probs, p, what="your top-p function")
        if got.shape != ref.shape:
            fail(f"return probabilities of shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        if _same(got, ref):
            continue
        order = probs.argsort(descending=True)
        kept_ref = ref > 0
        n_ref = int(kept_ref.sum())
        if abs(float(got.sum()) - 1) > 1e-6 and _same(got / got.sum(), ref):
            fail("forgot to renormalise: after zeroing the dropped tokens divide by the kept mass, "
                 "so that the probabilities sum to 1")
        kept = got > 0
        n = int(kept.sum())
        fewer = torch.zeros_like(probs, dtype=torch.bool)
        fewer[order[:n_ref - 1]] = True
        if n_ref > 1 and torch.equal(kept, fewer):
            fail("top-p excluded the token that crosses p: keep tokens until the kept mass reaches p, "
                 "including the one that makes it ≥ p (in sorted order: cumsum − prob < p)")
        unsorted = torch.cumsum(probs, -1) - probs < p
        if torch.equal(kept, unsorted) and not torch.equal(unsorted, kept_ref):
            fail("sort the probabilities in descending order before the cumulative sum; the nucleus is "
                 "made of the MOST likely tokens")
        more = torch.zeros_like(probs, dtype=torch.bool)
        more[order[:n_ref + 1]] = True
        if torch.equal(kept, more):
            fail("you kept one token too many: stop at the first token whose cumulative mass reaches p "
                 "(a token whose more likely tokens already hold p is dropped: mass before it < p, not <= p)")
        fail(f"for p={p} your result differs: keep the smallest set of most likely tokens with mass ≥ p, "
             "then renormalise")
    passed("top-p keeps the smallest set of most likely tokens with mass ≥ p, renormalised")


@forbids('minigpt.sampling.process_logits', 'minigpt.sampling.next_token_distributions')
def check_repetition_penalty(fn: Callable) -> None:
    """Check ``fn(logits, prev_ids, penalty) -> logits``, the sign-aware (Hugging Face) form of CTRL's
    repetition penalty: for each distinct token in ``prev_ids``, a positive logit is divided by the
    penalty, a negative one multiplied by it (CTRL itself divides every seen logit)."""
    z = _logits(9)
    if not is_hidden():
        z[2], z[5] = 1.5, -1.2  # one positive and one negative seen token
        prev = torch.tensor([2, 5, 2, 7], dtype=torch.long)
        penalties = (1.3, 2.0)
    else:  # other vocabularies (as small as 3 tokens) and histories (repeats, both signs), other penalties
        r = draw(75)
        V = len(z)
        seen = r.sample(range(V), r.randint(2, max(2, V // 2)))
        z[seen[0]], z[seen[1]] = abs(float(z[seen[0]])) + 0.5, -abs(float(z[seen[1]])) - 0.5
        prev = torch.tensor([r.choice(seen) for _ in range(r.randint(len(seen), 3 * len(seen)))] + seen[:2])
        penalties = (r.uniform(1.05, 1.9), r.uniform(2.0, 4.0))
    for penalty in penalties:
        ref = process_logits(z[None], repetition_penalty=penalty, prev_ids=prev[None])[0].double()
        got = _call(fn, z, prev, penalty, what="your repetition penalty")
        if got.shape != ref.shape:
            fail(f"return logits of shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        if _same(got, ref):
            continue
        div = z.clone()
        div[prev.unique()] /= penalty
        if _same(got, div):
            fail("a negative logit divided by the penalty gets LARGER (closer to 0), making the token more "
                 "likely; multiply negative logits by the penalty, divide positive ones")
        twice = z.clone()
        for t in prev.tolist():
            twice[t] = twice[t] / penalty if twice[t] > 0 else twice[t] * penalty
        if _same(got, twice):
            fail("you penalised a token once per occurrence; penalise each distinct seen token once")
        every = torch.where(z > 0, z / penalty, z * penalty)
        if _same(got, every):
            fail("you penalised every token; only the tokens already seen (those in prev_ids) are penalised")
        sub = z.clone()
        sub[prev.unique()] -= penalty
        if _same(got, sub):
            fail("the repetition penalty divides (or multiplies) the logit by the penalty; you subtracted it")
        fail(f"for penalty {penalty} your logits differ from the sign-aware (Hugging Face) rule: divide each "
             "seen token's positive logit by the penalty, multiply a negative one by it")
    passed("repetition penalty: positive logits / penalty, negative logits × penalty, each seen token once")


# ---------------------------------------------------------------- 07.6 diagnose repetition

def _rate_ref(ids: list[int], n: int) -> float:
    """The repetition rate by brute force: n-gram i is a repeat if an equal n-gram starts at some j < i."""
    grams = [ids[i:i + n] for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return sum(any(grams[j] == grams[i] for j in range(i)) for i in range(len(grams))) / len(grams)


def _rate_mistakes(ids: list[int], n: int) -> list[tuple[float, str]]:
    """The typical wrong answers, each with the message that names it."""
    from collections import Counter

    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    k, counts = len(grams), Counter(grams)  # k >= 2
    repeats = k - len(counts)  # every occurrence after the first
    short = grams[:-1]  # range(len(ids) - n): the last n-gram forgotten
    return [
        (sum(c for c in counts.values() if c > 1) / k,
         "you counted the first occurrence of a repeated n-gram as a repeat too: an n-gram is a repeat only "
         "where the same n-gram already occurred EARLIER in the sequence"),
        (sum(1 for c in counts.values() if c > 1) / k,
         "you counted each repeated n-gram once (a set of the repeated ones): an n-gram that occurs three "
         "times is a repeat twice; count every later occurrence"),
        (len(counts) / k, "you returned the fraction of n-grams that are NEW (distinct); the repetition rate "
                          "is the fraction that already occurred earlier"),
        ((len(short) - len(set(short))) / len(short),
         "off by one: a sequence of len(ids) tokens has len(ids) - n + 1 n-grams (the last one starts at "
         "position len(ids) - n); you left out the last n-gram"),
        (repeats / (k - 1), "off by one: divide by the number of n-grams, len(ids) - n + 1, not len(ids) - n"),
        (repeats / len(ids), "you divided by the number of tokens; divide by the number of n-grams, "
                             "len(ids) - n + 1"),
        (repeats / len(counts), "you divided by the number of distinct n-grams; divide by the number of all "
                                "n-grams, len(ids) - n + 1"),
        (float(repeats), "return the FRACTION of n-grams that are repeats (a number in [0, 1]), not their count"),
        (0.0, "you found no repeat where there are some: if you compare or hash slices of a tensor "
              "(tuple(ids[i:i + n]) holds tensors, which a set or dict tells apart by identity), "
              "convert the ids to Python ints first (ids.tolist())"),
    ]


def _sequences() -> list[tuple[torch.Tensor, int]]:
    """(ids, n) cases: visible ones, or other lengths, n and loops in hidden runs, then the edge
    cases: no repeat at all, one token over and over, n = len(ids) and n > len(ids)."""
    g = torch.Generator().manual_seed(seeded(76))
    if not is_hidden():
        return [(torch.tensor([5, 1, 2, 5, 1, 2, 5, 1, 2, 9]), 2),
                (torch.randint(0, 6, (40,), generator=g), 3),
                (torch.randint(0, 10, (25,), generator=g), 1)]
    r = draw(76)
    n = r.randint(2, 6)
    loop = torch.randint(0, 50, (r.randint(2, 7),), generator=g)
    looping = torch.cat([torch.randint(50, 99, (r.randint(n, 12),), generator=g),  # a start, then a loop
                         loop.repeat(r.randint(4, 8)), loop[:r.randint(0, len(loop) - 1)]])
    L = r.randint(30, 90)
    return [(looping, n),
            (torch.randint(0, r.randint(3, 8), (L,), generator=g), r.randint(1, 4)),
            (torch.randperm(L, generator=g) + r.randint(0, 5000), r.randint(1, 5)),  # no repeat
            (torch.full((r.randint(5, 40),), r.randint(0, 2047)), n),  # all repeats
            (torch.randint(0, 9, (n,), generator=g), n),  # one n-gram
            (torch.randint(0, 9, (r.randint(0, n - 1),), generator=g), n)]  # no n-gram at all


def check_repetition_rate(fn: Callable) -> None:
    """Check ``fn(ids, n) -> float``: the fraction of the ``len(ids) - n + 1`` n-grams of a 1-D
    tensor of token ids that already occurred earlier in it (0.0 when there is no n-gram),
    compared with a brute-force count, naming the usual mistakes."""
    cases, got = _sequences(), []
    for ids, n in cases:
        with torch.random.fork_rng(devices=[]):
            try:
                out = fn(ids.clone(), n)
            except CheckFailed:
                raise
            except Exception as e:  # noqa: BLE001
                if len(ids) - n + 1 < 2:
                    fail(f"with {'fewer tokens than n' if len(ids) < n else 'exactly n tokens'} your function "
                         f"raised {type(e).__name__}: there is {'no n-gram' if len(ids) < n else 'one n-gram'}, "
                         "so nothing repeats: return 0.0")
                fail(f"your repetition_rate raised {type(e).__name__}: {e}")
        try:
            got.append(float(out))
        except (TypeError, ValueError, RuntimeError):
            fail(f"return one number (a float), got {type(out).__name__}")
    refs = [_rate_ref(ids.tolist(), n) for ids, n in cases]
    wrong = [i for i, (g, r) in enumerate(zip(got, refs)) if abs(g - r) >= 1e-9]
    if not wrong:
        passed("repetition rate: the share of n-grams that already occurred earlier in the sequence")
        return
    full = [i for i, (ids, n) in enumerate(cases) if len(ids) - n + 1 >= 2]  # cases with two n-grams or more
    if set(wrong).isdisjoint(full):
        ids, n = cases[wrong[0]]
        fail("with fewer tokens than n there is no n-gram and so no repeat: return 0.0" if len(ids) < n else
             "with exactly n tokens there is one n-gram, which cannot have occurred before: return 0.0")
    # name the mistake that explains every answer (one case alone can match several by chance)
    mistakes = [_rate_mistakes(cases[i][0].tolist(), cases[i][1]) for i in full]
    for m, (_, msg) in enumerate(mistakes[0]):
        if all(abs(got[i] - ms[m][0]) < 1e-9 for i, ms in zip(full, mistakes)):
            fail(msg)
    fail(f"for n = {cases[wrong[0]][1]} your rate differs from the fraction of n-grams that already occurred "
         "earlier")
