"""Chapter 06's transfer exercise 06.1 (the loss mask of a whole conversation, where section 4
masks one prompt before one response): the honest answers pass, and each typical mistake, planted
in a small wrong implementation, fails with the message that names it."""

from __future__ import annotations

import pytest
import torch

from minigpt.checks import CheckFailed, ch06, hidden_inputs
from minigpt.checks.ch06 import _chat_reference
from minigpt.finetune import sft_example
from check_helpers import fails_with, passes


def _targets(turns, *, keep="target", mask=-100, drop_last=True, roles=None):
    """x and y of a conversation, or one of the typical mistakes (the keyword that is not its default).

    keep: "target" keeps y[i] when the target s[i + 1] is an assistant token (right), "input" when
    the input s[i] is (off by one), "user" when the target is a user token (inverted), "all" keeps
    every target (no mask). roles: a function (turn index, role) -> the role the mistake uses.
    """
    turns = [((roles(k, r) if roles else r), ids) for k, (r, ids) in enumerate(turns)]
    s = torch.tensor([t for _, ids in turns for t in ids])
    asst = torch.tensor([r == "assistant" for r, ids in turns for _ in ids])
    kept = {"target": asst[1:], "input": asst[:-1], "user": ~asst[1:], "all": torch.ones(len(s) - 1, dtype=torch.bool)}[keep]
    y = torch.where(kept, s[1:], torch.full_like(s[1:], mask))
    return (s[:-1] if drop_last else s), y


def _first_assistant(turns):
    return next(k for k, (r, _) in enumerate(turns) if r == "assistant")


def _last_assistant(turns):
    return max(k for k, (r, _) in enumerate(turns) if r == "assistant")


def test_the_honest_answer_passes_visible_and_hidden(capsys):
    passes(ch06.check_chat_targets, _targets, capsys)
    for offset in (1, 2, 7919):
        with hidden_inputs(offset):
            ch06.check_chat_targets(_targets)


def test_lists_instead_of_tensors_pass(capsys):
    passes(ch06.check_chat_targets, lambda turns: tuple(t.tolist() for t in _targets(turns)), capsys)


def test_the_reference_is_sft_example_for_one_prompt_and_one_response():
    for p, r in (([5, 6, 7], [20, 21]), ([9], [30, 31]), ([1, 2, 3, 4], [40])):
        assert [v.tolist() for v in sft_example(p, r)] == list(_chat_reference([("user", p), ("assistant", r)]))
    turns = [("user", [1, 2]), ("assistant", [3, 4]), ("user", [5]), ("assistant", [6, 7])]
    assert _chat_reference(turns) == ([1, 2, 3, 4, 5, 6], [-100, 3, 4, -100, 6, 7])  # by hand


def test_no_mask_is_named():
    fails_with(ch06.check_chat_targets, lambda t: _targets(t, keep="all"), "no loss mask")


def test_masking_with_zero_is_named():
    fails_with(ch06.check_chat_targets, lambda t: _targets(t, mask=0), "masked with 0")


def test_the_inverted_mask_is_named():
    fails_with(ch06.check_chat_targets, lambda t: _targets(t, keep="user"), "wrong way round")


def test_deciding_by_the_input_is_named():
    fails_with(ch06.check_chat_targets, lambda t: _targets(t, keep="input"), "off by one")


def test_x_keeping_its_last_token_is_named():
    fails_with(ch06.check_chat_targets, lambda t: _targets(t, drop_last=False), "drop the last token")


def test_masking_only_the_first_prompt_is_named():
    def first_prompt_only(turns):  # sft_example(first prompt, everything after it)
        f = _first_assistant(turns)
        return _targets(turns, roles=lambda k, r: "user" if k < f else "assistant")

    fails_with(ch06.check_chat_targets, first_prompt_only, "later user turns")


def test_scoring_only_the_last_reply_is_named():
    def last_only(turns):
        last = _last_assistant(turns)
        return _targets(turns, roles=lambda k, r: "assistant" if k == last else "user")

    fails_with(ch06.check_chat_targets, last_only, "only the last assistant turn")


def test_mistakes_are_named_on_hidden_inputs_that_end_with_a_user_turn_or_open_with_a_reply():
    """The hidden cases include a conversation that ends with a user turn and one that opens with
    an assistant turn; the same mistakes keep their messages there."""
    def first_prompt_only(turns):
        f = _first_assistant(turns)
        return _targets(turns, roles=lambda k, r: "user" if k < f else "assistant")

    for offset in (1, 2, 7919):
        with hidden_inputs(offset):
            fails_with(ch06.check_chat_targets, lambda t: _targets(t, keep="input"), "off by one")
            fails_with(ch06.check_chat_targets, first_prompt_only, "later user turns")
            fails_with(ch06.check_chat_targets, lambda t: _targets(t, keep="user"), "wrong way round")


def test_an_answer_that_ignores_the_trailing_user_turn_fails_only_hidden(capsys):
    """Scoring a final user turn as if every turn after the last reply were a reply: the visible
    conversations all end with the assistant, so only the hidden run catches it."""
    def trailing_scored(turns):
        last = _last_assistant(turns)
        return _targets(turns, roles=lambda k, r: "assistant" if k > last else r)

    passes(ch06.check_chat_targets, trailing_scored, capsys)
    with hidden_inputs(7919), pytest.raises(CheckFailed):
        ch06.check_chat_targets(trailing_scored)
