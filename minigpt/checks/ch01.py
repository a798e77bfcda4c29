"""Checks for chapter 01, tokens and embeddings.

Each check calls the learner's function on fresh inputs (random ones drawn from a private
generator, so the notebook's own random state is untouched), compares it with :mod:`minigpt`,
and when the answer is wrong, tries the usual mistakes one by one to say which one it is.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import GPTConfig
from ..model import GPT
from ..tokenizer import BPETokenizer, CharTokenizer
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_vocab", "check_pair_counts", "check_merge", "check_onehot_embedding",
           "check_input_embedding", "check_sinusoidal", "check_bpe_encode", "CheckFailed"]

_TEXT = "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer"


def _call(fn: Callable, *args, what: str = "your function", hints: tuple[tuple[str, str], ...] = ()):
    """Call ``fn(*args)``; a crash fails the check, with the hint whose fragments all occur in the error
    (``hints``: pairs of "fragment|fragment" and the mistake it names), else with the error itself."""
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            for fragments, hint in hints:
                if all(f in str(e) for f in fragments.split("|")):
                    fail(f"{what} raised {type(e).__name__}: {hint}")
            fail(f"{what} raised {type(e).__name__}: {e}")
    return out


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-5))


@forbids('minigpt.tokenizer.CharTokenizer.from_text', 'minigpt.tokenizer.CharTokenizer.__init__')
def check_vocab(fn: Callable) -> None:
    """Check ``fn(text) -> (stoi, itos)``: itos the sorted distinct characters, stoi its inverse."""
    text = _TEXT
    if is_hidden():  # another text: other characters, a newline, non-ASCII, repeats
        r = draw(1)
        pool = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-éàüç0123456789"
        text = "".join(r.choice(pool[: r.randint(20, len(pool))]) for _ in range(r.randint(40, 120)))
    out = _call(fn, text, what="your build_vocab")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail("return a pair (stoi, itos): a dict char -> id and a list id -> char")
    stoi, itos = out
    ref = CharTokenizer.from_text(text)
    if not isinstance(stoi, dict):
        fail(f"stoi should be a dict mapping each character to its id, got {type(stoi).__name__}")
    itos = list(itos.values()) if isinstance(itos, dict) and sorted(itos) == list(range(len(itos))) else itos
    if not isinstance(itos, (list, tuple, str)):
        fail(f"itos should be a list of characters (position = id), got {type(itos).__name__}")
    itos = list(itos)
    if len(itos) != len(set(itos)):
        fail(f"itos has {len(itos)} entries but only {len(set(itos))} distinct characters: each character "
             "must appear once — use set(text)")
    if set(itos) != set(ref.chars):
        missing, extra = set(ref.chars) - set(itos), set(itos) - set(ref.chars)
        fail(f"itos should hold exactly the characters of the text (missing {sorted(missing)!r}, "
             f"extra {sorted(extra)!r})")
    if itos != ref.chars:
        if itos == list(dict.fromkeys(text)):
            fail("your vocabulary is in order of first appearance; sort it (sorted(set(text))), so that the "
                 "ids do not depend on how the text happens to begin")
        fail("itos should be sorted: sorted(set(text))")
    if any(stoi.get(c) != i for i, c in enumerate(itos)) or len(stoi) != len(itos):
        fail("stoi must be the inverse of itos: stoi[itos[i]] == i for every id i")
    passed(f"vocabulary of {len(itos)} characters matches CharTokenizer.from_text")


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """The reference merge: left to right, non-overlapping."""
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _ref_pairs(ids: list[int]) -> Counter:
    return Counter(zip(ids, ids[1:]))


def check_pair_counts(fn: Callable) -> None:
    """Check ``fn(ids) -> dict``: how often each adjacent pair ``(ids[i], ids[i+1])`` occurs."""
    cases = [[1, 2, 3, 1, 2], [5, 5, 5, 5], list("hello hello".encode()), [7]]
    if is_hidden():  # other lists: runs of one id (overlapping pairs), a single id, two ids
        r = draw(2)
        cases = [[r.choice([3, 3, 8]) for _ in range(r.randint(10, 25))] + [3, 8], [r.randint(0, 300)] * r.randint(3, 7),
                 [r.randint(0, 9), r.randint(10, 19)], [r.randint(0, 9)],
                 [r.randint(0, 4) for _ in range(r.randint(8, 40))]]
    results = []
    for ids in cases:
        got = _call(fn, list(ids), what="your pair counting")
        if not hasattr(got, "items"):
            fail(f"return a dict (or Counter) mapping each pair (a, b) to its count, got {type(got).__name__}")
        results.append((ids, {tuple(k): int(v) for k, v in got.items() if v}))
    # a mistake is named only if it explains every answer: on [1, 2, 3, 1, 2] "each pair once" and
    # "missed the last pair" give the same dict, and only the other cases tell them apart
    if all(got == {p: 1 for p in _ref_pairs(ids)} for ids, got in results):
        fail("you recorded each pair once; count how often it occurs: [5, 5, 5, 5] has the pair (5, 5) three "
             "times (collections.Counter counts)")
    for ids, got in results:
        ref = dict(_ref_pairs(ids))
        if got == ref:
            continue
        if got == dict(Counter(zip(ids[:-1], ids[1:-1]))) and len(set(ids)) > 1:
            fail(f"for ids {ids} you missed the last pair: range(len(ids) - 1) covers every adjacent pair")
        if got == dict(_ref_pairs(ids) + Counter({(ids[-1], ids[0]): 1})):
            fail(f"for ids {ids} you counted a pair that wraps around from the end to the start")
        if got == {(b, a): c for (a, b), c in ref.items()}:
            fail("your pairs are reversed: count (ids[i], ids[i+1]), in reading order")
        if set(got) == set(ref):
            fail(f"for ids {ids} you found the right pairs but wrong counts: {got}, expected {ref}. "
                 "Overlapping pairs count separately: [5, 5, 5] has the pair (5, 5) twice")
        fail(f"for ids {ids} your counts are {got}, expected {ref}: count every (ids[i], ids[i+1])")
    passed("pair counts match (including overlapping pairs and the last pair)")


def _first_only(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == tuple(pair):
            return ids[:i] + [new_id] + ids[i + 2:]
    return list(ids)


def _no_skip(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    return [new_id if i < len(ids) - 1 and (ids[i], ids[i + 1]) == tuple(pair) else t for i, t in enumerate(ids)]


@forbids('minigpt.tokenizer._merge')
def check_merge(fn: Callable) -> None:
    """Check ``fn(ids, pair, new_id) -> list``: every occurrence of ``pair`` replaced by
    ``new_id``, scanning left to right, non-overlapping (as BPE training and encoding do)."""
    cases = [([1, 2, 3, 1, 2], (1, 2), 99), ([5, 5, 5], (5, 5), 256), ([5, 5, 5, 5], (5, 5), 256),
             ([3, 1, 2, 1], (2, 1), 7), ([4, 4], (1, 2), 9), ([1, 2], (1, 2), 8)]
    if is_hidden():  # other lists: overlapping runs, a pair at the end, no occurrence, reversed pairs
        r = draw(3)
        cases = []
        for n in (r.randint(10, 30), r.randint(3, 9), r.randint(2, 6)):
            ids = [r.randint(0, 3) for _ in range(n)]
            pair = (ids[r.randrange(n - 1)], ids[-1]) if n > 1 else (0, 1)
            cases.append((ids, pair, r.randint(256, 999)))
        a = r.randint(0, 50)
        cases += [([a] * r.randint(3, 7), (a, a), r.randint(256, 999)), ([a, a + 1] * 3, (a + 1, a), 300),
                  ([a + 2, a + 3], (a + 3, a + 2), 301)]
    results = []
    for ids, pair, new_id in cases:
        got = _call(fn, list(ids), pair, new_id, what="your merge")
        got = got.tolist() if hasattr(got, "tolist") else list(got)
        results.append((ids, pair, new_id, got))
    wrong = [(ids, pair, new_id, got) for ids, pair, new_id, got in results if got != _merge(ids, pair, new_id)]
    if not wrong:
        passed("merge replaces every non-overlapping occurrence, left to right")
        return

    def everywhere(variant) -> bool:  # the learner's answers all agree with this wrong version
        return all(got == variant(ids, pair, new_id) for ids, pair, new_id, got in results)

    ids, pair, new_id, got = wrong[0]
    ref = _merge(ids, pair, new_id)
    if everywhere(lambda i, p, n: list(i)):
        fail(f"merge({ids}, {pair}, {new_id}) changed nothing; expected {ref}")
    if everywhere(lambda i, p, n: _merge(i, p[::-1], n)):
        fail("you matched the pair reversed; look for ids[i] == pair[0] and ids[i+1] == pair[1]")
    if everywhere(_first_only):
        fail(f"merge({ids}, {pair}, {new_id}) = {got}: you replaced only the first occurrence; expected {ref}")
    if everywhere(_no_skip):
        fail(f"merge({ids}, {pair}, {new_id}) = {got}: after writing new_id, skip BOTH ids of the pair "
             f"(i += 2); expected {ref}")
    if len(got) < len(ref):
        fail(f"merge({ids}, {pair}, {new_id}) = {got}, expected {ref}: occurrences must not overlap — "
             "once a pair is merged, its second id cannot start another pair")
    fail(f"merge({ids}, {pair}, {new_id}) = {got}, expected {ref}")


_LOOKUPS = ("Index", "Embedding", "Gather", "Take")  # autograd nodes of E[ids], F.embedding, E.gather, ...


def _looks_up(t: torch.Tensor) -> str | None:
    """The name of an indexing node in ``t``'s autograd graph, if any (the one-hot product has none)."""
    todo, seen = [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if any(k in type(node).__name__ for k in _LOOKUPS):
            return type(node).__name__
        todo += [nxt for nxt, _ in node.next_functions]
    return None


def check_onehot_embedding(fn: Callable) -> None:
    """Check ``fn(ids, E)``: the embedding lookup as a product, one_hot(ids, V) @ E, equal to E[ids],
    computed without indexing E (E requires grad, and the result's autograd graph is inspected).
    Hidden tests run two cases each time: a 1-D sequence of ids and a 2-D (B, T) batch."""
    g = torch.Generator().manual_seed(seeded(41))
    V, C = 10, 4
    cases = [torch.tensor([3, 1, 3, 0, 7])]  # id 9 (the largest) never appears
    if is_hidden():  # other sizes, still never the largest id; a sequence and a batch every time
        r = draw(41)
        V, C = r.randint(5, 40), r.randint(1, 9)
        cases = [torch.randint(0, V - 1, shape, generator=g)
                 for shape in ((r.randint(1, 12),), (r.randint(1, 3), r.randint(1, 6)))]
    for ids in cases:
        E = torch.randn(V, C, generator=g)
        got = _call(fn, ids.clone(), E.clone().requires_grad_(), what="your one-hot embedding",
                    hints=(("dtype", "F.one_hot returns integers (torch.int64) and E holds floats; convert the "
                                     "one-hot matrix to E's dtype before the product: .to(E.dtype)"),))
        if not isinstance(got, torch.Tensor):
            fail(f"return a tensor, got {type(got).__name__}")
        ref = E[ids]
        if (node := _looks_up(got)) is not None:
            fail(f"your result was computed by indexing E ({node} in its autograd graph); the exercise asks for "
                 "the product one_hot(ids, V) @ E, which selects the rows without indexing")
        got = got.detach()
        if _same(got, ref):
            continue
        onehot = F.one_hot(ids, V).double()
        if _same(got, onehot):
            fail("you returned the one-hot matrix; multiply it by E: one_hot(ids, V).float() @ E")
        if got.shape == (*ids.shape, int(ids.max()) + 1) or (got.dim() and got.shape[-1] == int(ids.max()) + 1 != C):
            fail("your one-hot vectors are too short: F.one_hot guesses the number of classes from the largest "
                 "id present; pass num_classes=E.shape[0] (the vocabulary size)")
        if got.shape != ref.shape:
            fail(f"the result has shape {tuple(got.shape)}, expected ids.shape + (C,) = {tuple(ref.shape)}: one "
                 "row of E per id, for ids of any shape (one_hot(ids, V) has shape ids.shape + (V,); times E (V, C))")
        fail("your result differs from E[ids]: one_hot(ids, V) has a single 1 per row, in column ids[i], so "
             "the product picks out row ids[i] of E")
    passed("one_hot(ids) @ E equals the lookup E[ids]")


def check_input_embedding(fn: Callable) -> None:
    """Check ``fn(idx, wte, wpe)``: the GPT's input x = wte[idx] + wpe[0..T-1], idx (B, T),
    wte (V, C), wpe (block_size, C); compared with what ``minigpt.GPT`` feeds its first block."""
    cfg = GPTConfig(vocab_size=12, block_size=16, n_layer=1, n_head=1, n_embd=6)
    B, T = 2, 5
    if is_hidden():  # other sizes; T = 1 and T = 15, one short of block_size, included
        r = draw(43)
        # ids < block_size and T < block_size, so wpe[idx] and wpe[pos + 1] are named, not a crash
        cfg = GPTConfig(vocab_size=r.randint(5, 16), block_size=16, n_layer=1, n_head=1, n_embd=r.randint(2, 9))
        B, T = r.randint(1, 4), r.choice([1, 15, r.randint(2, 14)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeded(43))
        model = GPT(cfg).eval()
    g = torch.Generator().manual_seed(seeded(47))
    idx = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    captured = {}
    hook = model.transformer.drop.register_forward_hook(lambda m, inp, out: captured.setdefault("x", inp[0]))
    try:
        with torch.no_grad():
            model(idx)
    finally:
        hook.remove()
    ref = captured["x"]
    wte, wpe = model.transformer.wte.weight.detach(), model.transformer.wpe.weight.detach()
    got = _call(fn, idx.clone(), wte.clone(), wpe.clone(), what="your input embedding",
                hints=((f"must match the size of tensor b ({cfg.block_size})",
                        "you added the whole position table wpe (block_size rows) to a sequence of T "
                        "tokens; take its first T rows, one per position: wpe[torch.arange(T)]"),))
    if not isinstance(got, torch.Tensor):
        fail(f"return a tensor, got {type(got).__name__}")
    got = got.detach()
    if _same(got, ref):
        passed("token + position embedding matches the input of minigpt.GPT's first block")
        return
    B, T = idx.shape
    C = cfg.n_embd
    if got.shape == (B, T, 2 * C):
        fail(f"your result has shape {tuple(got.shape)}: you concatenated instead of added the position "
             "embeddings. The GPT adds them, x = wte[idx] + wpe[pos], so the width stays n_embd")
    if got.shape != ref.shape:
        fail(f"your result has shape {tuple(got.shape)}, expected {tuple(ref.shape)} = (B, T, n_embd)")
    pos = torch.arange(T)
    n_pos = wpe.shape[0]
    for variant, message in [
        (wte[idx], "you forgot to add position embeddings: x = wte[idx] + wpe[torch.arange(T)]"),
        (wte[idx] + wpe[idx] if int(idx.max()) < n_pos else None,
         "you looked up the position table with the token ids; index it with the positions 0..T-1: "
         "wpe[torch.arange(T)]"),
        (wte[idx] + wpe[pos + 1] if T < n_pos else None, "positions start at 0: wpe[torch.arange(T)], not 1..T"),
        (wte[idx] * wpe[pos], "you multiplied; the position embedding is added: wte[idx] + wpe[pos]"),
        (wpe[pos].expand(B, T, C), "you forgot the token embeddings: x = wte[idx] + wpe[pos]"),
    ]:
        if variant is not None and _same(got, variant):
            fail(message)
    fail("your result differs from wte[idx] + wpe[torch.arange(T)]")


# ---------------------------------------------------------------- 01.5: sinusoidal positions

def _sinusoids(T: int, C: int, *, two_i=None, start: int = 0, base: float = 10000.0, divide: bool = True,
               order: str = "interleave") -> torch.Tensor:
    """Vaswani et al. (2017, section 3.5), written out in float64: PE[pos, 2i] = sin(pos / base^(2i/C)),
    PE[pos, 2i+1] = cos(the same). The keywords build the usual wrong versions: ``two_i`` the exponents'
    numerators per pair (default 2i), ``start`` the first position, ``divide=False`` multiplies by the
    factor, ``order`` "interleave" (the paper), "swap" (cos first) or "halves" (all sines, then all cosines)."""
    pos = torch.arange(start, start + T, dtype=torch.float64)[:, None]          # (T, 1)
    num = torch.arange(0, C, 2, dtype=torch.float64) if two_i is None else two_i  # (C/2,)
    factor = base ** (num / C)
    angle = pos / factor if divide else pos * factor                              # (T, C/2)
    sin, cos = torch.sin(angle), torch.cos(angle)
    if order == "halves":
        return torch.cat([sin, cos], dim=1)
    first, second = (cos, sin) if order == "swap" else (sin, cos)
    return torch.stack([first, second], dim=2).reshape(T, C)                    # columns 2i, 2i+1 side by side


def _sinusoid_cases() -> list[tuple[int, int]]:
    """(T, C): visible, 10 positions of width 16. Hidden: other sizes, a long table of a GPT-like
    width (float32 rounding grows with the position), and one position of one or two pairs."""
    if not is_hidden():
        return [(10, 16)]
    r = draw(53)
    return [(r.randint(11, 50), r.choice([6, 12, 20, 32])), (r.choice([200, 512]), r.choice([64, 128])),
            (1, r.choice([2, 4]))]


def check_sinusoidal(fn: Callable) -> None:
    """Check ``fn(T, C)``: the (T, C) sinusoidal position table of Vaswani et al. (2017, section 3.5),
    PE[pos, 2i] = sin(pos / 10000^(2i/C)), PE[pos, 2i+1] = cos(pos / 10000^(2i/C)), for even C;
    compared with the formula computed here in float64."""
    for T, C in _sinusoid_cases():
        got = _call(fn, T, C, what=f"your sinusoidal_positions({T}, {C})")
        if not isinstance(got, torch.Tensor):
            fail(f"return a tensor, got {type(got).__name__}")
        got = got.detach()
        if not got.is_floating_point():
            fail(f"your table has dtype {got.dtype}; sines and cosines need a float tensor (torch.float32 or float64)")
        ref = _sinusoids(T, C)
        if got.shape == (C, T) and T != C:
            fail(f"your table has shape {tuple(got.shape)}, transposed: one row per position, one column per "
                 "channel, (T, C)")
        if got.shape != ref.shape:
            fail(f"your table has shape {tuple(got.shape)}, expected (T, C) = ({T}, {C})")
        if _same(got, ref, atol=1e-4):
            continue
        pairs = torch.arange(0, C, 2, dtype=torch.float64)
        col = torch.arange(C, dtype=torch.float64)
        own = torch.arange(T, dtype=torch.float64)[:, None] / 10000 ** (col / C)  # (T, C): each column its own index
        for variant, message in [
            (_sinusoids(T, C, order="swap"),
             "sine and cosine are swapped: the even columns 2i hold the sine, the odd columns 2i+1 the cosine"),
            (_sinusoids(T, C, order="halves"),
             "you put all the sines first, then all the cosines; the paper interleaves them: column 2i is the "
             "sine and column 2i+1 the cosine of the same frequency"),
            (torch.where(col % 2 == 0, torch.sin(own), torch.cos(own)),
             "columns 2i and 2i+1 share one frequency: the exponent is 2i/C for both, where 2i is the even "
             "column of the pair; you gave the odd column its own index 2i+1"),
            (_sinusoids(T, C, two_i=pairs / 2),
             "the exponent is 2i/C, with i counting the pairs of columns (2i is the even column's index); you "
             "used i/C, which makes the frequencies fall too slowly"),
            (_sinusoids(T, C, two_i=pairs * C),
             "the exponent is 2i/C: divide 2i by the width C, or almost every column is sin 0 = 0 and cos 0 = 1"),
            (_sinusoids(T, C, divide=False),
             "divide the position by 10000^(2i/C); you multiplied"),
            (_sinusoids(T, C, start=1),
             "positions count from 0: the first row is position 0, where every sine is 0 and every cosine 1"),
        ]:
            if _same(got, variant, atol=1e-4):
                fail(message)
        worst = (got.double() - ref).abs().max().item()
        fail(f"your table differs from sin(pos / 10000^(2i/C)) in the even columns and cos of the same in the odd "
             f"ones (largest difference {worst:.3g})")
    passed("sinusoidal positions match the formula of Vaswani et al. (2017, section 3.5)")


# ---------------------------------------------------------------- 01.6: encoding by merge rank
# Each wrong way below takes (ids, ranks), ranks = {pair: new id}, and must stop on any input.

def _table(pairs: list[tuple[str | bytes, str | bytes]]) -> list[tuple[int, int]]:
    """Merges written as strings: [("t", "h"), ("th", "e")] -> [(116, 104), (256, 101)]."""
    ids = {bytes([i]): i for i in range(256)}
    merges = []
    for a, b in pairs:
        a, b = (x.encode() if isinstance(x, str) else x for x in (a, b))
        merges.append((ids[a], ids[b]))
        ids[a + b] = 255 + len(merges)
    return merges


def _lowest(ids: list[int], ranks: dict) -> tuple[int, int] | None:
    pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, 1 << 62), default=None)
    return pair if pair in ranks else None


