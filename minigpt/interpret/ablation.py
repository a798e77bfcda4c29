"""Ablation: switch off attention heads or feed-forward blocks and see what the model loses.

- zero ablation replaces a head's output (its slice of ``c_proj``'s input) or an MLP's output by 0;
- mean ablation replaces it by its mean over a reference batch (:func:`reference_means`), which
  keeps the typical offset that later layers expect and removes only the token-specific part.

A head is edited by a forward pre-hook on ``block.attn.c_proj`` (head ``h`` = input columns
``h*hs:(h+1)*hs``), an MLP by a forward hook on ``block.mlp``. The hooks live only inside
``with ablate(...)`` and are removed when it ends, also on an exception.

:func:`head_ablation_effects` ablates every head in turn and returns how much the mean next-token
loss rises: the causal number that the explorer and the HTML export show next to a head's pattern.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F

from .hooks import (as_ids, blocks, check_head, check_layer, eval_mode, hooks, run_with_cache,
                    split_heads)

MODES = ("zero", "mean")


class Means(NamedTuple):
    """Mean activations over a reference batch.

    heads: (n_layer, n_head, hs), or (n_layer, T, n_head, hs) per position;
    mlps: (n_layer, C), or (n_layer, T, C) per position.
    """

    heads: torch.Tensor
    mlps: torch.Tensor


def _mean(x: torch.Tensor, mask: torch.Tensor | None, per_position: bool) -> torch.Tensor:
    """x (L, B, T, ...) -> mean over B (and T unless per_position), over ``mask`` (B, T) only."""
    if mask is None:
        mask = torch.ones(x.shape[1:3], dtype=torch.bool, device=x.device)
    mask = torch.as_tensor(mask, dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[1:3]:
        raise ValueError(f"mask must be (B, T) = {tuple(x.shape[1:3])}, got {tuple(mask.shape)}")
    w = mask.to(x.dtype).reshape(1, *mask.shape, *([1] * (x.dim() - 3)))  # (1, B, T, 1, ...)
    dims = (1,) if per_position else (1, 2)
    count = w.sum(dims)
    if (count == 0).any():
        raise ValueError("the mask selects no token (at some position) to average over")
    return (x * w).sum(dims) / count


@torch.no_grad()
def reference_means(model, idx, *, mask: torch.Tensor | None = None, per_position: bool = False) -> Means:
    """Mean head and MLP outputs of ``model`` over the reference batch ``idx`` (B, T).

    ``mask`` (B, T) picks the tokens to average over (default all); ``per_position`` keeps one
    mean per position (averaged over the batch only), for prompts that share a template.
    """
    cache = run_with_cache(model, idx)
    return Means(heads=_mean(cache.heads, mask, per_position), mlps=_mean(cache.mlps, mask, per_position))


def head_means(model, idx, *, mask: torch.Tensor | None = None, per_position: bool = False) -> torch.Tensor:
    """Mean output of every head over ``idx``: (n_layer, n_head, hs) (or (n_layer, T, n_head, hs))."""
    return reference_means(model, idx, mask=mask, per_position=per_position).heads


def _value(mean: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | float:
    """The replacement for one site, broadcastable to x's (B, T, ...) slice."""
    if mean is None:
        return 0.0
    if mean.dim() == x.dim() - 1:  # per position: (T_ref, ...) -> first T positions
        T = x.shape[1]
        if mean.shape[0] < T:
            raise ValueError(f"per-position means cover {mean.shape[0]} positions, the input has {T}")
        mean = mean[:T]
    return mean.to(device=x.device, dtype=x.dtype)


def _head_hook(n_head: int, edits: dict[int, torch.Tensor | None]):
    def hook(module, args):
        z = split_heads(args[0], n_head).clone()  # (B, T, nh, hs), a copy: never edit in place
        for h, mean in edits.items():
            z[:, :, h] = _value(mean, z[:, :, h])
        return (z.reshape(args[0].shape),) + tuple(args[1:])
    return hook


def _mlp_hook(mean: torch.Tensor | None):
    def hook(module, args, out):
        return torch.zeros_like(out) if mean is None else _value(mean, out).expand_as(out).clone()
    return hook


