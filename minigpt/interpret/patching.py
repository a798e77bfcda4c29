"""Activation patching: which activations carry the difference between a clean and a corrupted prompt?

Run the clean prompt and cache every site (:func:`~.hooks.run_with_cache`); run the corrupted
prompt (same length) with ONE site overwritten by its clean value; measure a metric of the
logits. A site whose patch moves the metric from its corrupted value to its clean value carries
the information that the corruption destroyed. :func:`normalise` maps corrupted -> 0, clean -> 1.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence

import torch

from .hooks import (ActivationCache, as_ids, blocks, check_head, check_layer, eval_mode, hooks,
                    run_with_cache, split_heads)

Metric = Callable[[torch.Tensor], torch.Tensor]  # logits (B, T, V) -> scalar tensor


def logit_diff(correct, wrong, position: int = -1) -> Metric:
    """Metric: logit of ``correct`` minus logit of ``wrong`` at ``position``, mean over the batch.
    ``correct`` / ``wrong``: a token id, or one id per batch row."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (_gather(logits[:, position], correct) - _gather(logits[:, position], wrong)).mean()
    return metric


def target_logprob(target, position: int = -1) -> Metric:
    """Metric: log-probability of ``target`` (an id or one per batch row) at ``position``, batch mean.
    Its negative is the loss on that token."""
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return _gather(torch.log_softmax(logits[:, position].double(), -1), target).mean()
    return metric


def _gather(x: torch.Tensor, token) -> torch.Tensor:
    """x (B, V), token id or (B,) ids -> (B,)."""
    t = torch.as_tensor(token, dtype=torch.long, device=x.device).expand(x.shape[0])
    return x.gather(1, t[:, None])[:, 0]


@torch.no_grad()
def run_metric(model, idx, metric: Metric) -> float:
    """``metric`` of ``model``'s logits on ``idx``, in eval mode."""
    with eval_mode(model):
        logits, _ = model(as_ids(model, idx))
    return float(metric(logits))


def normalise(scores: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    """(scores - corrupted) / (clean - corrupted): 0 = as corrupted, 1 = fully restored."""
    if clean == corrupted:
        raise ValueError("clean and corrupted metrics are equal: the corruption changes nothing to restore")
    return (scores - corrupted) / (clean - corrupted)


def _positions(positions, T: int) -> list[int] | slice:
    if positions is None:
        return slice(None)
    out = [int(p) for p in ([positions] if isinstance(positions, int) else positions)]
    if any(not -T <= p < T for p in out):
        raise IndexError(f"positions {out} out of range for {T} tokens")
    return out


@contextmanager
def patched(model, cache: ActivationCache, *, resid: Iterable[int] = (), heads: Iterable[Sequence[int]] = (),
            positions: int | Sequence[int] | None = None) -> Iterator:
    """Inside the block, ``model`` takes the listed sites from ``cache`` (the clean run).

    Args:
        resid: residual-stream sites ``l`` in 0..n_layer (after ``l`` blocks; see :mod:`.hooks`).
        heads: ``(layer, head)`` pairs: that head's output (its slice of ``c_proj``'s input).
        positions: the positions to patch (default: all).
    """
    T = cache.resid.shape[2]
    pos = _positions(positions, T)
    n_head = model.config.n_head

    def resid_hook(layer):
        def fn(module, args):
            x = args[0]
            _check_shape(x, cache.resid[layer])
            x = x.clone()
            x[:, pos] = cache.resid[layer][:, pos].to(x.dtype)
            return (x,) + tuple(args[1:])
        return fn

    def head_hook(layer, hs):
        def fn(module, args):
            z = split_heads(args[0], n_head).clone()  # (B, T, nh, hs)
            _check_shape(z, cache.heads[layer])
            for h in hs:
                z[:, pos, h] = cache.heads[layer][:, pos, h].to(z.dtype)
            return (z.reshape(args[0].shape),) + tuple(args[1:])
        return fn

    n_layer = model.config.n_layer
    pre = []
    for l in resid:
        l = check_layer(model, int(l), allow_final=True)
        pre.append((blocks(model)[l] if l < n_layer else model.transformer.ln_f, resid_hook(l)))
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        l, h = check_head(model, int(l), int(h))
        by_layer.setdefault(l, []).append(h)
    pre += [(blocks(model)[l].attn.c_proj, head_hook(l, hs)) for l, hs in by_layer.items()]
    with hooks(pre):
        yield model


def _check_shape(x: torch.Tensor, clean: torch.Tensor) -> None:
    if x.shape != clean.shape:
        raise ValueError(f"the corrupted run has shape {tuple(x.shape)} at a patched site but the clean run "
                         f"{tuple(clean.shape)}: clean and corrupted prompts must have the same (B, T)")


def _setup(model, clean, corrupted, metric):
    clean, corrupted = as_ids(model, clean), as_ids(model, corrupted)
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} prompts "
                         "must have the same shape")
    cache = run_with_cache(model, clean)
    if metric is None:  # default: log-prob of the clean run's top prediction at the last position
        metric = target_logprob(cache.logits[:, -1].argmax(-1))
    return clean, corrupted, cache, metric


def _finish(model, scores, corrupted, metric, cache, norm: bool) -> torch.Tensor:
    if not norm:
        return scores
    return normalise(scores, float(metric(cache.logits)), run_metric(model, corrupted, metric))


@torch.no_grad()
def patch_residual(model, clean, corrupted, metric: Metric | None = None, *,
                   normalised: bool = False) -> torch.Tensor:
    """Patch the clean residual stream into the corrupted run, one (site, position) at a time.

    Returns (n_layer + 1, T): entry ``[l, t]`` is the metric when the residual stream after ``l``
    blocks at position ``t`` comes from the clean run. Default metric: log-prob of the clean run's
    top token at the last position. ``normalised``: 0 = corrupted, 1 = clean (:func:`normalise`).
    """
    clean, corrupted, cache, metric = _setup(model, clean, corrupted, metric)
    L, T = model.config.n_layer, clean.shape[1]
    out = torch.empty(L + 1, T, dtype=torch.float64)
    with eval_mode(model):
        for l in range(L + 1):
            for t in range(T):
                with patched(model, cache, resid=[l], positions=[t]):
                    out[l, t] = float(metric(model(corrupted)[0]))
    return _finish(model, out, corrupted, metric, cache, normalised)


@torch.no_grad()
def patch_heads(model, clean, corrupted, metric: Metric | None = None, *, per_position: bool = False,
                normalised: bool = False) -> torch.Tensor:
    """Patch each head's clean output into the corrupted run, one head at a time.

    Returns (n_layer, n_head), all positions patched together; or (n_layer, n_head, T) with
    ``per_position``, one position at a time. Metric and ``normalised`` as in :func:`patch_residual`.
    """
    clean, corrupted, cache, metric = _setup(model, clean, corrupted, metric)
    L, H, T = model.config.n_layer, model.config.n_head, clean.shape[1]
    sites = [[t] for t in range(T)] if per_position else [None]
    out = torch.empty(L, H, len(sites), dtype=torch.float64)
    with eval_mode(model):
        for l in range(L):
            for h in range(H):
                for i, pos in enumerate(sites):
                    with patched(model, cache, heads=[(l, h)], positions=pos):
                        out[l, h, i] = float(metric(model(corrupted)[0]))
    out = out if per_position else out[..., 0]
    return _finish(model, out, corrupted, metric, cache, normalised)
