"""Checks for chapter 02, the attention formula.

Each check calls the learner's function on fresh random inputs (drawn from a private generator,
so the notebook's own random state is untouched), compares it with :mod:`minigpt`, and when the
answer is wrong, tries the usual mistakes one by one to say which one it most likely is.
"""

from __future__ import annotations

import math
import re
from typing import Callable

import torch
import torch.nn.functional as F

from ..attention import CausalSelfAttention, attention, causal_mask
from ..config import GPTConfig
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_attention", "check_causal_mask", "check_split_heads", "check_multi_head", "check_grouped_query",
           "check_padded_causal_attention", "CheckFailed"]


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4))


def _first(out):
    """A learner may return ``y`` or ``(y, weights)``; return ``(y, weights or None)``."""
    if isinstance(out, (tuple, list)):
        if len(out) == 0:
            fail("your function returned an empty tuple; return the attention output")
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def _call(fn: Callable, *args, what: str = "your function",
          explain: Callable[[Exception], str | None] | None = None):
    """``fn(*args)``, any crash turned into a friendly message (``explain`` may name its likely cause).

    (Calls of the package's own version are refused by :func:`~minigpt.checks.forbids`, around the
    whole check.)"""
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            why = explain(e) if explain is not None else None
            fail(f"{what} raised {type(e).__name__}: {e}" + (f". {why}" if why else ""))
    return out


def _uses_dot_T(fn: Callable) -> bool:
    """Whether the source of ``fn`` (when Python can find it) transposes with ``.T``."""
    import inspect

    try:
        return re.search(r"\.T\b", inspect.getsource(fn)) is not None
    except (OSError, TypeError):
        return False


def _tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        fail(f"{what} should be a torch.Tensor, got {type(x).__name__}")
    return x.detach()


def _variants(q, k, v, mask):
    """Wrong versions of attention, each with the message that names the mistake."""
    d_k = q.size(-1)
    s = q @ k.transpose(-2, -1)
    neg = float("-inf")

    def masked(scores, m=mask):
        return scores if m is None else scores.masked_fill(~m, neg)

    out = [
        (torch.softmax(masked(s), -1) @ v,
         "no √d_k scaling: divide the scores QKᵀ by math.sqrt(d_k) before the softmax"),
        (torch.softmax(masked(s / d_k), -1) @ v,
         "you divided the scores by d_k; the formula divides by √d_k (math.sqrt(d_k))"),
        (torch.softmax(masked(s * math.sqrt(d_k)), -1) @ v,
         "you multiplied the scores by √d_k; divide by it instead"),
        (torch.softmax(masked(s / math.sqrt(v.size(-1))), -1) @ v if v.size(-1) != d_k else None,
         "you scaled by √d_v (the size of the values); the scores are scaled by √d_k, the size of the "
         "queries and keys: q.size(-1)"),
        (torch.softmax(masked(s / math.sqrt(d_k)), -2) @ v,
         "softmax over the wrong axis: use dim=-1, so that each query's weights over the keys "
         "(one row) sum to 1"),
        (torch.softmax(s / math.sqrt(d_k), -1) @ v if mask is not None else None,
         "missing causal mask: set the scores where mask is False to -inf before the softmax, "
         "so a token cannot look at later tokens"),
        ((torch.softmax(s / math.sqrt(d_k), -1) * mask) @ v if mask is not None else None,
         "you applied the mask after the softmax (zeroing weights), so the rows no longer sum "
         "to 1; mask the scores with -inf before the softmax instead"),
        (torch.softmax(s.masked_fill(~mask, 0.0) / math.sqrt(d_k), -1) @ v if mask is not None else None,
         "you filled the masked scores with 0; a score of 0 still gets weight e⁰ = 1 in the "
         "softmax. Fill them with float('-inf') so their weight is exactly 0"),
        (attention(q, k, v, causal_mask(q.size(-2)))[0] if mask is None else None,
         "you applied the causal mask although mask is None: mask only when a mask is given "
         "(if mask is not None: ...), so the same function serves attention that may see every token"),
        (torch.softmax(masked(s / math.sqrt(d_k)), -1) @ k,
         "you multiplied the weights by K; the output is the weights times the values V"),
        (torch.softmax(masked(q @ v.transpose(-2, -1) / math.sqrt(d_k)), -1) @ v
         if q.shape == v.shape else None,
         "your scores use V instead of K: scores = Q Kᵀ / √d_k"),
    ]
    return [(o, m) for o, m in out if o is not None]


