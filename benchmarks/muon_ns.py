"""Why minigpt has its own Muon: Newton–Schulz in float32 (ours) vs bfloat16 (torch.optim.Muon) on a CPU.

Times one orthogonalisation of each weight-matrix shape of the speed-run model (3 layers, 128 wide)
both ways, interleaved, and prints medians and the ratio. On CPUs without native bfloat16
arithmetic the bfloat16 matmuls are emulated.

Usage::

    python benchmarks/muon_ns.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.optim._muon import _zeropower_via_newtonschulz as torch_bf16_ns  # what torch.optim.Muon calls

from minigpt.optim import NS_COEFFICIENTS, orthogonalize


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {a.threads} threads, "
          f"load {os.getloadavg()[0]:.1f}")
    print("| shape (rows x cols) | float32, ms (ours) | bfloat16, ms (torch.optim.Muon) | bf16 / fp32 |")
    print("|---|---:|---:|---:|")
    for shape in [(128, 128), (384, 128), (512, 128), (128, 512)]:
        g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        fns = {"fp32": lambda: orthogonalize(g), "bf16": lambda: torch_bf16_ns(g, NS_COEFFICIENTS, 5, 1e-7)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():
            f()  # warm-up
        for _ in range(a.repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        fp32, bf16 = (statistics.median(times[k]) * 1e3 for k in ("fp32", "bf16"))
        print(f"| {shape[0]} x {shape[1]} | {fp32:.2f} | {bf16:.2f} | {bf16 / fp32:.1f}x |")


if __name__ == "__main__":
    main()