@contextmanager
def ablate(model, heads: Iterable[Sequence[int]] = (), mlps: Iterable[int] = (), *, mode: str = "zero",
           means: Means | torch.Tensor | None = None) -> Iterator:
    """Run ``model`` with some heads and/or MLPs ablated, inside a ``with`` block.

    Args:
        heads: ``(layer, head)`` pairs to ablate.
        mlps: layers whose feed-forward output to ablate.
        mode: ``"zero"`` (output := 0) or ``"mean"`` (output := its mean from ``means``).
        means: for ``mode="mean"``: a :class:`Means` from :func:`reference_means`, or a head-mean
            tensor from :func:`head_means` (then only heads can be mean-ablated).

    Example::

        with ablate(model, heads=[(1, 2)], mode="mean", means=head_means(model, ref)):
            logits, loss = model(idx, targets)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    heads = [check_head(model, int(l), int(h)) for l, h in heads]
    mlps = [check_layer(model, int(l)) for l in mlps]
    head_mean = mlp_mean = None
    if mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs means=reference_means(model, reference_batch)")
        head_mean, mlp_mean = (means.heads, means.mlps) if isinstance(means, Means) else (means, None)
        if mlps and mlp_mean is None:
            raise ValueError("mean-ablating an MLP needs means=reference_means(...), not head means alone")
    per_layer: dict[int, dict[int, torch.Tensor | None]] = {}
    for l, h in heads:
        per_layer.setdefault(l, {})[h] = None if head_mean is None else head_mean[l][..., h, :]
    pre = [(blocks(model)[l].attn.c_proj, _head_hook(model.config.n_head, e)) for l, e in per_layer.items()]
    post = [(blocks(model)[l].mlp, _mlp_hook(None if mlp_mean is None else mlp_mean[l])) for l in mlps]
    with hooks(pre, post):
        yield model



class HeadEffects(NamedTuple):
    """Per-head ablation effects: ``effects[l, h]`` = loss with head ``(l, h)`` ablated − ``baseline``.

    ``label`` names the metric, the ablation and the baseline, ready to print next to a number.
    """

    effects: torch.Tensor  # (n_layer, n_head), float64 on the CPU
    baseline: float
    label: str


@torch.no_grad()
def _next_token_loss(model, idx: torch.Tensor) -> float:
    """Mean cross-entropy (nats) of predicting ``idx[:, 1:]`` from ``idx[:, :-1]``."""
    logits = model(idx)[0]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).double(), idx[:, 1:].flatten()).item()


@torch.no_grad()
def head_ablation_effects(model, idx, *, mode: str = "zero", means: Means | torch.Tensor | None = None) -> HeadEffects:
    """Ablate each head alone and measure the rise of the mean next-token loss on ``idx``.

    Args:
        idx: token ids (B, T) or (T,), T >= 2; every position but the last predicts the next token.
        mode: ``"zero"`` or ``"mean"`` (see :func:`ablate`).
        means: for ``mode="mean"``: :func:`reference_means` of *other* text (recommended); if omitted,
            the means are taken over ``idx`` itself, and the label says so.

    Returns:
        :class:`HeadEffects`: effects (n_layer, n_head) in nats (positive = the model needs the head),
        the unablated loss, and a label such as
        ``"Δ mean next-token loss (nats), zero ablation, vs unablated 1.872"``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    idx = as_ids(model, idx)
    if idx.dim() != 2 or idx.shape[1] < 2:
        raise ValueError(f"idx must be token ids of shape (B, T) or (T,) with T >= 2, got {tuple(idx.shape)}: "
                         "pass at least two tokens, so that one predicts the next")
    how = f"{mode} ablation"
    with eval_mode(model):
        if mode == "mean" and means is None:
            means, how = reference_means(model, idx), "mean ablation (means over the same tokens)"
        base = _next_token_loss(model, idx)
        cfg = model.config
        effects = torch.zeros(cfg.n_layer, cfg.n_head, dtype=torch.float64)
        for l in range(cfg.n_layer):
            for h in range(cfg.n_head):
                with ablate(model, heads=[(l, h)], mode=mode, means=means):
                    effects[l, h] = _next_token_loss(model, idx) - base
    return HeadEffects(effects, base, f"Δ mean next-token loss (nats), {how}, vs unablated {base:.3f}")
