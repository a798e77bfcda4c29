"""Device choice, seeding and the one setup call at the top of every notebook."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch

_VALID = ("cuda", "mps", "cpu")


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device: cuda, then mps, then cpu.

    ``prefer`` (or the environment variable ``MINIGPT_DEVICE``) overrides the choice, e.g.
    ``"cpu"`` or ``"cuda:1"``; asking for a device that is not available raises a clear error.
    """
    prefer = prefer or os.environ.get("MINIGPT_DEVICE") or None
    if prefer:
        kind = prefer.split(":")[0]
        if kind not in _VALID:
            raise ValueError(f"unknown device {prefer!r}; use one of {_VALID} (optionally 'cuda:N')")
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} requested but CUDA is not available; use 'cpu'")
        if kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise RuntimeError(f"device {prefer!r} requested but MPS is not available; use 'cpu'")
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 1337) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); returns a CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS
    return torch.Generator().manual_seed(seed)


def setup_notebook(seed: int = 1337, threads: int = 2, quiet: bool = True) -> torch.device:
    """Make a notebook reproducible: seeds, deterministic algorithms, fixed threads, print options.

    Also silences progress bars (``MINIGPT_PROGRESS=0``) and known harmless warnings, so that a
    fresh run prints exactly what is stored. Returns the device the notebook should use (CPU
    unless ``MINIGPT_DEVICE`` says otherwise: stored outputs are produced on CPU).
    """
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(threads)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    if quiet:
        os.environ["MINIGPT_PROGRESS"] = "0"
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*deterministic.*")
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "figure.figsize": (6.4, 4.0)})
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    return torch.device(os.environ.get("MINIGPT_DEVICE", "cpu"))
