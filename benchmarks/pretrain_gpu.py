"""Training throughput and MFU on a CUDA GPU, through the package's own ``train()``.

For each configuration it runs :func:`minigpt.train.train` for a few warm-up steps (the first
one compiles) and then times the following steps (the median step time, from the per-step
callback: ``train()`` reads the loss each step, which waits for the GPU). Reported per row:
tokens/s and MFU, the model FLOPs utilisation::

    MFU = tokens/s x FLOPs per token / peak FLOP/s
    FLOPs per token = 6 N + 12 n_layer n_embd T     (GPT.flops_per_token: N counts the head
                                                     matmul, not the embedding lookups; the second
                                                     term is the attention scores and mixing)

The peak is MEASURED on the same GPU in the same run: the median rate of 8192 x 8192 x 8192
bfloat16 matmuls (``torch.mm``), i.e. what the device really delivers on the best-case dense
kernel, not the data-sheet number (that one is printed beside it for context).

The data are random token ids: this measures throughput, not the quality of the model (random
tokens have nothing to learn). Configurations:

* ``reference``: the shape of the bundled reference model (assets/pretrained/shakespeare-bpe.json:
  6 layers, 8 heads, 256 wide, block 128, BPE vocabulary 2048), batch 64, float32 eager as it was
  trained, and bfloat16 + torch.compile;
* ``gpt2-small``: 12 layers, 12 heads, 768 wide, block 1024, vocabulary 50304 (124M parameters),
  bfloat16 autocast eager, and bfloat16 + torch.compile; fused AdamW and TF32 always (CUDA).

Usage::

    python benchmarks/pretrain_gpu.py --out benchmarks/results      # needs a CUDA GPU
    python benchmarks/pretrain_gpu.py --quick                        # fewer steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt.config import GPTConfig  # noqa: E402
from minigpt.train import TrainConfig, build_model, train  # noqa: E402

# dense bf16 tensor-core peaks from the data sheets (without sparsity), for context only
SPEC_BF16_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0,
                    "L4": 121.0, "RTX 4090": 165.0}

REFERENCE = dict(n_layer=6, n_head=8, n_embd=256, block_size=128, vocab_size=2048, dropout=0.0)
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0)

# (name, model shape, batch_size (sequences per micro-step), grad_accum, dtype, compile)
RUNS = [
    ("reference", REFERENCE, 64, 1, "float32", False),
    ("reference", REFERENCE, 64, 1, "bfloat16", True),
    ("gpt2-small", GPT2_SMALL, 16, 4, "bfloat16", False),
    ("gpt2-small", GPT2_SMALL, 16, 4, "bfloat16", True),
]


def matmul_tflops(n: int = 8192, reps: int = 10) -> float:
    """Median bf16 matmul rate (TFLOP/s) of n x n x n products, timed with CUDA events."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


def bench(name: str, shape: dict, batch: int, accum: int, dtype: str, compile_: bool,
          warmup: int, steps: int, peak: float) -> dict:
    config = GPTConfig(**shape)
    model = build_model(config, seed=0)
    data = torch.randint(config.vocab_size, (20_000_000,), generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(max_iters=warmup + steps, batch_size=batch, grad_accum=accum, learning_rate=6e-4,
                      min_lr=6e-4, warmup_iters=0, eval_interval=0, train_eval_batches=1, device="cuda",
                      dtype=dtype, compile=compile_)
    stamps: list[float] = []

    def on_step(event: str, info: dict) -> None:
        if event == "step":
            stamps.append(time.perf_counter())

    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    train(model, data, None, cfg, callbacks=[on_step])
    wall = time.perf_counter() - t0
    step_times = [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]
    step_s = statistics.median(step_times)
    tokens_per_step = batch * accum * config.block_size
    tps = tokens_per_step / step_s
    fpt = model.flops_per_token()
    row = {"config": name, "params_M": round(model.num_params() / 1e6, 1), "dtype": dtype,
           "compile": compile_, "fused_adamw": True, "batch": f"{batch}x{accum}x{config.block_size}",
           "tokens_per_step": tokens_per_step, "step_ms": round(step_s * 1e3, 2),
           "tokens_per_s": round(tps), "flops_per_token_M": round(fpt / 1e6, 1),
           "achieved_tflops": round(tps * fpt / 1e12, 1), "mfu": round(tps * fpt / (peak * 1e12), 4),
           "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 1),
           "timed_steps": len(step_times), "wall_s_incl_compile": round(wall, 1)}
    print(json.dumps(row), flush=True)
    del model
    torch.cuda.empty_cache()
    return row


def markdown(result: dict) -> str:
    d = result["device"]
    lines = [f"# Pretraining throughput on {d['name']}", "",
             f"torch {d['torch']}, CUDA {d['cuda']}. Measured bf16 matmul peak (median of 8192³ `torch.mm`): "
             f"**{d['measured_bf16_tflops']:.0f} TFLOP/s**"
             + (f" (data sheet: {d['spec_bf16_tflops']:.0f})" if d.get("spec_bf16_tflops") else "") + ".",
             "MFU = tokens/s × (6N + 12·n_layer·n_embd·T) / measured peak. Random token data: this measures "
             "throughput, not model quality. One process, fused AdamW, TF32 on.", "",
             "| config | params | dtype | compile | batch (B×accum×T) | step ms | tokens/s | TFLOP/s | MFU | peak mem |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['config']} | {r['params_M']}M | {r['dtype']} | {'yes' if r['compile'] else 'no'} | "
                     f"{r['batch']} | {r['step_ms']:.1f} | {r['tokens_per_s']:,} | {r['achieved_tflops']:.0f} | "
                     f"{100 * r['mfu']:.1f}% | {r['peak_mem_GiB']} GiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for pretrain_gpu.json/.md")
    p.add_argument("--quick", action="store_true", help="fewer timed steps")
    p.add_argument("--only", default=None, help="run only this config name")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("pretrain_gpu.py needs a CUDA GPU (none is available here)")
    os.environ.setdefault("MINIGPT_PROGRESS", "0")
    name = torch.cuda.get_device_name()
    peak = matmul_tflops()
    spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in name), None)
    print(f"{name}: measured bf16 matmul {peak:.0f} TFLOP/s (spec {spec})", flush=True)
    warmup, steps = (3, 5) if a.quick else (5, 15)
    rows = []
    for run in RUNS:
        if a.only and run[0] != a.only:
            continue
        try:
            rows.append(bench(*run, warmup=warmup, steps=steps, peak=peak))
        except torch.OutOfMemoryError as e:  # report and go on with the next row
            print(f"{run[0]} batch {run[2]}: out of memory ({e})", flush=True)
            torch.cuda.empty_cache()
    result = {"device": {"name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                         "measured_bf16_tflops": round(peak, 1), "spec_bf16_tflops": spec,
                         "capability": list(torch.cuda.get_device_capability())},
              "rows": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrain_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "pretrain_gpu.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
