"""Logit lens: read the residual stream after every block as if it were the last one.

The model turns its final residual stream into logits with ``lm_head(ln_f(x))``. Applying the same
two steps to the residual stream after ``l`` blocks shows what the model would predict if it
stopped there (nostalgebraist, 2020): how the prediction forms layer by layer.
"""

from __future__ import annotations

import torch

from .hooks import run_with_cache


@torch.no_grad()
def logit_lens(model, idx, *, log_probs: bool = False) -> torch.Tensor:
    """``lm_head(ln_f(resid[l]))`` for l = 0..n_layer: (n_layer + 1, B, T, V).

    Row 0 reads the embeddings, row ``n_layer`` equals the model's own logits. ``log_probs``
    returns log-softmax over the vocabulary instead of logits.
    """
    resid = run_with_cache(model, idx).resid  # (L + 1, B, T, C)
    logits = model.lm_head(model.transformer.ln_f(resid))  # (L + 1, B, T, V)
    return torch.log_softmax(logits, dim=-1) if log_probs else logits
