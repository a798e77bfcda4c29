"""Chapter 07's transfer exercise 07.5 (diagnose repetition): the honest answers pass, and each
typical mistake, planted in a small wrong implementation, fails with the message that names it."""

from __future__ import annotations

from collections import Counter

import pytest

from minigpt.checks import CheckFailed, ch07
from check_helpers import fails_with, passes


def _rate(ids, n, *, first=False, sets=False, last=True, denom="grams", new=False, count=False, raw=False):
    """The repetition rate, or one of its typical mistakes (the keyword that is not its default)."""
    ids = ids if raw else ids.tolist()  # raw: tuples of tensor elements, which hash by identity
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + (1 if last else 0))]
    if not grams:
        return 0.0
    seen, repeats = Counter(), 0
    for g in grams:
        repeats += seen[g] > 0
        seen[g] += 1
    if first:
        repeats = sum(c for c in seen.values() if c > 1)
    if sets:
        repeats = sum(1 for c in seen.values() if c > 1)
    if new:
        repeats = len(seen)
    if count:
        return float(repeats)
    return repeats / {"grams": len(grams), "tokens": len(ids), "distinct": len(seen),
                      "one_less": max(1, len(grams) - 1)}[denom]


def test_repetition_rate_honest_answer_passes(capsys):
    passes(ch07.check_repetition_rate, _rate, capsys)


def test_one_minus_the_distinct_fraction_is_the_same_quantity(capsys):
    def one_minus_distinct(ids, n):  # every n-gram after its first occurrence is a repeat
        grams = [tuple(ids[i:i + n].tolist()) for i in range(len(ids) - n + 1)]
        return 1 - len(set(grams)) / len(grams) if grams else 0.0

    passes(ch07.check_repetition_rate, one_minus_distinct, capsys)


def test_counting_the_first_occurrence_is_named():
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, first=True), "first occurrence")


def test_a_set_of_repeated_ngrams_is_named():
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, sets=True), "a set of the repeated ones")


def test_off_by_one_in_the_number_of_ngrams_is_named():
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, last=False), "off by one",
               "left out the last n-gram")
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, denom="one_less"), "off by one")


def test_dividing_by_the_wrong_count_is_named():
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, denom="tokens"),
               "divided by the number of tokens")
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, denom="distinct"),
               "number of distinct n-grams")
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, count=True), "not their count")


def test_the_distinct_fraction_is_named():
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, new=True), "NEW (distinct)")


def test_tensor_elements_hashed_by_identity_are_named():
    fails_with(ch07.check_repetition_rate, lambda ids, n: _rate(ids, n, raw=True), "ids.tolist()")
    fails_with(ch07.check_repetition_rate, lambda ids, n: "high", "return one number")


def test_no_ngram_and_one_ngram_are_named_on_hidden_inputs():
    """Only the hidden cases hold a sequence shorter than n and one of exactly n tokens."""
    from minigpt.checks import hidden_inputs

    def no_guard(ids, n):
        grams = [tuple(ids[i:i + n].tolist()) for i in range(len(ids) - n + 1)]
        return 1 - len(set(grams)) / len(grams)  # ZeroDivisionError when there is no n-gram

    def short_is_one(ids, n):
        return 1.0 if len(ids) <= n else _rate(ids, n)

    for offset in (1, 2, 7919):
        with hidden_inputs(offset):
            with pytest.raises(CheckFailed, match="no n-gram, so nothing repeats: return 0.0"):
                ch07.check_repetition_rate(no_guard)
            with pytest.raises(CheckFailed, match="cannot have occurred before: return 0.0"):
                ch07.check_repetition_rate(short_is_one)
