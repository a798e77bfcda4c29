"""Exercise 01.6, encoding new text by merge rank: honest answers pass (written three ways, one of
them like GPT-2's ``encoder.py``, on byte strings, independent of ``minigpt``), and each mistake the
check names, planted in a small wrong encoder, fails with its own message, on the visible inputs
and on hidden ones."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext

import pytest

from minigpt.checks import CheckFailed, ch01, hidden_inputs

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
    with hidden_inputs(offset) if offset else nullcontext():
        with pytest.raises(CheckFailed) as info:
            ch01.check_bpe_encode(wrong)
    assert fragment in str(info.value), str(info.value)


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