def _one_pass(ids, ranks):  # one scan, left to right, merging whatever pair is in the table
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) in ranks:
            out.append(ranks[ids[i], ids[i + 1]])
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _by_position(pick):
    def encode(ids, ranks):
        while (pair := pick(ids, ranks)) is not None:
            ids = _merge(ids, pair, ranks[pair])
        return ids
    return encode


_leftmost = _by_position(lambda ids, ranks: next((p for p in zip(ids, ids[1:]) if p in ranks), None))


def _pick_frequent(tie_by_rank: bool):
    def pick(ids, ranks):
        counts = Counter(p for p in zip(ids, ids[1:]) if p in ranks)  # in order of first appearance
        if not counts:
            return None
        return min(counts, key=lambda p: (-counts[p], ranks[p])) if tie_by_rank else counts.most_common(1)[0][0]
    return pick


_most_frequent = _by_position(_pick_frequent(True))
_most_frequent_first_seen = _by_position(_pick_frequent(False))
_by_rank = _by_position(_lowest)


def _overlapping(ids, ranks):  # after writing the new id, step one place, not two
    while (pair := _lowest(ids, ranks)) is not None:
        ids = _no_skip(ids, pair, ranks[pair])
    return ids


def _original_pairs_only(ids, ranks):  # the pairs of the bytes, by rank; none that merges create
    for pair in sorted({p for p in zip(ids, ids[1:]) if p in ranks}, key=ranks.get):
        ids = _merge(ids, pair, ranks[pair])
    return ids


