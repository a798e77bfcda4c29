"""Induction heads: the two-head circuit that continues a repeated sequence [A][B] … [A] -> [B].

A previous-token head (layer 0) writes "the token before me was A" into each position; an
induction head (a later layer) uses that as a key, so that a query ``A`` attends to the token
AFTER the earlier ``A`` and copies it (Elhage et al. 2021; Olsson et al. 2022). On sequences
``[r, r]`` of random tokens, the second copy is predictable only through this circuit.

Tools: :func:`repeated_random_tokens`, :func:`induction_scores`, :func:`previous_token_scores`,
:func:`half_losses`, and :func:`train_induction_model`, a control model that forms the circuit in
1000 steps (benchmarks/induction_control.py records the time and the scores; at 800 steps it was
still half-formed in our runs: second-copy loss 1.5 nats against 0.3 at 1000).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .hooks import as_ids, blocks, eval_mode


def repeated_random_tokens(n_seq: int, half_len: int, vocab: int | Sequence[int],
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_seq`` sequences ``[r, r]``: ``half_len`` random ids, then the same ids again: (n_seq, 2·half_len).

    ``vocab``: the vocabulary size, or the ids to draw from (e.g. common tokens of a tokenizer).
    """
    pool = torch.arange(vocab) if isinstance(vocab, int) else torch.as_tensor(list(vocab), dtype=torch.long)
    if half_len < 1 or n_seq < 1 or pool.numel() < 1:
        raise ValueError("need n_seq >= 1, half_len >= 1 and a non-empty vocabulary")
    r = pool[torch.randint(0, pool.numel(), (n_seq, half_len), generator=generator)]
    return torch.cat([r, r], dim=1)


def _weights(weights) -> torch.Tensor:
    w = torch.as_tensor(weights)
    if w.dim() < 2 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"need attention weights (..., T, T), got shape {tuple(w.shape)}")
    return w


def induction_scores(weights, half_len: int | None = None) -> torch.Tensor:
    """Mean attention from query ``i`` in the second copy to key ``i - half_len + 1`` (the token
    that followed the earlier copy of token i), over queries ``half_len .. T-1``.

    ``weights`` (..., T, T) of ``[r, r]`` inputs -> (...): 1 for a perfect induction head.
    ``half_len`` defaults to T // 2. Chance level: :func:`induction_chance`.
    """
    w = _weights(weights)
    T = w.shape[-1]
    n = T // 2 if half_len is None else half_len
    if not 1 <= n < T:
        raise ValueError(f"half_len {n} must be in 1..{T - 1}")
    q = torch.arange(n, T)
    return w[..., q, q - n + 1].mean(-1)


def induction_chance(T: int, half_len: int | None = None) -> float:
    """The induction score of uniform causal attention (query i spreads 1/(i+1) over keys 0..i)."""
    n = T // 2 if half_len is None else half_len
    return sum(1.0 / (i + 1) for i in range(n, T)) / (T - n)


def previous_token_scores(weights) -> torch.Tensor:
    """Mean attention from query ``i`` to key ``i - 1`` over queries 1..T-1: (..., T, T) -> (...)."""
    w = _weights(weights)
    return torch.diagonal(w, offset=-1, dim1=-2, dim2=-1).mean(-1)


@torch.no_grad()
def attention_patterns(model, idx) -> torch.Tensor:
    """All attention weights, eval mode: (B, n_layer, n_head, T, T)."""
    with eval_mode(model):
        _, _, attns = model(as_ids(model, idx), return_attn=True)
    return torch.stack(attns, dim=1)


@torch.no_grad()
def half_losses(model, idx, half_len: int | None = None) -> tuple[float, float]:
    """Mean next-token loss (nats) on ``[r, r]`` inputs: (first copy, second copy).

    First copy: predicting tokens 1..n-1 (random, ~log V at best). Second copy: predicting tokens
    n+1..2n-1 from the first copy (token n, the copy's first, has no earlier context to copy).
    """
    idx = as_ids(model, idx)
    n = idx.shape[1] // 2 if half_len is None else half_len
    with eval_mode(model):
        logits, _ = model(idx)
    loss = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), idx[:, 1:], reduction="none")  # (B, T-1)
    return float(loss[:, : n - 1].mean()), float(loss[:, n:].mean())


