"""Friendly exercise checks: compare a learner's answer with the package's reference and explain.

Each chapter has its own module (``minigpt.checks.ch02`` …) built on the helpers here. A check
prints one line starting with ``✅`` when the answer is right, and raises :class:`CheckFailed`
with a message that names what is wrong (and, where we can tell, the likely mistake) otherwise.

The inputs are drawn from private generators with fixed seeds (see :func:`seeded`), so a check
gives the same verdict on every machine. Hidden tests (``### BEGIN HIDDEN TESTS`` in the solution
notebooks) call the same checks inside :func:`hidden_inputs`: the autograder passes an offset drawn
from a secret of its own grading run, and each check then draws other sizes, values and edge
cases (:func:`is_hidden`, :func:`draw`), silently, so an answer tuned to the visible inputs fails.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_hidden = {"offset": 0, "quiet": False}


def is_hidden() -> bool:
    """True inside :func:`hidden_inputs`: a check then draws other sizes, values and edge cases."""
    return _hidden["offset"] != 0


def draw(seed: int):
    """A ``random.Random`` for a check's hidden cases (sizes, edge cases), seeded like
    :func:`seeded`: the grader's secret offset makes them different in every grading run."""
    import random

    return random.Random(seeded(seed))


def seeded(seed: int) -> int:
    """The seed a check uses for its inputs: ``seed`` itself, or a shifted one in hidden tests."""
    return seed + _hidden["offset"]


@contextmanager
def hidden_inputs(offset: int = 7919) -> Iterator[None]:
    """Run the checks inside on different random inputs (seeds shifted by ``offset``), silently.

    Used by the hidden tests of the solution notebooks::

        with hidden_inputs():
            ch02.check_attention(my_attention)
    """
    saved = dict(_hidden)
    _hidden.update(offset=offset, quiet=True)
    try:
        yield
    finally:
        _hidden.update(saved)


def forbids(*names: str):
    """Mark a check with the ``minigpt`` (or torch) functions an answer must not call: the
    exercise asks for them by hand. The grader refuses answers that use them, both by reading the
    answer's code and by watching the calls it makes; the check itself refuses them in the
    notebook too (:class:`_LearnerCalls`), with the grader's message, so that a ✅ here is never
    a fail when graded."""
    def mark(check):
        @functools.wraps(check)
        def watched(*args, **kwargs):
            from ..assignments.forbidden import forbidden_message

            given = _given_forbidden(names, (*args, *kwargs.values()))
            if given:
                fail(forbidden_message(given))
            with _LearnerCalls(names) as calls:  # a failed check keeps its own, more specific message
                result = check(*args, **kwargs)
            if calls.hits:
                fail(forbidden_message(calls.hits))
            return result

        watched.forbidden = names
        return watched

    return mark


def _given_forbidden(names, values) -> list[str]:
    """The forbidden names of which an answer *is* the package's own function (``check(attention)``)."""
    from ..assignments.worker import resolve

    given = []
    for n in names:
        try:
            obj = resolve(n)
        except (ImportError, AttributeError):
            continue
        for v in values:
            if v is obj or getattr(v, "__func__", None) is obj or (n.endswith(".__init__") and v is
                                                                      resolve(n.rsplit(".", 1)[0])):
                given.append(n)
    return given


def _library_dirs() -> tuple[str, ...]:
    import os
    import sysconfig

    here = os.path.dirname(os.path.abspath(__file__))
    return (os.path.dirname(here) + os.sep, sysconfig.get_paths()["stdlib"] + os.sep,
            os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)


def _from_learner(frame, checks_dir: str, library: tuple[str, ...]) -> bool:
    """Whether a call made in ``frame`` comes from the learner's code: walking out through library
    frames (minigpt, torch, the standard library, site-packages), the first other frame is the
    learner's; a frame of the checks themselves means the check computed its own reference."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(checks_dir):
            return False
        if not (name.startswith(library) or "site-packages" in name or name.startswith("<frozen")):
            return True
        frame = frame.f_back
    return False


class _LearnerCalls:
    """Which forbidden functions the learner's code calls while a check runs (a profile hook; the
    check's own reference computations, made from the checks' frames, do not count). It restores
    whatever profile hook was set before (the grader's watch, a profiler)."""

    def __init__(self, names):
        import os

        from ..assignments.worker import _Watch

        watch = _Watch(names)
        self.codes, self.builtins, self.hits = watch.codes, watch.builtins, []
        self.checks_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
        self.library = _library_dirs()

    def _hook(self, frame, event, arg):
        if self.previous is not None:
            self.previous(frame, event, arg)
        if event == "call":
            n, caller = self.codes.get(frame.f_code), frame.f_back
        elif event == "c_call":
            n, caller = self.builtins.get(id(arg)), frame
        else:
            return
        if n and n not in self.hits and _from_learner(caller, self.checks_dir, self.library):
            self.hits.append(n)

    def __enter__(self):
        import sys
        import threading

        self.previous = sys.getprofile()
        self.previous_threads = threading.getprofile() if hasattr(threading, "getprofile") else None
        if self.codes or self.builtins:
            sys.setprofile(self._hook)
            threading.setprofile(self._hook)
        return self

    def __exit__(self, *exc):
        import sys
        import threading

        sys.setprofile(self.previous)
        threading.setprofile(self.previous_threads)


class CheckFailed(AssertionError):
    """Raised by a check whose answer is wrong; the message says why and how to fix it.

    In Jupyter it shows as its one line, not as a traceback into the package (IPython prints what
    ``_render_traceback_`` returns in place of the traceback)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


def passed(message: str) -> None:
    """Report a passed check (one line, so notebook outputs stay short and reproducible)."""
    if not _hidden["quiet"]:
        print(f"✅ {message}")


def fail(message: str) -> None:
    """Fail a check with an explanation."""
    raise CheckFailed(f"❌ {message}")


def as_tensor(value: Any, what: str) -> torch.Tensor:
    """Turn a learner's value into a float64 tensor, failing clearly if it is not numeric."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    try:
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        fail(f"{what} should be a number or a tensor, got {type(value).__name__}")
        raise  # unreachable


def check_shape(actual: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    if tuple(actual.shape) != tuple(expected):
        fail(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected)}")


def check_close(actual: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Fail unless ``actual`` matches ``expected`` (shape, then values within tolerance)."""
    a, e = as_tensor(actual, what), as_tensor(expected, "the reference")
    check_shape(a, tuple(e.shape), what)
    if not torch.allclose(a, e, atol=atol, rtol=rtol):
        worst = (a - e).abs().max().item()
        fail(f"{what} differs from the reference (largest difference {worst:.3g})")