def _single_merge(ids, ranks):
    pair = _lowest(ids, ranks)
    return ids if pair is None else _merge(ids, pair, ranks[pair])


def _rank_as_id(ids, ranks):  # merges[k] written as k, not 256 + k
    return [t - 256 if t >= 256 else t for t in _by_rank(ids, ranks)]


_BPE_MISTAKES = [
    (lambda ids, ranks: list(ids), "you returned the bytes unchanged: apply the merges"),
    (_rank_as_id, "merges[k] makes the token 256 + k (ids 0-255 are the bytes); you wrote k"),
    (_one_pass, "you scanned the bytes once, left to right, merging any pair found in merges. Position "
                "does not decide, rank does: merge the pair with the LOWEST rank first, then look again, "
                "because a merge creates new pairs"),
    (_leftmost, "you merged pairs in the order they appear in the text; BPE merges the pair with the "
                "lowest rank (learned earliest) first, wherever it is"),
    *((wrong, "you merged the pair that is most frequent in this text, as training does; encoding ignores "
               "the new text's counts and merges the pair with the lowest rank first")
      for wrong in (_most_frequent, _most_frequent_first_seen)),
    (_overlapping, "your merges overlap: after writing the new id, skip both ids of the pair, so that in "
                   "'aaa' the pair ('a', 'a') merges once, at the left"),
    (_original_pairs_only, "a merge can create a pair that a later merge joins ('th' + 'e' exists only once "
                           "'t' + 'h' has merged): after each merge, look again for the lowest-ranked pair, "
                           "among the new pairs too"),
    (_single_merge, "you applied one merge and stopped; repeat until no adjacent pair is in merges"),
]