_DOT_T = ("On a batched (..., T, d_k) tensor k.T reverses ALL the dimensions, not the last two; "
          "use k.transpose(-2, -1) (or k.mT) to swap only the last two")
ATTENTION_FORBIDS = ('minigpt.attention.attention', 'torch.nn.functional.scaled_dot_product_attention')


@forbids(*ATTENTION_FORBIDS)
def check_attention(fn: Callable) -> None:
    """Check ``fn(q, k, v, mask=None)``: scaled dot-product attention.

    ``fn`` returns the output ``softmax(QKᵀ/√d_k + mask)·V`` of shape (..., T, d_v), or a
    tuple ``(output, weights)``, whose weights are then checked too; ``mask`` is boolean, True
    where a query may attend.
    """
    g = torch.Generator().manual_seed(seeded(2024))
    sizes = [(2, 3, 7, 16, 5)]  # d_v != T and != d_k, so shape mistakes show
    if is_hidden():  # other sizes: odd head counts, a short and an edge case (T = 1 or a long sequence)
        r = draw(2024)
        sizes = []
        for T in (r.randint(2, 12), r.choice([1, r.randint(40, 70)])):
            d_k = r.choice([4, 8, 12, 32])
            sizes.append((r.randint(1, 3), r.choice([1, 3, 5]), T, d_k,
                          r.choice([v for v in (3, 5, 6, 9) if v not in (T, d_k)])))
    for B, H, T, d_k, d_v in sizes:
        q = torch.randn(B, H, T, d_k, generator=g) * 1.5
        k = torch.randn(B, H, T, d_k, generator=g) * 1.5
        v = torch.randn(B, H, T, d_v, generator=g)
        mask = causal_mask(T)
        for m in (None, mask):
            label = "with the causal mask" if m is not None else "without a mask"
            y, w = _first(_call(fn, q.clone(), k.clone(), v.clone(), m, what="your attention function",
                                explain=lambda e: _DOT_T if _uses_dot_T(fn) else None))
            y = _tensor(y, "the attention output")
            ref, ref_w = attention(q, k, v, m)
            if _same(y, ref):
                if w is None:
                    continue
                w = _tensor(w, "the attention weights (the second thing you returned)")
                if _same(w, ref_w):
                    continue
                s = q @ k.transpose(-2, -1) / math.sqrt(d_k)
                if _same(w, s if m is None else s.masked_fill(~m, float("-inf"))):
                    fail(f"({label}) your output is right, but the weights you returned are the scores before "
                         "the softmax; return the softmax probabilities (each row sums to 1)")
                fail(f"({label}) your output is right, but the weights you returned differ from the softmax "
                     f"probabilities softmax(QKᵀ/√d_k + M) of shape {tuple(ref_w.shape)} = (..., T, T)")
            if torch.isnan(y).any():
                fail(f"({label}) your output contains NaN: some row had every key masked out. Is your mask "
                     "the right way round? True means 'may attend': use masked_fill(~mask, -inf) or "
                     "masked_fill(mask == 0, -inf)")
            if y.shape == ref_w.shape and y.shape != ref.shape and _same(y, ref_w):
                fail(f"({label}) you returned the attention weights; the output is weights @ V")
            for variant, message in _variants(q, k, v, m):
                if _same(y, variant):
                    fail(f"({label}) {message}")
            if y.shape != ref.shape:
                fail(f"({label}) your output has shape {tuple(y.shape)}, expected {tuple(ref.shape)} = "
                     "(..., T, d_v): one d_v-vector per query (weights (T, T) @ V (T, d_v))")
            if w is not None and isinstance(w, torch.Tensor) and w.shape == ref_w.shape:
                sums = w.detach().double().sum(-1)
                if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                    fail(f"({label}) your attention rows do not sum to 1 — did you apply softmax over the "
                         "last dimension (dim=-1)?")
            worst = (y.double() - ref.double()).abs().max().item()
            fail(f"({label}) your output differs from minigpt.attention (largest difference {worst:.3g}). "
                 "Compute scores = q @ k.transpose(-2, -1) / math.sqrt(d_k), mask, softmax(dim=-1), then @ v")
    passed("attention matches minigpt.attention, with and without the causal mask")


