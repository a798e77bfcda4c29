"""Friendly exercise checks: compare a learner's answer with the package's reference and explain.

Each chapter has its own module (``minigpt.checks.ch02`` …) built on the helpers here. A check
prints one line starting with ``✅`` when the answer is right, and raises :class:`CheckFailed`
with a message that names what is wrong (and, where we can tell, the likely mistake) otherwise.
"""

from __future__ import annotations

from typing import Any

import torch


class CheckFailed(AssertionError):
    """Raised by a check whose answer is wrong; the message says why and how to fix it."""


def passed(message: str) -> None:
    """Report a passed check (one line, so notebook outputs stay short and reproducible)."""
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
