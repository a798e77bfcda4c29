"""Capture: run a text through a model and keep every layer's and head's attention weights.

The weights come from the model's explicit attention path (``return_attn=True``), always in eval
mode and without gradients: with dropout on, the weights that multiply V are rescaled by 1/(1-p),
exceed 1 and rows stop summing to 1 — a picture of noise, not of the model. The model's own mode
(train or eval) is restored afterwards, and the fast path is untouched.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode (dropout off) for the block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def attention_weights(model, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights and logits for a batch of token ids.

    Args:
        model: a :class:`minigpt.GPT` (anything whose forward accepts ``return_attn=True``).
        idx: token ids (B, T) or (T,).

    Returns:
        ``(weights, logits)``: weights (B, n_layer, n_head, T, T) float32 on the CPU — softmax
        probabilities, each row sums to 1, zero above the diagonal — and logits (B, T, V).
    """
    idx = torch.as_tensor(idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx[None]
    with eval_mode(model):
        logits, _, attns = model(idx.to(model_device(model)), return_attn=True)
    weights = torch.stack([a.float().cpu() for a in attns], dim=1)  # (B, L, H, T, T)
    return weights, logits.float().cpu()


def _select(weights: torch.Tensor, layer: int, head: int | str) -> torch.Tensor:
    """(L, H, T, T) -> (T, T) for one head, or the mean over heads when ``head == "mean"``."""
    n_layer, n_head = weights.shape[:2]
    if not -n_layer <= layer < n_layer:
        raise IndexError(f"layer {layer} does not exist: this model has layers 0..{n_layer - 1}")
    if head == "mean":
        return weights[layer].mean(0)
    if not isinstance(head, int) or not -n_head <= head < n_head:
        raise IndexError(f"head {head!r} does not exist: use 0..{n_head - 1} or 'mean'")
    return weights[layer, head]


@dataclass
class AttentionCapture:
    """Everything the views need about one text: its tokens and all attention weights.

    ``weights[l, h, i, j]`` is how much query token ``i`` attends to key token ``j`` in head ``h``
    of layer ``l``; shape (n_layer, n_head, T, T).
    """

    tokens: list[str]
    ids: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor | None = None
    text: str | None = None
    truncated: int = 0  # tokens dropped from the end to fit the model's context
    meta: dict = field(default_factory=dict)

    @property
    def n_layer(self) -> int:
        return self.weights.shape[0]

    @property
    def n_head(self) -> int:
        return self.weights.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.weights.shape[-1]

    def head(self, layer: int, head: int | str = "mean") -> torch.Tensor:
        """One head's (T, T) matrix, or the layer's mean over heads (``head="mean"``)."""
        return _select(self.weights, layer, head)

    def attends_to(self, layer: int, head: int | str, query: int) -> torch.Tensor:
        """What ``query`` attends to: row ``query`` (T,), a distribution over keys 0..query."""
        return self.head(layer, head)[query]

    def attended_by(self, layer: int, head: int | str, key: int) -> torch.Tensor:
        """What attends to ``key``: column ``key`` (T,), the weight each later query gives it."""
        return self.head(layer, head)[:, key]

    def loss_per_token(self) -> torch.Tensor:
        """Cross-entropy (nats) of predicting token t+1 from tokens 0..t, shape (T-1,)."""
        if self.logits is None:
            raise ValueError("this capture has no logits")
        return F.cross_entropy(self.logits[:-1], self.ids[1:], reduction="none")

    def __repr__(self) -> str:
        return (f"AttentionCapture({self.n_tokens} tokens, {self.n_layer} layers × {self.n_head} heads"
                + (f", {self.truncated} tokens cut to fit the context" if self.truncated else "") + ")")


def token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    """Display strings of ``ids``: ``tokenizer.tokens(ids)`` if it has one, else decode each id."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [str(i) for i in ids]
    if hasattr(tokenizer, "tokens"):
        return list(tokenizer.tokens(ids))
    return [tokenizer.decode([i]) for i in ids]


def capture_attention(model, text: str | Sequence[int] | torch.Tensor, tokenizer=None, *,
                      max_tokens: int | None = None) -> AttentionCapture:
    """Run ``text`` through ``model`` and capture every layer's and head's attention weights.

    Args:
        model: any minigpt ``GPT``, trained or freshly initialised.
        text: a string (needs ``tokenizer``) or a sequence / 1-D tensor of token ids.
        tokenizer: turns text into ids and ids into display strings.
        max_tokens: keep at most this many tokens (default: the model's context, ``block_size``);
            tokens beyond are dropped and counted in ``capture.truncated``.
    """
    if isinstance(text, str):
        if tokenizer is None:
            raise ValueError("capture_attention got a string but no tokenizer; pass tokenizer=… "
                             "or a list of token ids")
        ids = torch.as_tensor(list(tokenizer.encode(text)), dtype=torch.long)
        source = text
    else:
        ids = torch.as_tensor(text, dtype=torch.long).flatten()
        source = None
    if ids.numel() == 0:
        raise ValueError("nothing to look at: the text encodes to zero tokens")
    limit = model.config.block_size if max_tokens is None else min(max_tokens, model.config.block_size)
    truncated = max(0, ids.numel() - limit)
    ids = ids[:limit]
    weights, logits = attention_weights(model, ids)
    return AttentionCapture(tokens=token_strings(tokenizer, ids.tolist()), ids=ids, weights=weights[0],
                            logits=logits[0], text=source, truncated=truncated)