def _mask_cases(hidden: bool) -> list[tuple[int, int | None]]:
    """(t_q, t_k) for :func:`check_causal_mask`; ``t_k = None`` calls ``fn(t_q)``, the square mask.
    Visible: a square mask, queries that are the last 2 of 6 keys, one query of 5 keys. Hidden: other
    sizes, with t_q = t_k (both spelled out), t_q = 1 (the KV-cache step) and 1 < t_q < t_k."""
    if not hidden:
        return [(4, None), (2, 6), (1, 5)]
    r = draw(3)
    t = r.randint(7, 12)
    t_q = r.randint(3, 8)
    return [(r.randint(5, 9), None), (t_q, t_q + r.randint(3, 20)), (t, t), (1, r.randint(8, 30))]


@forbids('minigpt.attention.causal_mask')
def check_causal_mask(fn: Callable) -> None:
    """Check ``fn(t_q, t_k=None)``: the (t_q, t_k) boolean causal mask for t_q queries that are the
    LAST t_q of t_k positions (``t_k`` defaults to ``t_q``), True where query i may attend to key j:
    query i sits at position t_k - t_q + i, so j <= t_k - t_q + i. Compared with
    :func:`minigpt.causal_mask`."""
    for t_q, t_k in _mask_cases(is_hidden()):
        args = (t_q,) if t_k is None else (t_q, t_k)
        t_k = t_q if t_k is None else t_k
        call = f"my_causal_mask({', '.join(map(str, args))})"

        def explain(e: Exception) -> str | None:
            if isinstance(e, TypeError) and len(args) == 1:
                return "called with one argument, t_k defaults to t_q (the square mask): def my_causal_mask(t_q, t_k=None)"
            return None

        got = _tensor(_call(fn, *args, what=call, explain=explain),
                      f"the mask of {call}")
        ref = causal_mask(t_q, t_k)
        ones = torch.ones(t_q, t_k, dtype=torch.bool)
        shape = tuple(got.shape)
        if shape != (t_q, t_k):
            if shape == (t_k, t_q):
                fail(f"{call} has shape {shape}, transposed: rows are the t_q queries and columns the t_k "
                     f"keys, so the shape is (t_q, t_k) = ({t_q}, {t_k})")
            if t_q != t_k and shape in ((t_q, t_q), (t_k, t_k)):
                fail(f"{call} is square, {shape}: with t_q queries and t_k keys the mask has t_q rows and "
                     f"t_k columns, ({t_q}, {t_k}) — the queries are the last t_q of the t_k positions")
            fail(f"{call} has shape {shape}, expected (t_q, t_k) = ({t_q}, {t_k})")
        if got.dtype != torch.bool:
            vals = set(got.unique().tolist())
            if float("-inf") in vals and vals <= {0.0, float("-inf")}:
                fail("you returned an additive mask (0 and -inf); this exercise asks for a boolean mask, "
                     "True where a query may attend")
            fail(f"your mask has dtype {got.dtype}; it must be boolean (dtype=torch.bool), True where a query "
                 "may attend: ~mask and masked_fill(~mask, ...) need booleans")
        if torch.equal(got, ref):
            continue
        offset = t_k - t_q
        if torch.equal(got, ~ref):
            fail("your mask is inverted: True must mean 'may attend' (keys up to the query's own "
                 "position, itself included), not 'masked out'")
        if offset and torch.equal(got, torch.tril(ones)):
            fail(f"{call}: you aligned the triangle top-left, as if query 0 were position 0; the queries are "
                 "the LAST t_q positions, so query i is at position t_k - t_q + i and sees keys "
                 "j <= t_k - t_q + i: shift the diagonal by t_k - t_q")
        if offset and torch.equal(got, torch.tril(ones, diagonal=-offset)):
            fail(f"{call}: you shifted the diagonal the wrong way (by t_q - t_k); query i is at position "
                 "t_k - t_q + i, so it sees keys j <= t_k - t_q + i")
        if any(torch.equal(got, torch.triu(ones, diagonal=d)) for d in {0, offset, offset + 1, 1}):
            fail("your mask lets each query see the future: it is an upper triangle (torch.triu), or the lower "
                 "one transposed; rows are queries and columns keys, and row i is True up to the query's own "
                 "position (torch.tril)")
        if torch.equal(got, torch.tril(ones, diagonal=offset - 1)):
            fail("your mask excludes the diagonal: a query may attend to its own position (<=, not <)")
        if got.all():
            fail("your mask allows everything: nothing is masked, so queries see the future")
        fail(f"{call} is wrong: query i (at position t_k - t_q + i) should be True for keys "
             "0 … t_k - t_q + i and False after")
    passed("causal mask right for t_q queries at the end of t_k positions, square or not")


