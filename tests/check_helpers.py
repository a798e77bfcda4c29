"""Helpers shared by the tests of the exercise checks (``tests/test_checks_*.py``)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

from minigpt.checks import CheckFailed, hidden_inputs


def failure(check, fn, offset: int = 0) -> str:
    """The message with which ``fn`` fails ``check``: on the visible inputs, or on the hidden ones
    drawn with ``offset`` when it is not 0."""
    with hidden_inputs(offset) if offset else nullcontext():
        with pytest.raises(CheckFailed) as info:
            check(fn)
    return str(info.value)


def fails_with(check, fn, *fragments) -> str:
    """``fn`` fails ``check`` on the visible inputs, with every fragment in the message (any case)."""
    msg = failure(check, fn)
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"expected {frag!r} in: {msg}"
    return msg


def passes(check, fn, capsys) -> None:
    """``fn`` passes ``check`` on the visible inputs, and the check says so with ✅."""
    check(fn)
    out = capsys.readouterr().out
    assert out.startswith("✅"), out