def _bpe_cases() -> list[tuple[str, list[tuple[int, int]]]]:
    """(chunk, merges): merges learned from a text, and tables built so that each wrong way differs."""
    if not is_hidden():
        learned = BPETokenizer.train(_TEXT, 256 + 24).merges
        return [(" tomorrow", learned), (" and", learned), (" creeps", learned), ("Whence", learned),
                ("abcab", _table([("b", "c"), ("a", "b")])),          # rank, not position or frequency
                ("abcbc", _table([("a", "b"), ("b", "c")])),          # rank, not frequency
                ("there", _table([("t", "h"), ("h", "e"), ("th", "e"), ("r", "e"), ("e", "r")])),  # new pairs
                ("aaaaa", _table([("a", "a"), ("aa", "a")])),         # overlaps
                (" café", _table([(b"\xc3", b"\xa9"), ("f", "é"), (" ", "c"), ("a", "fé")])),  # bytes
                ("xyz", _table([("a", "b"), ("b", "c")])),            # nothing to merge
                ("ab", _table([("a", "b")])), ("I", learned)]         # merged into one token; one byte
    r = draw(61)  # other letters, lengths and texts; the same kinds of cases
    x, y, z, u, w = r.sample("bdfgkmpqvwxz", 5)
    words = ["".join(r.choice("aeio" + x + y + z) for _ in range(r.randint(2, 6))) for _ in range(40)]
    learned = BPETokenizer.train(" ".join(words), 256 + r.randint(12, 30)).merges
    new = ["".join(r.choice("aeio" + x + y + z) for _ in range(r.randint(5, 12))) for _ in range(3)]
    n = r.randint(3, 9)
    return [*((" " + word, learned) for word in new),
            (x + y + z + (x + y) * r.randint(1, 3), _table([(y, z), (x, y)])),
            (x + (y + z) * r.randint(2, 4), _table([(x, y), (y, z)])),
            (u + x + w + y + w, _table([(u, x), (x, w), (u + x, w), (y, w), (w, y)])),
            (x * n, _table([(x, x), (x + x, x)] if r.random() < 0.5 else [(x, x), (x + x, x + x)])),
            (u + "é" * r.randint(1, 3), _table([(b"\xc3", b"\xa9"), ("é", "é"), (u, "é")])),
            (z + w, _table([(x, y)])),
            (u, _table([(u, u)]))]


