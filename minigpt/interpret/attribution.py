"""Direct logit attribution: how much each component writes the logit of one token.

The final residual stream is a SUM (pre-LN blocks only ever add to it)::

    resid[n_layer] = E[w] + P[i] + Σ_l (Σ_h z_lh W_O,lhᵀ + b_O,l) + Σ_l (mlp_l - b_mlp,l + b_mlp,l)

with ``z_lh`` head h's output in layer l and ``W_O,lh`` the matching columns of ``c_proj``. The
final LayerNorm is ``γ (x - mean(x)) / s + β`` with ``s = sqrt(var(x) + eps)``. Freezing ``s`` at
its value for the full residual stream (the standard linearisation) makes it linear, and since
centering is linear too, each component ``c`` contributes ``(γ (c - mean(c)) / s) · E[token]`` to
the logit and ``β · E[token]`` remains. The terms sum to the model's logit exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .hooks import as_ids, blocks, run_with_cache


@dataclass
class LogitAttribution:
    """Contributions to one logit (or logit difference), each with a leading batch dimension B."""

    tok_embed: torch.Tensor  # (B,)
    pos_embed: torch.Tensor  # (B,)
    heads: torch.Tensor  # (B, n_layer, n_head)
    attn_bias: torch.Tensor  # (B, n_layer): c_proj's bias of each attention block
    mlps: torch.Tensor  # (B, n_layer): each feed-forward output without its c_proj bias
    mlp_bias: torch.Tensor  # (B, n_layer)
    ln_bias: torch.Tensor  # (B,): the final LayerNorm's β · E[token]
    logit: torch.Tensor  # (B,): the model's own logit (difference), for comparison

    def total(self) -> torch.Tensor:
        """Sum of all terms, (B,): equals ``logit`` up to rounding."""
        return (self.tok_embed + self.pos_embed + self.heads.sum((1, 2)) + self.attn_bias.sum(1)
                + self.mlps.sum(1) + self.mlp_bias.sum(1) + self.ln_bias)

    def terms(self, row: int = 0) -> dict[str, float]:
        """One batch row as ``{"tok_embed": …, "L0H1": …, "L0.attn_bias": …, "L0.mlp": …, …}``."""
        out = {"tok_embed": float(self.tok_embed[row]), "pos_embed": float(self.pos_embed[row])}
        L, H = self.heads.shape[1:]
        for l in range(L):
            out.update({f"L{l}H{h}": float(self.heads[row, l, h]) for h in range(H)})
            out[f"L{l}.attn_bias"] = float(self.attn_bias[row, l])
            out[f"L{l}.mlp"] = float(self.mlps[row, l])
            out[f"L{l}.mlp_bias"] = float(self.mlp_bias[row, l])
        out["ln_bias"] = float(self.ln_bias[row])
        return out


def _bias(linear: torch.nn.Linear, like: torch.Tensor) -> torch.Tensor:
    return linear.bias if linear.bias is not None else torch.zeros_like(like)


@torch.no_grad()
def direct_logit_attribution(model, idx, token, *, baseline=None, position: int = -1) -> LogitAttribution:
    """Split the logit of ``token`` at ``position`` into per-component terms.

    Args:
        idx: token ids (B, T).
        token: the token whose logit to explain: an id, or one id per batch row.
        baseline: optional second token: then the terms explain ``logit[token] - logit[baseline]``.
        position: the position whose prediction to explain (default: the last).
    """
    idx = as_ids(model, idx)
    B, T = idx.shape
    cache = run_with_cache(model, idx)
    W = model.lm_head.weight  # (V, C)
    tok_ids = torch.as_tensor(token, dtype=torch.long, device=idx.device).expand(B)
    direction = W[tok_ids]  # (B, C): the unembedding of the token
    if baseline is not None:
        direction = direction - W[torch.as_tensor(baseline, dtype=torch.long, device=idx.device).expand(B)]
    ln = model.transformer.ln_f
    final = cache.resid[-1][:, position]  # (B, C)
    scale = torch.sqrt(final.var(-1, unbiased=False, keepdim=True) + ln.eps)  # (B, 1), frozen

    def project(c: torch.Tensor) -> torch.Tensor:  # c (B, ..., C) -> (B, ...)
        c = (c - c.mean(-1, keepdim=True)) * ln.weight
        shape = (B,) + (1,) * (c.dim() - 2) + (c.shape[-1],)
        return (c / scale.reshape(B, *([1] * (c.dim() - 2)), 1) * direction.reshape(shape)).sum(-1)

    C, H = model.config.n_embd, model.config.n_head
    hs = C // H
    pos = torch.arange(T, device=idx.device)[position]
    heads, attn_bias, mlps, mlp_bias = [], [], [], []
    for l, block in enumerate(blocks(model)):
        z = cache.heads[l][:, position]  # (B, nh, hs)
        w_o = block.attn.c_proj.weight.reshape(C, H, hs)  # column block h belongs to head h
        heads.append(project(torch.einsum("bhs,chs->bhc", z, w_o)))  # (B, nh)
        b_attn = _bias(block.attn.c_proj, final[0])
        b_mlp = _bias(block.mlp.c_proj, final[0])
        attn_bias.append(project(b_attn.expand(B, C)))
        mlps.append(project(cache.mlps[l][:, position] - b_mlp))
        mlp_bias.append(project(b_mlp.expand(B, C)))
    ln_bias = (ln.bias * direction).sum(-1) if ln.bias is not None else torch.zeros(B, dtype=final.dtype)
    logits = cache.logits[:, position]  # (B, V)
    logit = logits.gather(1, tok_ids[:, None])[:, 0]
    if baseline is not None:
        base_ids = torch.as_tensor(baseline, dtype=torch.long, device=idx.device).expand(B)
        logit = logit - logits.gather(1, base_ids[:, None])[:, 0]
    return LogitAttribution(
        tok_embed=project(model.transformer.wte(idx[:, position])),
        pos_embed=project(model.transformer.wpe(pos).expand(B, C)),
        heads=torch.stack(heads, 1), attn_bias=torch.stack(attn_bias, 1), mlps=torch.stack(mlps, 1),
        mlp_bias=torch.stack(mlp_bias, 1), ln_bias=ln_bias, logit=logit)
