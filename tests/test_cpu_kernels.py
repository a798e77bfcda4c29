"""setup_notebook pins PyTorch, MKL and oneDNN to one CPU code path, or says why it cannot.

Each case runs in a fresh interpreter: the libraries read these settings once, at their first
computation, so a process that has already computed cannot be re-pinned.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the pinned kernels exist on x86-64 only")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    clean.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, timeout=120)


def test_pins_every_library_before_the_first_computation():
    out = _run("import torch, minigpt.device as d; d.setup_notebook(); "
               "print(torch.backends.cpu.get_cpu_capability(), d._mkl_branch(), __import__('os').environ['ONEDNN_MAX_CPU_ISA'])")
    assert out.returncode == 0, out.stderr
    capability, mkl_branch, onednn = out.stdout.split()
    assert capability in ("AVX2", "DEFAULT")  # DEFAULT only on a CPU without AVX2
    assert mkl_branch in ("3", "None")        # 3 = MKL_CBWR_COMPATIBLE; None: a PyTorch without MKL
    assert onednn == "AVX2"


def test_a_computation_before_setup_is_a_clear_error():
    out = _run("import torch, minigpt.device as d; a = torch.randn(64, 64); a @ a; d.setup_notebook()")
    assert out.returncode != 0
    assert "RuntimeError: setup_notebook() ran after a tensor computation" in out.stderr
    assert "restart the kernel" in out.stderr


def test_the_environment_wins_so_ci_can_force_another_cpu():
    out = _run("import torch, minigpt.device as d; d.setup_notebook(); print(torch.backends.cpu.get_cpu_capability())",
               ATEN_CPU_CAPABILITY="default")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "DEFAULT"
