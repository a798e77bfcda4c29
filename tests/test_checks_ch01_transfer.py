"""Exercise 01.6, encoding new text by merge rank: honest answers pass (written three ways, one of
them like GPT-2's ``encoder.py``, on byte strings, independent of ``minigpt``), and each mistake the
check names, planted in a small wrong encoder, fails with its own message, on the visible inputs
and on hidden ones. Exercise 01.5, sinusoidal positions (Vaswani et al., 2017, section 3.5): the
same for the position table, with honest answers written independently of the check's formula.
Exercise 01.4, the one-hot embedding: an answer written for 1-D ids only is told the expected shape."""

from __future__ import annotations

import math
from collections import Counter
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from minigpt.checks import CheckFailed, ch01, hidden_inputs
from check_helpers import failure

OFFSETS = (0, 101, 7919, 123_457, 31_337)  # 0: the visible inputs


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def ranks(merges):
    return {tuple(p): 256 + k for k, p in enumerate(merges)}


def by_rank(ids, merges):
    rank = ranks(merges)
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
        if pair not in rank:
            break
        ids = merge(ids, pair, rank[pair])
    return ids


def each_merge_once_in_order(ids, merges):
    """Also right: a merge only creates pairs of higher rank, so one sweep through the list suffices."""
    for k, pair in enumerate(merges):
        ids = merge(ids, tuple(pair), 256 + k)
    return ids