@forbids('minigpt.tokenizer.BPETokenizer.__init__', 'minigpt.tokenizer.BPETokenizer.encode',
         'minigpt.tokenizer.BPETokenizer._encode_chunk', 'minigpt.tokenizer._merge')
def check_bpe_encode(fn: Callable) -> None:
    """Check ``fn(ids, merges) -> list``: the bytes of one chunk encoded with learned merges, merging
    the adjacent pair of lowest rank first (``merges[k]`` makes token ``256 + k``), as GPT-2's encoder
    does; compared with ``BPETokenizer(merges)`` on texts and merge tables the chapter never shows."""
    results = []
    for chunk, merges in _bpe_cases():
        ids = list(chunk.encode("utf-8"))
        got = _call(fn, list(ids), [tuple(m) for m in merges], what="your BPE encoder",
                    hints=(("min()|empty", "a list of one id has no adjacent pair, so min() over its pairs "
                                           "fails: stop when fewer than two ids are left (a chunk of one "
                                           "byte, or one whose merges joined it into a single token)"),))
        got = got.tolist() if hasattr(got, "tolist") else got
        if not isinstance(got, (list, tuple)) or not all(isinstance(t, int) for t in got):
            fail(f"return a list of token ids (ints), got {type(got).__name__}")
        tok = BPETokenizer(merges)
        results.append((chunk, ids, {p: 256 + k for k, p in enumerate(merges)}, tok, list(got),
                        tok._encode_chunk(chunk)))
    if all(got == ref for *_, got, ref in results):
        passed("encoding by merge rank matches minigpt's BPETokenizer (trained and hand-made merge tables)")
        return
    for wrong, message in _BPE_MISTAKES:
        if all(got == wrong(ids, ranks) for _, ids, ranks, _, got, _ in results):
            fail(message)
    for chunk, _, ranks, tok, got, _ in results:
        if any(not 0 <= t < tok.vocab_size for t in got):
            fail(f"for {chunk!r} you returned ids outside 0..{tok.vocab_size - 1}: merges[k] makes the token "
                 f"256 + k, so with {len(ranks)} merges the last one is {tok.vocab_size - 1}")
    chunk, ids, ranks, tok, got, ref = next(c for c in results if c[4] != c[5])
    if b"".join(tok.vocab[t] for t in got) != chunk.encode("utf-8"):
        fail(f"for {chunk!r} your tokens {tok.tokens(got)} do not spell the chunk: each merge replaces its two "
             "ids by the one id of the pair, and keeps every other id")
    fail(f"for {chunk!r} your tokens are {tok.tokens(got)}, which is not what merging the lowest-ranked "
         "pair first, until none is left, gives")