def check_split_heads(fn: Callable) -> None:
    """Check ``fn(x, n_head)``: (B, T, C) -> (B, n_head, T, C // n_head)."""
    g = torch.Generator().manual_seed(seeded(7))
    sizes = [(2, 5, 12, 3)]
    if is_hidden():  # odd head counts (head size != n_head), then an edge case: one head or T = 1
        r = draw(7)
        nh = r.choice([3, 5, 7])
        sizes = [(r.randint(1, 3), r.randint(2, 9), nh * r.choice([h for h in (2, 4, 6) if h != nh]), nh),
                 (r.randint(1, 3), 1, 6, 3) if r.random() < 0.5 else (2, r.randint(2, 9), 8, 1)]
    for B, T, C, nh in sizes:
        x = torch.randn(B, T, C, generator=g)
        got = _tensor(_call(fn, x.clone(), nh, what="your split_heads function"), "the split heads")
        ref = x.view(B, T, nh, C // nh).transpose(1, 2)
        if _same(got, ref):
            continue
        if got.shape != ref.shape:
            fail(f"your result has shape {tuple(got.shape)}, expected {tuple(ref.shape)} = "
                 "(B, n_head, T, head_size)")
        if _same(got, x.reshape(B, nh, T, C // nh)):
            fail("you reshaped straight to (B, n_head, T, head_size), which mixes positions and heads: "
                 "the channels of one position are laid out head after head, so view as "
                 "(B, T, n_head, head_size) first, then .transpose(1, 2)")
        if _same(got, x.view(B, T, C // nh, nh).permute(0, 3, 1, 2)):
            fail("you split the channels as (head_size, n_head); head h owns the consecutive channels "
                 "h*head_size … (h+1)*head_size - 1: view as (B, T, n_head, head_size)")
        fail("your split heads differ from x.view(B, T, n_head, C // n_head).transpose(1, 2)")

    passed("heads split correctly: (B, T, C) -> (B, n_head, T, head_size)")


MULTI_HEAD_FORBIDS = ('minigpt.attention.attention', 'minigpt.attention.CausalSelfAttention.forward',
                      'torch.nn.functional.scaled_dot_product_attention')


@forbids(*MULTI_HEAD_FORBIDS)
def check_multi_head(fn: Callable) -> None:
    """Check ``fn(x, attn)``: multi-head causal self-attention by hand with a
    :class:`~minigpt.attention.CausalSelfAttention`'s weights (``attn.c_attn``, ``attn.c_proj``,
    ``attn.n_head``), compared with ``attn(x)``."""
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=4, n_embd=16)
    B, T = 2, 6
    if is_hidden():  # odd head counts, T = 1 or the full block
        r = draw(11)
        nh = r.choice([3, 5])  # odd head counts; several heads and positions, so merge mistakes show
        cfg = GPTConfig(vocab_size=10, block_size=24, n_layer=1, n_head=nh, n_embd=nh * r.choice([2, 4, 6]))
        B, T = r.randint(1, 3), r.choice([24, r.randint(2, 12)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeded(11))
        attn = CausalSelfAttention(cfg).eval()
        with torch.no_grad():  # non-zero biases, so a forgotten bias shows
            for p in attn.parameters():
                p.normal_(0.0, 0.3)
        x = torch.randn(B, T, cfg.n_embd)
    with torch.no_grad():
        ref = attn(x)[0]
        got = _tensor(_call(fn, x.clone(), attn, what="your multi-head attention"),
                      "the output")
        if _same(got, ref, atol=1e-4):
            passed("multi-head attention matches minigpt's CausalSelfAttention")
            return
        if got.shape != ref.shape:
            fail(f"your output has shape {tuple(got.shape)}, expected {tuple(ref.shape)} = (B, T, n_embd); "
                 "after the heads, put them side by side again: .transpose(1, 2) then .reshape(B, T, C) "
                 "(.view refuses the non-contiguous result of a transpose)")
        B, T, C = x.shape
        nh, hs = attn.n_head, C // attn.n_head
        q, k, v = attn.c_attn(x).split(C, dim=2)
        heads = [t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v)]

        def finish(y, proj=True):
            y = y.transpose(1, 2).reshape(B, T, C)
            return attn.c_proj(y) if proj else y

        y_ok = attention(*heads, causal_mask(T))[0]
        candidates = [
            (attn.c_proj(y_ok.reshape(B, T, C)) if nh > 1 and T > 1 else None,
             "you merged the heads without transposing back: y is (B, n_head, T, head_size), so "
             "y.transpose(1, 2) first (positions before heads), then .reshape(B, T, C)"),
            (finish(y_ok, proj=False),
             "you forgot the output projection: apply attn.c_proj (W_O) to the concatenated heads"),
            (finish(attention(*heads)[0]),
             "missing causal mask: each token attends to later tokens too; pass causal_mask(T)"),
            (finish(attention(*(t.view(B, T, 1, C).transpose(1, 2) for t in (q, k, v)), causal_mask(T))[0]),
             "you used one big head of size n_embd instead of n_head heads of size n_embd // n_head"),
            (finish(torch.softmax((heads[0] @ heads[1].transpose(-2, -1)).masked_fill(~causal_mask(T), float("-inf")), -1) @ heads[2]),
             "no √d_k scaling: divide the scores by math.sqrt(head_size) (the size of one head, not n_embd)"),
            (finish(torch.softmax((heads[0] @ heads[1].transpose(-2, -1) / math.sqrt(C)).masked_fill(~causal_mask(T), float("-inf")), -1) @ heads[2]),
             "you scaled by √n_embd; d_k is the size of one head, n_embd // n_head"),
        ]
        y_bad = attention(*(t.reshape(B, nh, T, hs) for t in (q, k, v)), causal_mask(T))[0]
        for merged in (finish(y_bad), attn.c_proj(y_bad.reshape(B, T, C))):
            candidates.append((merged, "you reshaped straight to (B, n_head, T, head_size), mixing positions "
                               "and heads: view as (B, T, n_head, head_size) then transpose(1, 2)"))
        for variant, message in candidates:
            if variant is not None and _same(got, variant, atol=1e-4):
                fail(message)
        worst = (got - ref).abs().max().item()
        fail(f"your output differs from CausalSelfAttention (largest difference {worst:.3g}): "
             "split c_attn(x) into q, k, v; split each into heads; attention with the causal mask; "
             "merge the heads; apply c_proj")


def _left_padded_cases(hidden: bool) -> list[tuple[int, int, int, int, int, list[int]]]:
    """(B, H, T, d_k, d_v, lengths): visible, one batch with a full row; hidden, other sizes, each
    batch with a full-length row and a length-1 row among random lengths."""
    if not hidden:
        return [(3, 2, 7, 8, 5, [5, 2, 7])]
    r = draw(13)
    cases = []
    for T in (r.randint(3, 9), r.randint(10, 16)):
        B = r.randint(3, 5)
        lengths = [T, 1] + [r.randint(1, T) for _ in range(B - 2)]
        r.shuffle(lengths)
        d_k = r.choice([4, 12, 16])
        cases.append((B, r.choice([1, 3, 4]), T, d_k, r.choice([v for v in (3, 6, 10) if v != d_k]), lengths))
    return cases


def _no_head_axis(e: Exception) -> str | None:
    if isinstance(e, RuntimeError) and "must match the size" in str(e):
        return ("If your mask has shape (B, T, T), it lacks the head axis: against scores (B, H, T, T) it "
                "needs shape (B, 1, T, T) (e.g. mask[:, None]) to broadcast over the heads")
    return None


def check_padded_causal_attention(fn: Callable) -> None:
    """Check ``fn(q, k, v, lengths)``: causal attention over a LEFT-padded batch.

    q, k (B, H, T, d_k), v (B, H, T, d_v); row b's real tokens are its last ``lengths[b]``
    positions, the first ``T - lengths[b]`` are padding. On every real query the output must equal
    PyTorch's ``F.scaled_dot_product_attention`` with the boolean mask causal AND key-is-real
    (B, 1, T, T); on padded queries any finite value is accepted (nothing reads them), NaN is not.
    """
    g = torch.Generator().manual_seed(seeded(13))
    for B, H, T, d_k, d_v, lens in _left_padded_cases(is_hidden()):
        q = torch.randn(B, H, T, d_k, generator=g) * 1.5
        k = torch.randn(B, H, T, d_k, generator=g) * 1.5
        v = torch.randn(B, H, T, d_v, generator=g)
        lengths = torch.tensor(lens)
        pos = torch.arange(T)
        real = pos[None, :] >= T - lengths[:, None]           # (B, T): True at real tokens
        causal = causal_mask(T)                                # (T, T)
        mask = causal & real[:, None, None, :]                 # (B, 1, T, T): keys that are real and not in the future
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y, _ = _first(_call(fn, q.clone(), k.clone(), v.clone(), lengths.clone(),
                            what="your padded attention function", explain=_no_head_axis))
        y = _tensor(y, "the attention output")
        if y.shape != ref.shape:
            fail(f"your output has shape {tuple(y.shape)}, expected {tuple(ref.shape)} = (B, H, T, d_v)")
        rows = real[:, None, :, None]                          # real queries, broadcast over heads and channels

        def on_real(t: torch.Tensor) -> torch.Tensor:          # pad-query rows set to 0 (even where NaN)
            return torch.where(rows, t, torch.zeros(()))

        def same(a: torch.Tensor) -> bool:
            return _same(on_real(y), on_real(a))

        if same(ref):
            if not torch.isfinite(y).all():
                fail("your real queries are right, but the rows of padded queries contain NaN or inf: in a "
                     "left-padded row every pad query may attend to nothing (its past holds only pads), so its "
                     "scores are all -inf and torch.softmax of such a row is 0/0 = NaN (PyTorch's "
                     "scaled_dot_product_attention in PyTorch 2.13 on the CPU returns 0 there instead; older versions and some fused kernels give NaN). Real code never reads those rows (their targets are "
                     "ignored by the loss), but NaN must not appear: in the next layer a pad's NaN value meets "
                     "weight 0, and 0·NaN = NaN spreads to the real tokens. Let every query attend at least to "
                     "itself: mask | torch.eye(T, dtype=torch.bool)")
            continue
        s = q @ k.transpose(-2, -1) / math.sqrt(d_k)
        right = causal & (pos[None, :] < lengths[:, None])[:, None, None, :]
        if same(attention(q, k, v, causal)[0]):
            if torch.isnan(y).any():
                fail("you masked the padded QUERIES (a whole row) instead of the padded KEYS (a column): a pad "
                     "must get no weight from anyone, so the key-padding mask goes on the last axis: "
                     "mask[b, :, i, j] is False when key j is a pad, shape (B, 1, 1, T)")
            fail("your real queries attend to the pads at the start of their row: the causal mask alone does not "
                 "hide LEFT padding, because those pads are in every real token's past. Combine the causal mask "
                 "with a key-padding mask (key j is real when j >= T - lengths[b]), on the key axis (the last)")
        eye = torch.eye(T, dtype=torch.bool)
        no_heads = causal & real[:, None, :]                   # (B, T, T): lines up with (H, T, T), not B
        variants = [
            *[(attention(q, k, v, m)[0] if B == H else None,
               "your mask has shape (B, T, T): against scores (B, H, T, T) it lines up with the HEAD axis, so "
               "head h gets row h's mask. Give it a head axis of size 1: shape (B, 1, T, T), e.g. mask[:, None]")
              for m in (no_heads, no_heads | eye)],
            (attention(q, k, v, right)[0],
             "your mask treats the batch as RIGHT-padded (real keys j < lengths[b]); here the padding is on the "
             "left: the real tokens are the LAST lengths[b] positions, j >= T - lengths[b]"),
            (attention(q, k, v, right | eye)[0],
             "your mask treats the batch as RIGHT-padded (real keys j < lengths[b]); here the padding is on the "
             "left: the real tokens are the LAST lengths[b] positions, j >= T - lengths[b]"),
            (attention(q, k, v, real[:, None, None, :])[0],
             "you forgot the causal part: with only the key-padding mask, a real token sees the later tokens of "
             "its row. Combine both masks with & (logical and)"),
            (torch.softmax(s.masked_fill(~mask, 0.0), -1) @ v,
             "you filled the masked scores with 0 instead of -inf: e⁰ = 1, so weight leaks to the pads and to the "
             "future. Use masked_fill(~mask, float('-inf'))"),
            (attention(q, k, v)[0],
             "nothing is masked: combine the causal mask with the key-padding mask and apply it before the softmax"),
            ((torch.softmax(s, -1) * mask) @ v,
             "you applied the mask after the softmax (zeroing weights), so the rows no longer sum to 1; "
             "mask the scores with -inf before the softmax instead"),
        ]
        for variant, message in variants:  # a variant may hold NaN rows: compare them as 0
            if variant is not None and _same(on_real(y).nan_to_num(), on_real(variant).nan_to_num()):
                fail(message)
        worst = (on_real(y).double() - on_real(ref).double()).abs().max().item()
        fail(f"your output on the real queries differs from F.scaled_dot_product_attention with the mask "
             f"causal & key-is-real (largest difference {worst:.3g})")
    passed("padded causal attention matches PyTorch's scaled_dot_product_attention on every real query")


GQA_FORBIDS = ('minigpt.attention.attention', 'minigpt.attention.CausalSelfAttention.forward',
               'minigpt.attention.CausalSelfAttention.project',
               'torch.nn.functional.scaled_dot_product_attention')


def _gqa_cases(hidden: bool) -> list[tuple[int, int, int, int, int]]:
    """(n_head, n_kv_head, head_size, B, T) for :func:`check_grouped_query`. Visible: 6 query heads
    sharing 2 key/value heads (groups of 3). Hidden: another grouped case (8 or 12 query heads, a
    group size other than n_kv_head, so that repeating by n_kv_head cannot pass by luck),
    multi-query attention (n_kv_head = 1), and multi-head attention (n_kv_head = n_head), one of
    them at T = 1 or the full block of 16."""
    if not hidden:
        return [(6, 2, 4, 2, 5)]
    r = draw(17)
    nh = r.choice([8, 12])
    nkv = r.choice([d for d in range(2, nh) if nh % d == 0 and d * d != nh])
    mha = r.choice([2, 5])
    return [(nh, nkv, r.choice([2, 4, 6]), r.randint(1, 3), r.randint(2, 12)),
            (r.choice([3, 4, 6]), 1, r.choice([2, 4]), r.randint(1, 3), r.choice([1, 16])),
            (mha, mha, r.choice([2, 4]), r.randint(1, 3), r.randint(2, 12))]


def _gqa_crash(e: Exception) -> str | None:
    text = str(e)
    if isinstance(e, ValueError) and "values to unpack" in text:
        return ("c_attn(x) is not three blocks of n_embd: it has (n_head + 2·n_kv_head)·head_size channels, "
                "the queries, then the keys, then the values. Split it with the sizes "
                "[n_head * head_size, n_kv_head * head_size, n_kv_head * head_size]")
    if isinstance(e, RuntimeError) and "must match the size" in text:
        return ("the queries have n_head heads but the keys and values n_kv_head: repeat each key/value "
                "head for the n_head // n_kv_head query heads of its group, along the head axis (dim=1), "
                "before the scores")
    if isinstance(e, RuntimeError) and "is invalid for input of size" in text:
        return ("a view does not fit: the queries have n_head heads, the keys and values n_kv_head heads, "
                "each of head_size = n_embd // n_head channels")
    return None


@forbids(*GQA_FORBIDS)
def check_grouped_query(fn: Callable) -> None:
    """Check ``fn(x, attn)``: grouped-query causal self-attention by hand with the weights of a
    :class:`~minigpt.attention.CausalSelfAttention` built with ``GPTConfig(n_kv_head=...)``
    (``attn.c_attn``, ``attn.c_proj``, ``attn.n_head``, ``attn.n_kv_head``, ``attn.head_size``),
    compared with ``attn(x)[0]``: query head h uses key/value head h // (n_head // n_kv_head)."""
    for i, (nh, nkv, hs, B, T) in enumerate(_gqa_cases(is_hidden())):
        cfg = GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=nh, n_kv_head=nkv, n_embd=nh * hs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeded(17) + i)
            attn = CausalSelfAttention(cfg).eval()
            with torch.no_grad():  # non-zero biases and distinct heads, so every mistake shows
                for p in attn.parameters():
                    p.normal_(0.0, 0.3)
            x = torch.randn(B, T, cfg.n_embd)
        with torch.no_grad():
            ref = attn(x)[0]  # (B, T, C)
            got = _tensor(_call(fn, x.clone(), attn, what="your grouped-query attention", explain=_gqa_crash),
                          "the output")
            if _same(got, ref, atol=1e-4):
                continue
            label = f"(n_head = {nh}, n_kv_head = {nkv})"
            if got.shape != ref.shape:
                fail(f"{label} your output has shape {tuple(got.shape)}, expected {tuple(ref.shape)} = "
                     "(B, T, n_embd): put the heads side by side again (.transpose(1, 2), then "
                     ".reshape(B, T, n_embd)) and apply attn.c_proj")
            C, g = cfg.n_embd, nh // nkv
            q, k, v = attn.c_attn(x).split([nh * hs, nkv * hs, nkv * hs], dim=2)

            def heads(t, n):  # (B, T, n·hs) -> (B, n, T, hs)
                return t.view(B, T, n, hs).transpose(1, 2)

            def run(q, k, v, mask=True, scale=math.sqrt(hs), merge=True, proj=True):
                s = q @ k.transpose(-2, -1) / scale
                if mask:
                    s = s.masked_fill(~causal_mask(T), float("-inf"))
                y = torch.softmax(s, -1) @ v  # (B, nh, T, hs)
                y = y.transpose(1, 2).reshape(B, T, C) if merge else y.reshape(B, T, C)
                return attn.c_proj(y) if proj else y

            Q = heads(q, nh)
            K, V = (heads(t, nkv).repeat_interleave(g, dim=1) for t in (k, v))
            candidates = [
                (run(Q, heads(k, nkv).repeat(1, g, 1, 1), heads(v, nkv).repeat(1, g, 1, 1)) if 1 < nkv < nh else None,
                 "query head h must use key/value head h // (n_head // n_kv_head): consecutive query heads "
                 "share one. .repeat (or torch.cat of copies) lays the key/value heads out as 0, 1, …, 0, 1, …, "
                 "which gives query head h the key/value head h % n_kv_head; use "
                 ".repeat_interleave(n_head // n_kv_head, dim=1), which lays them out as 0, 0, …, 1, 1, …"),
                (run(Q, V, K),
                 "you swapped the keys and the values: c_attn's outputs are the queries, then the keys, then the "
                 "values"),
                (run(Q, K, V, proj=False),
                 "you forgot the output projection: apply attn.c_proj (W_O) to the concatenated heads"),
                (run(Q, K, V, merge=False) if nh > 1 and T > 1 else None,
                 "you merged the heads without transposing back: y is (B, n_head, T, head_size), so "
                 "y.transpose(1, 2) first (positions before heads), then .reshape(B, T, n_embd)"),
                (run(Q, K, V, mask=False) if T > 1 else None,
                 "missing causal mask: each token attends to later tokens too; pass my_causal_mask(T)"),
                (run(Q, K, V, scale=1.0),
                 "no √d_k scaling: divide the scores by math.sqrt(head_size), the size of one head"),
                (run(Q, K, V, scale=math.sqrt(C)),
                 "you scaled by √n_embd; d_k is the size of one head, attn.head_size"),
            ]
            for variant, message in candidates:
                if variant is not None and _same(got, variant, atol=1e-4):
                    fail(f"{label} {message}")
            worst = (got - ref).abs().max().item()
            fail(f"{label} your output differs from CausalSelfAttention (largest difference {worst:.3g}): split "
                 "c_attn(x) into the queries (n_head heads) and the keys and values (n_kv_head heads each); give "
                 "query head h the key/value head h // (n_head // n_kv_head); attention with the causal mask; "
                 "merge the heads; apply c_proj")
    passed("grouped-query attention matches minigpt's CausalSelfAttention(GPTConfig(n_kv_head=...))")
