"""LoRA: low-rank adapters on a model's Linear layers (Hu et al., 2021).

A frozen weight W (out, in) gets a trainable low-rank update, ``W + (α/r)·B·A`` with A (r, in)
and B (out, r), r much smaller than in and out. B starts at zero, so at the start the adapted
model computes exactly what the pretrained one did; only A and B (r·(in + out) numbers per
layer) are trained. After training the update can be *merged* into W: no extra cost at inference.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGETS: tuple[str, ...] = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · x Aᵀ Bᵀ``: a frozen ``nn.Linear`` plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
        self.base, self.r, self.alpha = base, r, float(alpha)
        self.scaling = self.alpha / r
        base.requires_grad_(False)
        p = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=p.device, dtype=p.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=p.device, dtype=p.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and the LoRA paper's code)
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update (α/r)·B·A, shape (out, in) like ``base.weight``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into ``base.weight`` (W ← W + (α/r)BA); forward then skips the adapter."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (W ← W − (α/r)BA), so the adapter can train again."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, targets: tuple[str, ...] = TARGETS,
             blocks: list[int] | None = None, dropout: float = 0.0, freeze_base: bool = True) -> list[str]:
    """Wrap the Linear layers whose names end with one of ``targets`` in :class:`LoRALinear`.

    Works on a :class:`~minigpt.model.GPT` or anything that contains one (a classifier).
    ``blocks`` limits it to those block indices (default: all). With ``freeze_base`` every
    parameter that is not an adapter is frozen; unfreeze a task head afterwards if it should
    train (``head.requires_grad_(True)``). Returns the names of the wrapped layers.
    """
    found = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or not any(name.endswith(t) for t in targets):
            continue
        if blocks is not None:
            parts = name.split(".")
            if "h" not in parts or int(parts[parts.index("h") + 1]) not in blocks:
                continue
        found.append(name)
    if not found:
        raise ValueError(f"no nn.Linear layer matches targets {targets}"
                         + ("" if blocks is None else f" in blocks {blocks}"))
    if freeze_base:
        model.requires_grad_(False)
    for name in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r=r, alpha=alpha, dropout=dropout))
    return found


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter matrices A and B of every LoRA layer."""
    return [p for m in lora_layers(model) for p in (m.lora_A, m.lora_B)]


def merge_lora(model: nn.Module) -> int:
    """Merge every adapter into its base weight; returns how many were merged."""
    layers = lora_layers(model)
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    """Undo :func:`merge_lora`."""
    layers = lora_layers(model)
    for m in layers:
        m.unmerge()
    return len(layers)


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every LoRALinear by its (merged, unless ``merge=False``) plain nn.Linear."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            if merge:
                module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base)
    return model
