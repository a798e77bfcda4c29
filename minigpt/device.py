"""Device choice, seeding and the one setup call at the top of every notebook."""

from __future__ import annotations

import ctypes
import os
import platform
import random
import warnings

import numpy as np
import torch

_VALID = ("cuda", "mps", "cpu")


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device: cuda, then mps, then cpu.

    ``prefer`` (or the environment variable ``MINIGPT_DEVICE``) overrides the choice, e.g.
    ``"cpu"`` or ``"cuda:1"``; asking for a device that is not available raises a clear error.

    Apple GPUs (MPS, ``torch.backends.mps``): chosen when there is no CUDA GPU, on an Apple
    silicon Mac with a PyTorch built for it. What the package does there, and why:

    * float32 by default (``dtype="auto"``): MPS has no float64 at all, and bfloat16 autocast
      needs macOS 14 or newer; ask for ``--dtype bfloat16`` or ``float16`` explicitly;
    * AdamW uses the ``foreach`` implementation (``fused="auto"`` picks fused only on CUDA/CPU);
    * ``torch.compile`` stays off (its MPS backend is experimental), and so does DDP (MPS has no
      collective backend: :mod:`minigpt.distributed` refuses it with a clear message);
    * known wrong results: ``torch.multinomial`` on MPS can return indices whose probability is
      exactly zero, i.e. tokens removed by top-k / top-p (pytorch/pytorch#136623, #192577, seen
      with torch 2.13 on macOS 15). Draw the sample on the CPU there (a (B, V) copy per token is
      cheap); beam search's float64 scores likewise belong on the CPU.

    The check: :func:`check_device` runs the same tiny GPT forward and backward pass on the
    device and on the CPU and compares logits, loss and gradients, and draws many top-k samples
    to catch a zero-probability token. Run ``python -c "import minigpt.device as d;
    print(d.check_device('mps'))"`` after upgrading macOS or PyTorch.
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


#: The CPU kernel choices under which stored notebook outputs were made. PyTorch, MKL and oneDNN
#: each pick their kernels by instruction set (AVX2, AVX-512, AMX, or MKL's own choice on AMD), and
#: kernels of different vector widths add floats in different orders, so the same notebook printed
#: different last digits on different x86-64 CPUs. Pinning all three to one code path removes that
#: at its root, on every x86-64 CPU with AVX2 (Intel since 2013, AMD since 2015).
CPU_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels: AVX2 code, even where AVX-512 exists
    "MKL_CBWR": "COMPATIBLE",       # MKL's matmuls: its one branch that gives the same bits on Intel and AMD
    "ONEDNN_MAX_CPU_ISA": "AVX2",   # oneDNN (e.g. GELU): AVX2 code at most
}
_MKL_CBWR_BRANCH, _MKL_CBWR_COMPATIBLE = 1, 3  # mkl.h: MKL_CBWR_BRANCH, MKL_CBWR_COMPATIBLE
_RANK = {"DEFAULT": 0, "AVX2": 1, "AVX512": 2}


def pin_cpu_kernels() -> dict[str, str]:
    """Pin PyTorch, MKL and oneDNN to the code paths in :data:`CPU_KERNELS`; returns what is in force.

    A variable already set in the environment wins (CI sets ``ATEN_CPU_CAPABILITY=default`` to
    stand in for other CPUs). The libraries read these settings at their first computation, so
    this must run before any tensor operation; if one came first, a ``RuntimeError`` says so.
    Only x86-64 has these kernels; elsewhere (ARM, e.g. Apple silicon) nothing is pinned.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    for name, value in CPU_KERNELS.items():
        os.environ.setdefault(name, value)
    wanted = os.environ["ATEN_CPU_CAPABILITY"].upper()
    got = torch.backends.cpu.get_cpu_capability()
    late = _RANK.get(got, 0) > _RANK.get(wanted, 0)  # lower than asked is only a CPU without AVX2
    if os.environ["MKL_CBWR"].upper() == "COMPATIBLE":
        late = late or _mkl_branch() not in (None, _MKL_CBWR_COMPATIBLE)
    if late:
        raise RuntimeError("setup_notebook() ran after a tensor computation, when PyTorch had already "
                           "chosen its CPU kernels: restart the kernel and run the notebook from the top")
    return {name: os.environ[name] for name in CPU_KERNELS} | {"in force": got}


def _mkl_branch() -> int | None:
    """MKL's code branch in force (``mkl_cbwr_get``), or None where this PyTorch has no MKL."""
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    return get(_MKL_CBWR_BRANCH)


def setup_notebook(seed: int = 1337, threads: int = 2, quiet: bool = True) -> torch.device:
    """Make a notebook reproducible: CPU kernels, seeds, deterministic algorithms, threads, printing.

    Pins the CPU kernels (:func:`pin_cpu_kernels`), so that stored outputs reproduce on any
    x86-64 CPU with AVX2. Also silences progress bars (``MINIGPT_PROGRESS=0``) and known harmless
    warnings, so that a fresh run prints exactly what is stored. Returns the device the notebook
    should use (CPU unless ``MINIGPT_DEVICE`` says otherwise: stored outputs are produced on CPU;
    on a GPU or an ARM CPU the last printed digits of some outputs differ).
    """
    pin_cpu_kernels()
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


def check_device(device: str | torch.device, draws: int = 2000, atol: float = 1e-4) -> dict[str, float]:
    """Compare a tiny GPT on ``device`` with the CPU; raise ``AssertionError`` on a wrong result.

    Returns the largest absolute differences (logits, loss, gradients) and the number of
    sampled token ids that had probability zero (must be 0). Runs in well under a second.
    """
    from .config import GPTConfig
    from .model import GPT

    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32))
    x = torch.randint(50, (4, 16), generator=gen)
    y = torch.randint(50, (4, 16), generator=gen)
    results = []
    for dev in (torch.device("cpu"), device):
        m = GPT(model.config).to(dev)
        m.load_state_dict(model.state_dict())
        logits, loss = m(x.to(dev), y.to(dev))
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in m.parameters()]).cpu()
        results.append((logits.detach().cpu(), loss.detach().cpu(), grads))
    (l0, s0, g0), (l1, s1, g1) = results
    probs = torch.softmax(torch.randn(draws, 50, generator=gen), dim=-1)
    probs[:, 10:] = 0.0  # a top-10 filtered distribution
    picks = torch.multinomial(probs.to(device), 1).cpu()
    out = {"logits": (l0 - l1).abs().max().item(), "loss": (s0 - s1).abs().item(),
           "grads": (g0 - g1).abs().max().item(), "zero_prob_samples": int((picks >= 10).sum())}
    bad = {k: v for k, v in out.items() if (v > 0 if k == "zero_prob_samples" else v > atol)}
    if bad:
        raise AssertionError(f"device {device} disagrees with the CPU: {bad} (tolerance {atol}); "
                             "use --device cpu, or see pick_device's notes")
    return out
