"""Hooks: run a GPT while reading what flows between its modules, without touching its code.

The sites every tool in :mod:`minigpt.interpret` reads or edits:

- ``resid[l]``: the residual stream after ``l`` blocks, (B, T, C). ``resid[0] = E[w] + P[i]`` (the
  embeddings), ``resid[l]`` enters block ``l``, ``resid[n_layer]`` enters the final LayerNorm.
- head ``(l, h)``: head ``h`` of layer ``l`` before the output projection, (B, T, hs): the slice
  ``[h*hs:(h+1)*hs]`` of ``block.attn.c_proj``'s input, i.e. that head's ``softmax(QKᵀ/√d)V``.
  Through ``c_proj`` it adds ``z_h @ W_O[:, h*hs:(h+1)*hs]ᵀ`` to the residual stream.
- ``mlp[l]``: block ``l``'s feed-forward output (B, T, C), added to the residual stream.

Everything runs in eval mode (dropout off) and without a KV cache.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn

Hook = tuple[nn.Module, Callable]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (dropout off) for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def hooks(pre: Iterable[Hook] = (), post: Iterable[Hook] = ()) -> Iterator[None]:
    """Register forward pre-hooks ``pre`` and forward hooks ``post`` ((module, fn) pairs) for the
    ``with`` block; they are removed when it ends, also when it ends with an exception."""
    handles = []
    try:
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn))
        for module, fn in post:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def blocks(model) -> nn.ModuleList:
    """The model's transformer blocks, ``model.transformer.h``."""
    return model.transformer.h


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(..., C) -> (..., n_head, hs): the per-head slices of c_proj's input, side by side."""
    return x.reshape(*x.shape[:-1], n_head, x.shape[-1] // n_head)


def check_layer(model, layer: int, *, allow_final: bool = False) -> int:
    """``layer`` as an index 0..n_layer-1 (0..n_layer with ``allow_final``), or a clear error."""
    n = model.config.n_layer + (1 if allow_final else 0)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise IndexError(f"layer {layer!r} does not exist: use 0..{n - 1}")
    return layer


def check_head(model, layer: int, head: int) -> tuple[int, int]:
    """``(layer, head)`` checked against the model's shape."""
    check_layer(model, layer)
    n_head = model.config.n_head
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < n_head:
        raise IndexError(f"head {head!r} does not exist in layer {layer}: use 0..{n_head - 1}")
    return layer, head


def as_ids(model, idx) -> torch.Tensor:
    """Token ids as a (B, T) long tensor on the model's device; (T,) becomes (1, T)."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None]
    return idx.to(next(model.parameters()).device)


@dataclass
class ActivationCache:
    """What one forward pass wrote at every site (see the module docstring); all detached.

    resid: (n_layer + 1, B, T, C); heads: (n_layer, B, T, n_head, hs); mlps: (n_layer, B, T, C);
    logits: (B, T, V).
    """

    resid: torch.Tensor
    heads: torch.Tensor
    mlps: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def run_with_cache(model, idx) -> ActivationCache:
    """Run ``model`` on ``idx`` (B, T) in eval mode and keep the activations at every site."""
    idx = as_ids(model, idx)
    n_head = model.config.n_head
    resid, heads, mlps = {}, {}, {}

    def keep_resid(layer):
        def fn(module, args):
            resid[layer] = args[0].detach().clone()
        return fn

    def keep_heads(layer):
        def fn(module, args):
            heads[layer] = split_heads(args[0].detach(), n_head).clone()  # (B, T, nh, hs)
        return fn

    def keep_mlp(layer):
        def fn(module, args, out):
            mlps[layer] = out.detach().clone()
        return fn

    pre = [(b, keep_resid(l)) for l, b in enumerate(blocks(model))]
    pre += [(model.transformer.ln_f, keep_resid(model.config.n_layer))]
    pre += [(b.attn.c_proj, keep_heads(l)) for l, b in enumerate(blocks(model))]
    post = [(b.mlp, keep_mlp(l)) for l, b in enumerate(blocks(model))]
    with eval_mode(model), hooks(pre, post):
        logits, _ = model(idx)
    L = model.config.n_layer
    return ActivationCache(resid=torch.stack([resid[l] for l in range(L + 1)]),
                           heads=torch.stack([heads[l] for l in range(L)]),
                           mlps=torch.stack([mlps[l] for l in range(L)]), logits=logits.detach())


@torch.no_grad()
def run_from(model, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Logits (B, T, V) from the residual stream ``x`` (B, T, C) entering block ``layer``
    (``cache.resid[layer]`` of :func:`run_with_cache`): runs blocks ``layer..n_layer-1``, the final
    norm and the head only, in eval mode. An edit at layer ``layer`` or later (an ablated head, a
    patch) leaves the blocks below unchanged, so this gives the same logits as a full forward pass
    with the same hooks, for (n_layer - layer) / n_layer of the blocks' cost."""
    layer = check_layer(model, layer, allow_final=True)
    T = x.shape[1]
    rope = model.rotary(torch.arange(T, device=x.device), x.dtype)
    with eval_mode(model):
        for block in blocks(model)[layer:]:
            x, _ = block(x, rope=rope)
        return model.lm_head(model.transformer.ln_f(x))