def like_gpt2(ids, merges):
    """GPT-2's ``bpe()``: symbols are byte strings, ranks are over pairs of byte strings."""
    vocab = [bytes([i]) for i in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    bpe_ranks = {(vocab[a], vocab[b]): k for k, (a, b) in enumerate(merges)}
    word = [bytes([i]) for i in ids]
    while len(word) > 1:
        first, second = min(zip(word, word[1:]), key=lambda p: bpe_ranks.get(p, float("inf")))
        if (first, second) not in bpe_ranks:
            break
        new, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                new.append(first + second)
                i += 2
            else:
                new.append(word[i])
                i += 1
        word = new
    index = {v: i for i, v in enumerate(vocab)}
    return [index[w] for w in word]


# ---- planted mistakes, each written the way a learner might

def one_pass(ids, merges):
    rank, out, i = ranks(merges), [], 0
    while i < len(ids):
        if i < len(ids) - 1 and (ids[i], ids[i + 1]) in rank:
            out.append(rank[ids[i], ids[i + 1]])
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def first_appearance(ids, merges):
    rank = ranks(merges)
    while True:
        found = [p for p in zip(ids, ids[1:]) if p in rank]
        if not found:
            return ids
        ids = merge(ids, found[0], rank[found[0]])


def most_frequent(ids, merges):
    rank = ranks(merges)
    while True:
        counts = Counter(p for p in zip(ids, ids[1:]) if p in rank)
        if not counts:
            return ids
        pair = counts.most_common(1)[0][0]
        ids = merge(ids, pair, rank[pair])


def overlapping(ids, merges):
    rank = ranks(merges)
    while True:
        present = [p for p in zip(ids, ids[1:]) if p in rank]
        if not present:
            return ids
        pair = min(present, key=rank.get)
        out = []
        for i, t in enumerate(ids):  # i += 1 after a match: the pair's second id stays too
            out.append(rank[pair] if i < len(ids) - 1 and (ids[i], ids[i + 1]) == pair else t)
        ids = out


def pairs_of_the_bytes_only(ids, merges):
    rank = ranks(merges)
    for pair in sorted({p for p in zip(ids, ids[1:]) if p in rank}, key=rank.get):
        ids = merge(ids, pair, rank[pair])
    return ids


def one_merge(ids, merges):
    rank = ranks(merges)
    present = [p for p in zip(ids, ids[1:]) if p in rank]
    if not present:
        return ids
    pair = min(present, key=rank.get)
    return merge(ids, pair, rank[pair])


def rank_as_id(ids, merges):  # merges[k] written as k
    return [t - 256 if t >= 256 else t for t in by_rank(ids, merges)]


def wrong_id(ids, merges):  # merges[k] written as 257 + k
    return [t + 1 if t >= 256 else t for t in by_rank(ids, merges)]


def no_length_guard(ids, merges):  # min() over the pairs of a single id raises ValueError
    rank = ranks(merges)
    while True:
        pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
        if pair not in rank:
            return ids
        ids = merge(ids, pair, rank[pair])


def drops_a_byte(ids, merges):
    return by_rank(ids, merges)[:-1] if len(ids) > 3 else by_rank(ids, merges)


MISTAKES = [
    (lambda ids, merges: ids, "bytes unchanged"),
    (rank_as_id, "you wrote k"),
    (one_pass, "scanned the bytes once"),
    (first_appearance, "order they appear in the text"),
    (most_frequent, "most frequent in this text"),
    (overlapping, "your merges overlap"),
    (pairs_of_the_bytes_only, "a merge can create a pair that a later merge joins"),
    (one_merge, "applied one merge and stopped"),
    (drops_a_byte, "do not spell the chunk"),
    (no_length_guard, "fewer than two ids"),
]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("honest", [by_rank, each_merge_once_in_order, like_gpt2], ids=lambda f: f.__name__)
def test_honest_answers_pass(honest, offset, capsys):
    if offset:
        with hidden_inputs(offset):
            ch01.check_bpe_encode(honest)
        assert capsys.readouterr().out == ""
    else:
        ch01.check_bpe_encode(honest)
        assert capsys.readouterr().out.startswith("✅")


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("wrong, fragment", MISTAKES, ids=[f for _, f in MISTAKES])
def test_each_mistake_is_named(wrong, fragment, offset):
    msg = failure(ch01.check_bpe_encode, wrong, offset)
    assert fragment in msg, msg


def test_an_id_out_of_range_a_crash_and_a_wrong_type_are_named():
    with pytest.raises(CheckFailed, match="outside 0.."):
        ch01.check_bpe_encode(wrong_id)
    with pytest.raises(CheckFailed, match="ZeroDivisionError"):
        ch01.check_bpe_encode(lambda ids, merges: 1 / 0)
    with pytest.raises(CheckFailed, match="list of token ids"):
        ch01.check_bpe_encode(lambda ids, merges: bytes(ids))


def test_hidden_cases_differ_from_the_visible_ones_and_each_kind_of_case_is_there():
    from minigpt.checks.ch01 import _bpe_cases

    visible = _bpe_cases()
    with hidden_inputs(7919):
        hidden = _bpe_cases()
    assert not {c for c, _ in visible} & {c for c, _ in hidden}
    assert any(len(m) > 10 for _, m in visible) and any(len(m) > 10 for _, m in hidden)  # learned tables
    for cases in (visible, hidden):  # each kind of mistake is caught by some case, with its own answer
        for wrong, _ in MISTAKES[2:8]:
            assert any(wrong(list(c.encode()), m) != by_rank(list(c.encode()), m) for c, m in cases), wrong
        assert any(by_rank(list(c.encode()), m) == list(c.encode()) for c, m in cases)  # nothing to merge


# ---------------------------------------------------------------- 01.5: sinusoidal_positions(T, C)

def sin_annotated(T, C):  # The Annotated Transformer's PositionalEncoding: float32, exp-log frequencies
    pe = torch.zeros(T, C)
    pos = torch.arange(T).float()[:, None]
    div = torch.exp(torch.arange(0, C, 2).float() * (-math.log(10000.0) / C))
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def sin_loops(T, C):  # the paper's formula, one entry at a time, in plain Python
    return torch.tensor([[math.sin(p / 10000 ** (j / C)) if j % 2 == 0 else math.cos(p / 10000 ** ((j - 1) / C))
                          for j in range(C)] for p in range(T)], dtype=torch.float64)


def _table(T, C, *, num=None, start=0, divide=True, order="interleave"):
    pos = torch.arange(start, start + T, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, C, 2, dtype=torch.float64) if num is None else num(C)
    angle = pos / 10000 ** (two_i / C) if divide else pos * 10000 ** (two_i / C)
    sin, cos = torch.sin(angle), torch.cos(angle)
    if order == "halves":
        return torch.cat([sin, cos], 1)
    pe = torch.empty(T, C, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = (cos, sin) if order == "swap" else (sin, cos)
    return pe


def own_index(T, C):  # column j gets the exponent j/C, so the odd column of a pair has its own frequency
    j = torch.arange(C, dtype=torch.float64)
    angle = torch.arange(T, dtype=torch.float64)[:, None] / 10000 ** (j / C)
    return torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))


