"""From GPT-2 to a modern LLM, one option at a time (chapter 09): a table per variant.

The ladder, each rung adding one option to the one before (all are ``GPTConfig`` fields of the
same model): GPT-2 -> +RMSNorm -> +RoPE -> +SwiGLU -> +GQA (n_kv_head = n_head / 2) -> all
(+ untied head, qk-norm, no biases). For each variant: parameters, KV-cache bytes per token (float32),
training tokens/s, validation loss after a fixed number of steps, and validation loss after a
fixed number of training seconds (evaluation off the clock). Character-level Shakespeare,
``minigpt.data``'s split by whole plays; the same seed, batches and schedule for every variant.

Usage::

    python benchmarks/modern_arch.py            # 600 steps and 60 s per variant (~15 min on 2 cores)
    python benchmarks/modern_arch.py --quick    # smoke run: 20 steps and 3 s per variant, val on 4 batches

This is a skeleton for the chapter's table: numbers on a shared 2-core CPU are noisy, and small
models trained briefly do not show the long-run gaps the options were designed for.
"""

from __future__ import annotations

import argparse
import time

import torch

from minigpt.config import GPTConfig
from minigpt.data import BatchSampler, encode_corpus, shakespeare
from minigpt.tokenizer import CharTokenizer
from minigpt.train import TrainConfig, build_model, configure_optimizer, evaluate, lr_at

BASE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0)
LADDER = [
    ("GPT-2", {}),
    ("+RMSNorm", dict(norm="rmsnorm")),
    ("+RoPE", dict(pos_emb="rope")),
    ("+SwiGLU", dict(activation="swiglu")),
    ("+GQA", dict(n_kv_head=2)),
    ("all (+untied, qk-norm, no bias)", dict(tie_weights=False, qk_norm=True, bias=False)),
]


def variants() -> list[tuple[str, dict]]:
    """Each rung's options: everything above it, plus its own."""
    out, acc = [], {}
    for name, opts in LADDER:
        acc = {**acc, **opts}
        out.append((name, dict(acc)))
    return out


def train_variant(cfg: GPTConfig, tcfg: TrainConfig, data: BatchSampler, steps: int | None,
                  seconds: float | None) -> tuple[torch.nn.Module, int, float]:
    """Train until ``steps`` optimizer steps or ``seconds`` of training; returns model, steps, seconds."""
    model = build_model(cfg, seed=1337).train()
    opt = configure_optimizer(model, tcfg, torch.device("cpu"))
    step, clock = 0, 0.0
    while (steps is None or step < steps) and (seconds is None or clock < seconds):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tcfg)
        x, y = data.batch(step)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        clock += time.perf_counter() - t0
        step += 1
    return model, step, clock


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: a few steps and seconds per variant")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    steps, seconds, val_batches = (20, 3.0, 4) if args.quick else (args.steps, args.seconds, None)
    torch.set_num_threads(args.threads)

    train_text, val_text = shakespeare("train"), shakespeare("val")
    tok = CharTokenizer.from_text(train_text + val_text)
    train_ids, val_ids = encode_corpus(train_text, tok), encode_corpus(val_text, tok)
    tcfg = TrainConfig(max_iters=steps, batch_size=32, learning_rate=3e-3, min_lr=3e-4,
                       warmup_iters=max(1, steps // 20), weight_decay=0.1, grad_clip=1.0)
    data = BatchSampler(train_ids, BASE["block_size"], tcfg.batch_size, seed=1337)

    rows = []
    for name, opts in variants():
        cfg = GPTConfig(vocab_size=tok.vocab_size, **BASE, **opts)
        model, n, clock = train_variant(cfg, tcfg, data, steps, None)
        val_steps = evaluate(model, val_ids, cfg.block_size, 64, max_batches=val_batches)
        tok_s = n * tcfg.batch_size * cfg.block_size / clock
        model_t, n_t, _ = train_variant(cfg, tcfg, data, None, seconds)
        val_time = evaluate(model_t, val_ids, cfg.block_size, 64, max_batches=val_batches)
        rows.append((name, model.num_params(), cfg.kv_cache_bytes_per_token(4), tok_s, val_steps, val_time, n_t))
        print(f"{name}: done", flush=True)

    print(f"\n| variant | params | KV bytes/token | tokens/s | val loss @ {steps} steps | "
          f"val loss @ {seconds:g} s (steps) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n_params, kv, tok_s, v1, v2, n_t in rows:
        print(f"| {name} | {n_params:,} | {kv:,} | {tok_s:,.0f} | {v1:.4f} | {v2:.4f} ({n_t}) |")


if __name__ == "__main__":
    main()
