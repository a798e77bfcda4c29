"""The language-model objective: next-token cross-entropy, chain-rule log-probability, perplexity."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shift_for_lm(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split token ids (B, T+1) into inputs ``x = idx[:, :-1]`` and targets ``y = idx[:, 1:]``.

    Position i of x predicts token i+1: the labels are the text itself, shifted by one.
    """
    if idx.dim() != 2 or idx.size(1) < 2:
        raise ValueError(f"shift_for_lm needs ids of shape (B, T+1) with T+1 >= 2, got {tuple(idx.shape)}")
    return idx[:, :-1], idx[:, 1:]


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy of already-shifted targets: logits (B, T, V), targets (B, T).

    Equals ``-mean_i log softmax(logits_i)[targets_i]`` over positions whose target is not
    ``ignore_index`` (those positions are masked out, as in supervised fine-tuning).
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree: "
                         "targets must be (B, T) for logits (B, T, V)")
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=ignore_index)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log P(target_i | context) for every position: logits (B, T, V), targets (B, T) -> (B, T)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def sequence_logprob(model: torch.nn.Module, idx: torch.Tensor | list[int]) -> torch.Tensor:
    """log P(w_2 … w_n | w_1) by the chain rule: the sum of the log-conditionals of each next token.

    ``idx`` is (T,) or (B, T) token ids; the first token is the given context (a GPT has no
    distribution for it). Returns a scalar for one sequence or (B,) for a batch.
    """
    idx = torch.as_tensor(idx, dtype=torch.long)
    single = idx.dim() == 1
    idx = idx[None] if single else idx
    x, y = shift_for_lm(idx)
    logits = model(x)[0]  # (B, T, V)
    total = token_logprobs(logits, y).sum(dim=1)  # chain rule: sum of log-conditionals
    return total[0] if single else total


def perplexity(loss: float | torch.Tensor) -> float:
    """exp(mean negative log-likelihood per token): the effective number of equally likely choices."""
    return math.exp(float(loss))


def bits_per_char(loss_per_token: float, n_tokens: int, n_chars: int) -> float:
    """Convert a mean loss in nats per token to bits per character: loss·tokens/(chars·ln 2).

    For a character-level model ``n_tokens == n_chars`` and this is loss / ln 2.
    """
    if n_chars <= 0:
        raise ValueError("n_chars must be positive")
    return float(loss_per_token) * n_tokens / (n_chars * math.log(2))