def make_attention_only(model):
    """Turn a GPT into an attention-only transformer in place: every block becomes exactly
    ``x + attn(ln_1(x))``. Each feed-forward output projection is set to zero and every MLP
    (and ``ln_2``) parameter is frozen, so the MLP adds 0 without any hook and the model saves,
    loads and runs like any GPT."""
    for block in blocks(model):
        with torch.no_grad():
            block.mlp.c_proj.weight.zero_()
            if block.mlp.c_proj.bias is not None:
                block.mlp.c_proj.bias.zero_()
        for p in list(block.mlp.parameters()) + list(block.ln_2.parameters()):
            p.requires_grad_(False)
    return model


def induction_batch(batch: int, block_size: int, vocab: int, generator: torch.Generator,
                    min_len: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch (B, T): each row repeats a random segment of random length n
    (``min_len``..T//2) for the whole context, ``r r r …``. Targets are -100 except where
    induction can predict the next token (query t >= n: token t+1 = token t+1-n). Varying n rules
    out a positional shortcut ("copy from T/2 back"); only content-based induction predicts it.
    The unpredictable first tokens are left out of the loss: with them the circuit formed several
    times more slowly in our runs (their noise swamps its gradient)."""
    idx = torch.randint(0, vocab, (batch, block_size), generator=generator)
    targets = torch.full((batch, block_size), -100, dtype=torch.long)
    lens = torch.randint(min_len, block_size // 2 + 1, (batch,), generator=generator)
    for b in range(batch):
        n = int(lens[b])
        idx[b] = idx[b, :n].repeat(block_size // n + 1)[:block_size]
        targets[b, n:block_size - 1] = idx[b, n + 1:]  # position t predicts t+1
    return idx, targets


@dataclass
class InductionTraining:
    """The result of :func:`train_induction_model`."""

    model: torch.nn.Module
    seconds: float  # wall time of the training loop
    cpu_seconds: float  # CPU time this process spent in it (all threads): honest on a loaded machine
    steps: int
    losses: list[float] = field(default_factory=list)  # training loss every step
    threads: int = 0


def train_induction_model(*, vocab_size: int = 64, block_size: int = 48, n_layer: int = 2, n_head: int = 4,
                          n_embd: int = 64, steps: int = 1000, batch_size: int = 32, lr: float = 3e-3,
                          warmup: int = 100, seed: int = 0, attention_only: bool = True,
                          threads: int | None = None, max_seconds: float | None = None) -> InductionTraining:
    """Train a tiny GPT (attention-only by default) on repeated random segments until it forms
    an induction head; the control model for chapter 08. Data: :func:`induction_batch`.

    ``threads`` sets torch's thread count for the loop only (restored afterwards); ``max_seconds``
    stops early. AdamW, linear warmup, then cosine decay to lr/10. Returns the model in eval mode.
    """
    from ..config import GPTConfig
    from ..train import build_model

    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.0)
    model = build_model(config, seed=seed)
    if attention_only:
        make_attention_only(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    old_threads = torch.get_num_threads()
    losses: list[float] = []
    model.train()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        t0, c0 = time.perf_counter(), time.process_time()
        for step in range(steps):
            frac = step / max(1, steps - warmup)
            scale = (step + 1) / warmup if step < warmup else 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, frac)))
            for g in opt.param_groups:
                g["lr"] = lr * scale
            idx, targets = induction_batch(batch_size, block_size, vocab_size, gen)
            _, loss = model(idx, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    return InductionTraining(model=model, seconds=seconds, cpu_seconds=cpu_seconds, steps=len(losses), losses=losses, threads=used)