SIN_MISTAKES = [
    (lambda T, C: _table(T, C, order="swap"), "swapped"),
    (lambda T, C: _table(T, C, order="halves"), "interleaves"),
    (own_index, "share one frequency"),
    (lambda T, C: _table(T, C, num=lambda C: torch.arange(C // 2, dtype=torch.float64)), "you used i/C"),
    (lambda T, C: _table(T, C, num=lambda C: torch.arange(0, C, 2, dtype=torch.float64) * C), "divide 2i by the width"),
    (lambda T, C: _table(T, C, divide=False), "you multiplied"),
    (lambda T, C: _table(T, C, start=1), "count from 0"),
    (lambda T, C: sin_annotated(T, C).T, "transposed"),
    (lambda T, C: sin_annotated(T, C).round().long(), "float tensor"),
    (lambda T, C: sin_annotated(T, C).tolist(), "return a tensor"),
]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("honest", [sin_annotated, sin_loops, _table], ids=lambda f: f.__name__)
def test_sinusoidal_honest_answers_pass(honest, offset, capsys):
    with hidden_inputs(offset) if offset else nullcontext():
        ch01.check_sinusoidal(honest)
    assert capsys.readouterr().out.startswith("✅") != bool(offset)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("wrong, fragment", SIN_MISTAKES, ids=[f for _, f in SIN_MISTAKES])
def test_each_sinusoidal_mistake_is_named(wrong, fragment, offset):
    msg = failure(ch01.check_sinusoidal, wrong, offset)
    assert fragment in msg, msg


def test_sinusoidal_hidden_cases_differ_and_reach_long_tables():
    visible = ch01._sinusoid_cases()
    for offset in OFFSETS[1:]:
        with hidden_inputs(offset):
            cases = ch01._sinusoid_cases()
        assert not set(cases) & set(visible)
        assert any(T >= 200 for T, _ in cases) and any(T == 1 for T, _ in cases)
        assert all(C % 2 == 0 for _, C in cases)


def test_the_reference_table_is_the_papers_formula():  # two values worked out by hand
    pe = ch01._sinusoids(3, 4)
    assert pe[0].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert pe[2, 0].item() == pytest.approx(math.sin(2)) and pe[2, 3].item() == pytest.approx(math.cos(2 / 100))


# ---------------------------------------------------------------- 01.4: embed_onehot(ids, E), ids of any shape

def onehot_of_a_list(ids, E):  # written for a 1-D sequence only: one row per id, batch axes lost
    return F.one_hot(ids.flatten(), E.shape[0]).to(E.dtype) @ E


def test_onehot_answer_for_1d_ids_only_is_told_the_result_has_shape_ids_shape_plus_C(capsys):
    ch01.check_onehot_embedding(onehot_of_a_list)  # the visible ids are a 1-D sequence
    assert capsys.readouterr().out.startswith("✅")
    for offset in range(1, 21):
        shapes = []
        with hidden_inputs(offset):  # the honest answer, recording the shapes of the hidden ids
            ch01.check_onehot_embedding(lambda ids, E: shapes.append(ids.shape) or
                                        F.one_hot(ids, E.shape[0]).to(E.dtype) @ E)
        assert sorted(len(s) for s in shapes) == [1, 2]  # every hidden run: a sequence and a (B, T) batch
        assert "expected ids.shape + (C,) = (" in failure(ch01.check_onehot_embedding, onehot_of_a_list, offset)
