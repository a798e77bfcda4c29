"""Numbers that summarise what heads do. Every score takes attention weights (..., T, T) — one
head, or a capture's (n_layer, n_head, T, T) — and returns one number per head (the shape
without the last two dimensions), averaged over the queries where the score is defined.

- :func:`head_entropy`: how spread out a head's attention is (0 = one key only).
- :func:`previous_token_score`: weight on the token just before (``w[i, i-1]``).
- :func:`first_token_score`: weight on the first token (an "attention sink").
- :func:`token_class_score`: weight on a chosen set of keys (punctuation, speaker names …).
- :func:`induction_score`: weight on the token *after* an earlier copy of the current token.
- :func:`attention_rollout`: how attention composes through the layers (Abnar & Zuidema, 2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .capture import attention_weights


def _as_weights(weights) -> torch.Tensor:
    w = torch.as_tensor(weights).detach().cpu()
    if not w.is_floating_point():
        w = w.double()
    if w.dim() < 2 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"need square attention weights (..., T, T), got shape {tuple(w.shape)}")
    return w


def uniform_attention(T: int) -> torch.Tensor:
    """The causal head that attends equally to all visible tokens: row i is 1/(i+1) on keys 0..i.
    A baseline: a score is only interesting where a real head beats this one."""
    return torch.tril(torch.ones(T, T, dtype=torch.float64)) / torch.arange(1, T + 1, dtype=torch.float64)[:, None]


def row_entropy(weights) -> torch.Tensor:
    """Entropy in nats of each row (each query's distribution over keys): (..., T, T) -> (..., T)."""
    w = _as_weights(weights)
    return -(w * torch.log(w.clamp_min(1e-30))).sum(-1)


def head_entropy(weights, normalize: bool = False) -> torch.Tensor:
    """Mean entropy (nats) of the rows of each head, over queries 1..T-1 (query 0 has one choice).

    ``normalize=True`` divides each row by its largest possible entropy, log(i+1), so 1 means
    uniform over the visible tokens and 0 means all weight on one token.
    """
    w = _as_weights(weights)
    T = w.shape[-1]
    if T < 2:
        raise ValueError("entropy needs at least 2 tokens")
    h = row_entropy(w)[..., 1:]
    if normalize:
        h = h / torch.log(torch.arange(2, T + 1, dtype=torch.float64))
    return h.mean(-1)


def previous_token_score(weights) -> torch.Tensor:
    """Mean weight that query i gives to key i-1 (queries 1..T-1): 1 for a perfect previous-token head."""
    w = _as_weights(weights)
    return torch.diagonal(w, offset=-1, dim1=-2, dim2=-1).mean(-1)


def self_token_score(weights) -> torch.Tensor:
    """Mean weight that query i gives to itself (queries 1..T-1)."""
    w = _as_weights(weights)
    return torch.diagonal(w, dim1=-2, dim2=-1)[..., 1:].mean(-1)


def first_token_score(weights) -> torch.Tensor:
    """Mean weight on key 0 from queries 1..T-1 (query 0 can only see itself): the "sink" score."""
    w = _as_weights(weights)
    return w[..., 1:, 0].mean(-1)


def token_class_score(weights, keys: Sequence[bool] | torch.Tensor, *, exclude_self: bool = False) -> torch.Tensor:
    """Mean attention mass on the keys where ``keys`` is True (e.g. punctuation tokens).

    Averaged over the queries that can see at least one such key. Compare with the same score of
    :func:`uniform_attention` to tell a head that seeks these tokens from one that meets them by chance.
    """
    w = _as_weights(weights)
    T = w.shape[-1]
    sel = torch.as_tensor(keys, dtype=torch.bool).flatten()
    if sel.numel() != T:
        raise ValueError(f"keys marks {sel.numel()} tokens but the weights are over {T}")
    visible = torch.tril(torch.ones(T, T, dtype=torch.bool), -1 if exclude_self else 0) & sel[None, :]
    rows = visible.any(-1)  # queries that can see a chosen key
    if not rows.any():
        raise ValueError("no query can see any of the chosen keys")
    mass = (w * visible).sum(-1)
    return mass[..., rows].mean(-1)


def induction_targets(ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """(T, T) boolean: ``[i, j]`` is True when ``ids[j-1] == ids[i]`` and ``j <= i``: key j is the
    token that *followed* an earlier copy of query i's token (what an induction head attends to,
    so that it can predict the same continuation)."""
    ids = torch.as_tensor(ids).flatten()
    T = ids.numel()
    same = ids[None, :-1] == ids[:, None]  # [i, j-1]: earlier token equals query token
    tgt = torch.zeros(T, T, dtype=torch.bool)
    tgt[:, 1:] = same
    return tgt & torch.tril(torch.ones(T, T, dtype=torch.bool))  # j <= i: only visible keys


def induction_score(weights, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Mean weight on induction targets (see :func:`induction_targets`), over the queries that have one.

    On a random sequence repeated twice (period P) the target of query i in the second copy is
    key i-P+1, and a perfect induction head scores 1.
    """
    w = _as_weights(weights)
    tgt = induction_targets(ids)
    if tgt.shape[-1] != w.shape[-1]:
        raise ValueError(f"ids has {tgt.shape[-1]} tokens but the weights are over {w.shape[-1]}")
    rows = tgt.any(-1)
    if not rows.any():
        raise ValueError("no token repeats, so there is nothing for an induction head to find")
    return (w * tgt).sum(-1)[..., rows].mean(-1)


def repeated_random_tokens(vocab_size: int, length: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """``n`` sequences of ``length`` random token ids, each followed by an exact copy: (n, 2·length)."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab_size, (n, length), generator=g)
    return torch.cat([first, first], dim=1)


@dataclass
class InductionResult:
    scores: torch.Tensor  # (n_layer, n_head) induction score
    loss: torch.Tensor  # (2·length - 1,) mean loss (nats) of predicting token t+1, over sequences
    length: int  # length of one copy

    @property
    def loss_first(self) -> float:
        """Mean loss on the first copy (random tokens: nothing to predict from)."""
        return float(self.loss[: self.length - 1].mean())

    @property
    def loss_second(self) -> float:
        """Mean loss on the second copy (each token is predictable from the first copy)."""
        return float(self.loss[self.length - 1:].mean())


def induction_scores(model, length: int | None = None, n: int = 4, seed: int = 0,
                     vocab: Sequence[int] | None = None) -> InductionResult:
    """Run ``n`` repeated random sequences through ``model``; score each head and measure the loss.

    ``length`` defaults to half the context (capped at 50). ``vocab`` restricts the random tokens
    to these ids (e.g. to common tokens of a trained tokenizer); default: all ids.
    """
    length = min(50, model.config.block_size // 2) if length is None else length
    if 2 * length > model.config.block_size:
        raise ValueError(f"two copies of {length} tokens do not fit the context of {model.config.block_size}")
    if vocab is None:
        ids = repeated_random_tokens(model.config.vocab_size, length, n, seed)
    else:
        pool = torch.as_tensor(list(vocab), dtype=torch.long)
        ids = pool[repeated_random_tokens(len(pool), length, n, seed)]
    weights, logits = attention_weights(model, ids)  # (n, L, H, T, T), (n, T, V)
    scores = torch.stack([induction_score(weights[b], ids[b]) for b in range(n)]).mean(0)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    return InductionResult(scores=scores, loss=loss.mean(0).double(), length=length)


def attention_rollout(weights, residual: bool = True) -> torch.Tensor:
    """Attention rollout: how much each token's output depends on each input token, layer by layer.

    Heads are averaged; with ``residual`` the skip connection is modelled as 0.5·A + 0.5·I (rows
    renormalised); then layers are multiplied: R_l = Â_l · R_{l-1}. Takes (n_layer, n_head, T, T)
    and returns (n_layer, T, T) — entry ``[l]`` is the rollout up to and including layer l; every row
    sums to 1 and stays causal.
    """
    w = _as_weights(weights)
    if w.dim() != 4:
        raise ValueError(f"rollout needs (n_layer, n_head, T, T) weights, got shape {tuple(w.shape)}")
    a = w.mean(1)
    T = a.shape[-1]
    if residual:
        a = 0.5 * a + 0.5 * torch.eye(T, dtype=a.dtype)
        a = a / a.sum(-1, keepdim=True)
    out, r = [], torch.eye(T, dtype=a.dtype)
    for layer in a:
        r = layer @ r
        out.append(r)
    return torch.stack(out)


def top_heads(scores, k: int = 3, largest: bool = True) -> list[tuple[int, int, float]]:
    """The ``k`` best (layer, head, score) of an (n_layer, n_head) score table, best first."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    if s.dim() != 2:
        raise ValueError(f"need an (n_layer, n_head) table, got shape {tuple(s.shape)}")
    vals, idx = s.flatten().topk(min(k, s.numel()), largest=largest)
    n_head = s.shape[1]
    return [(int(i) // n_head, int(i) % n_head, round(float(v), 6)) for v, i in zip(vals, idx)]


def entropy_bound(T: int) -> float:
    """Mean of log(i+1) over queries 1..T-1: the entropy of :func:`uniform_attention`, the maximum."""
    return sum(math.log(i + 1) for i in range(1, T)) / (T - 1)
