"""The GPT: embeddings, feed-forward network, pre-norm block, and the full decoder-only model.

Parameter names follow GPT-2 (``transformer.wte``, ``transformer.h.0.attn.c_attn`` …) so that a
Hugging Face GPT-2 state dict can be imported (see :mod:`minigpt.checkpoint`). The options of
:class:`~minigpt.config.GPTConfig` turn the same modules into a Llama-style model (RMSNorm,
rotary positions, SwiGLU, grouped-query attention, untied head; see :mod:`minigpt.importers`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import CausalSelfAttention, KVCache
from .config import GPTConfig
from .norms import make_norm
from .objective import lm_loss
from .rope import rope_cos_sin


class ReLU2(nn.Module):
    """Squared ReLU, max(0, x)² (Primer, So et al. 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class FeedForward(nn.Module):
    """Position-wise FFN: act(xW₁ + b₁)W₂ + b₂ for a row vector x, 4× wider inside (GPT-2's c_fc,
    c_proj; ``nn.Linear`` stores each matrix transposed, ``c_fc.weight`` = W₁ᵀ).

    With ``activation="swiglu"`` (Llama) a gate joins in: (SiLU(xW_g) ⊙ xW₁)W₂, with
    ``c_gate`` = W_g (Llama's gate_proj), ``c_fc`` = W₁ (up_proj), ``c_proj`` = W₂ (down_proj).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.ffn_width
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gated = config.activation == "swiglu"
        if self.gated:
            self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.act = {"gelu": lambda: nn.GELU(approximate="tanh"), "relu": nn.ReLU, "relu2": ReLU2,
                    "swiglu": nn.SiLU}[config.activation]()
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:  # (B, T, C) -> two (B, T, H), multiplied elementwise -> (B, T, C)
            return self.dropout(self.c_proj(self.act(self.c_gate(x)) * self.c_fc(x)))
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)). The residual *adds*.

    ``ln_1``/``ln_2`` are LayerNorms or RMSNorms (``config.norm``); the names stay GPT-2's.
    """

    def __init__(self, config: GPTConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor, return_weights: bool = False, kv_cache: KVCache | None = None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.ln_1(x), return_weights=return_weights, kv_cache=kv_cache, rope=rope)
        x = x + a  # (B, T, C): same shape in and out, so blocks stack
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    """A decoder-only transformer (no encoder, no cross-attention): GPT-2 by default.

    With ``pos_emb="rope"`` there is no ``transformer.wpe``; with ``tie_weights=False``
    ``lm_head`` has its own matrix.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))  # token embedding E
        if config.pos_emb == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)  # position embedding P
        self.transformer = nn.ModuleDict(dict(
            **modules,
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # weight tying: the same matrix E
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/√(2·n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Number of parameters (a tied head counted once); optionally without wte and wpe
        (an untied ``lm_head`` is a matrix multiply and stays counted)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.transformer.wte.weight.numel()
            if "wpe" in self.transformer:
                n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6·N (forward + backward matmuls) + 12·n_layer·n_embd·T (attention)."""
        cfg = self.config
        t = cfg.block_size if seq_len is None else seq_len
        n = self.num_params(exclude_embeddings=True)
        if cfg.tie_weights:
            n += cfg.vocab_size * cfg.n_embd  # the tied head's matmul counts
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * t

    def _check_input(self, idx: torch.Tensor, start: int) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"idx must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8, torch.int8):
            raise TypeError(f"idx must hold integer token ids (torch.long), got dtype {idx.dtype}")
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}; "
                             "for one sequence use idx[None]")
        if idx.size(1) == 0:
            raise ValueError("idx is empty: give at least one token")
        if start + idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of {start + idx.size(1)} tokens is longer than the context "
                             f"block_size={self.config.block_size}; crop it to the last {self.config.block_size} tokens")
        if torch.compiler.is_compiling():
            return
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of range: this model's vocab_size is "
                             f"{self.config.vocab_size} (ids 0..{self.config.vocab_size - 1}); "
                             "was the text encoded with the model's own tokenizer?")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                return_attn: bool = False, kv_cache: KVCache | None = None,
                last_only: bool = False):
        """Run the model.

        Args:
            idx: token ids (B, T), T <= block_size (counting positions already in ``kv_cache``).
            targets: next-token ids (B, T), already shifted by one; ``-100`` positions are ignored.
            return_attn: also return a list (one per layer) of attention weights (B, n_head, T, T_k).
            kv_cache: a :class:`~minigpt.attention.KVCache`; the new tokens continue it.
            last_only: compute logits for the last position only (faster generation).

        Returns:
            ``(logits, loss)`` with logits (B, T, V) (or (B, 1, V)) and loss a scalar or None;
            ``(logits, loss, attentions)`` when ``return_attn`` is True.
        """
        start = kv_cache.pos if kv_cache is not None else 0
        self._check_input(idx, start)
        B, T = idx.shape
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x, rope = self.embed(idx, pos)
        attentions = []
        for block in self.transformer.h:
            x, w = block(x, return_weights=return_attn, kv_cache=kv_cache, rope=rope)
            if return_attn:
                attentions.append(w)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.transformer.ln_f(x)  # (B, T, C)
        if last_only and targets is None:
            x = x[:, -1:, :]
        logits = self.lm_head(x)  # (B, T, V)
        loss = None if targets is None else lm_loss(logits, targets)
        if return_attn:
            return logits, loss, attentions
        return logits, loss

    def embed(self, idx: torch.Tensor, pos: torch.Tensor
              ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The first block's input for tokens idx (B, T) at absolute positions pos (T,), after
        dropout, and the rotary (cos, sin) for those positions (None with learned positions)."""
        x = self.transformer.wte(idx)  # (B, T, C): E[w]
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(pos)  # (B, T, C) + (T, C): E[w] + P[i]
        return self.transformer.drop(x), self.rotary(pos, x.dtype)

    def rotary(self, pos: torch.Tensor, dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Rotary cos, sin (T, head_size) for absolute positions pos (T,); None with learned
        positions. Rotary positions enter inside attention, by rotating q and k."""
        if self.config.pos_emb != "rope":
            return None
        return rope_cos_sin(pos, self.config.head_size, self.config.rope_theta, dtype=dtype)

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty KV cache on this model's device and dtype."""
        p = self.transformer.wte.weight
        return KVCache(self.config, batch_size, device=p.device, dtype=p.dtype)
