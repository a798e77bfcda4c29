"""Optimizers: AdamW everywhere, or Muon for the blocks' weight matrices and AdamW for the rest.

Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/) replaces each hidden
weight matrix's momentum update by the nearest semi-orthogonal matrix (a few Newton–Schulz
iterations), so every direction of the matrix moves by the same amount. It is meant only for the
2-D weights *inside* the blocks; embeddings, the output head, LayerNorm gains and biases stay on
AdamW, and the training loop sees the two optimizers as one (:class:`MuonAdamW`).

Why not :class:`torch.optim.Muon`: it runs Newton–Schulz in bfloat16, which CPUs without native
bfloat16 emulate; measured on a 2-core AMD EPYC (AVX2), one orthogonalisation of a 384 × 128
matrix took 80 ms in bfloat16 and 8 ms in float32 (``benchmarks/README.md``). :class:`Muon` here
is the same algorithm in float32, and it orthogonalises the query, key and value blocks of the
fused ``c_attn`` weight separately (they are three matrices that happen to be stored together).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

OPTIMIZERS = ("adamw", "muon")


def muon_param_names(model: nn.Module) -> list[str]:
    """Names of the parameters Muon updates: 2-D weights inside the transformer blocks."""
    return [n for n, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and ".h." in f".{n}" and not _is_embedding(model, n)]


def qkv_splits(model: nn.Module) -> dict[torch.Tensor, list[int]]:
    """Each block's fused ``c_attn`` weight → the row counts of its query, key and value matrices."""
    out = {}
    for name, module in model.named_modules():
        if name.endswith(".attn") and hasattr(module, "c_attn"):
            w = module.c_attn.weight
            c = w.size(1)
            kv = (w.size(0) - c) // 2  # = c, unless keys/values have fewer heads than queries
            out[w] = [w.size(0) - 2 * kv, kv, kv]
    return out


def _is_embedding(model: nn.Module, name: str) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(module, nn.Embedding)


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan et al.: a quintic that pushes singular values toward 1


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U Vᵀ for g = U S Vᵀ (singular values mapped into about [0.7, 1.2]): Newton–Schulz.

    Each step maps X ↦ aX + b(XXᵀ)X + c(XXᵀ)²X; working on the wide orientation keeps XXᵀ small.
    """
    a, b, c = NS_COEFFICIENTS
    x = g / (g.norm() + eps)  # spectral norm <= Frobenius norm = 1, inside the iteration's basin
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T  # (rows, rows), the smaller side
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum, then orthogonalise the update: W ← W − lr·√max(1, rows/cols)·NS(g + μ·m), float32.

    ``splits`` maps a parameter to row sizes (e.g. a fused Q/K/V weight to (C, C, C)): each block
    of rows is orthogonalised, and scaled, as its own matrix. Decoupled weight decay as AdamW's.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 0.02, momentum: float = 0.95,
                 weight_decay: float = 0.0, ns_steps: int = 5,
                 splits: dict[torch.Tensor, list[int]] | None = None) -> None:
        params = list(params)
        bad = [tuple(p.shape) for p in params if p.dim() != 2]
        if bad:
            raise ValueError(f"Muon updates 2-D weight matrices only, got shapes {bad}; give the rest to AdamW")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, ns_steps=ns_steps))
        self._splits = {id(p): list(s) for p, s in (splits or {}).items()}

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("Muon.step does not take a closure")
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(p.grad)  # m ← μm + g
                update = p.grad.add(buf, alpha=mu)  # Nesterov: g + μm
                if group["weight_decay"]:
                    p.mul_(1 - lr * group["weight_decay"])
                r0 = 0
                for n in self._splits.get(id(p), [p.size(0)]):  # rows r0 .. r0+n-1 are one matrix
                    o = orthogonalize(update.narrow(0, r0, n), group["ns_steps"])
                    p.narrow(0, r0, n).add_(o, alpha=-lr * max(1.0, n / p.size(1)) ** 0.5)
                    r0 += n


class MuonAdamW:
    """Muon on some parameter groups, AdamW on the others, stepped together.

    It behaves like one optimizer to the training loop: ``param_groups`` lists every group (each
    carries ``lr_scale``: a schedule sets ``group["lr"] = lr * group["lr_scale"]``),
    ``state_dict()`` has the single-optimizer layout (parameters numbered Muon's first), and
    ``load_state_dict`` reverses it.
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW) -> None:
        self.optimizers = [muon, adamw]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {p: s for o in self.optimizers for p, s in o.state.items()}

    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW.step does not take a closure")
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        state, groups, offset = {}, [], 0
        for o in self.optimizers:
            sd = o.state_dict()
            state.update({i + offset: s for i, s in sd["state"].items()})
            groups += [{**g, "params": [i + offset for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in sd["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        groups, offset = list(sd["param_groups"]), 0
        for o in self.optimizers:
            mine, groups = groups[:len(o.param_groups)], groups[len(o.param_groups):]
            n = sum(len(g["params"]) for g in mine)
            o.load_state_dict({
                "state": {int(i) - offset: s for i, s in sd["state"].items() if offset <= int(i) < offset + n},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in mine]})
            offset += n
        if groups:
            raise ValueError(f"optimizer state has {len(sd['param_groups'])} parameter groups, expected "
                             f"{sum(len(o.param_groups) for o in self.optimizers)}")


def build_optimizer(model: nn.Module, *, name: str, lr: float, weight_decay: float, betas: tuple[float, float],
                    fused: bool, muon_lr: float = 0.02, muon_momentum: float = 0.95,
                    ) -> torch.optim.AdamW | MuonAdamW:
    """AdamW (weight decay on tensors with dim >= 2 only), or Muon for the blocks' matrices + AdamW.

    With ``name="muon"``: Muon (Nesterov momentum ``muon_momentum``, learning rate ``muon_lr``,
    Keller Jordan's shape scaling √max(1, rows/cols), no weight decay, as in his original) for the
    2-D weights inside the blocks; AdamW at ``lr`` for embeddings, the head, gains and biases
    (``weight_decay`` on the embeddings). Trainable
    parameters only; a tied weight appears once.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # dedups tied weights
    muon_names = set(muon_param_names(model)) if name == "muon" else set()
    muon = [p for n, p in named if n in muon_names]
    rest = [(n, p) for n, p in named if n not in muon_names]
    decay = [p for _, p in rest if p.dim() >= 2]
    no_decay = [p for _, p in rest if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    adamw = torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused or None, foreach=None if fused else True)
    if name == "adamw":
        return adamw
    m = Muon(muon, lr=muon_lr, momentum=muon_momentum, weight_decay=0.0, splits=qkv_splits(model))
    for g in m.param_groups:
        g["lr_scale"] = muon_lr / lr if lr > 0 else 0.0
    return MuonAdamW(m, adamw)


def set_lr(optimizer: torch.optim.Optimizer | MuonAdamW, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale`` (1 when absent)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
