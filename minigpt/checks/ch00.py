"""Checks for the PyTorch primer (notebook ``00b_pytorch_primer``; its exercises are 00.1-00.3).

Each check calls the learner's function on fresh inputs drawn from a private generator (the
notebook's own random state is untouched), compares it with an independent computation (autograd,
an explicit loop, a direct evaluation of the layers), and, when the answer is wrong, tries the
usual mistakes one by one to say which one it is.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_softplus_grad", "check_pairwise_sq_dists", "check_layer_output", "CheckFailed"]


def _call(fn: Callable, *args, what: str = "your function"):
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            fail(f"{what} raised {type(e).__name__}: {e}")
    return out


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4))


def _tensor(out, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        fail(f"{what} should return a tensor, got {type(out).__name__}")
    return out.detach()


# ---------------------------------------------------------------- 00.1 a gradient by hand

@forbids('torch.autograd.grad', 'torch.autograd.backward')
def check_softplus_grad(fn: Callable) -> None:
    """Check ``fn(x) -> g``: the gradient of f(x) = Σ_i log(1 + e^{x_i}) with respect to x, written
    as a formula (g_i = σ(x_i)), compared with what autograd computes on the same x."""
    g = torch.Generator().manual_seed(seeded(5))
    x = torch.cat([torch.randn(7, generator=g) * 3, torch.tensor([0.0, 100.0, -100.0])])
    if is_hidden():  # other shapes (a vector, a matrix, a leading 1), other large values of both signs
        r = draw(5)
        shape = r.choice([(r.randint(2, 30),), (r.randint(2, 5), r.randint(1, 6)), (1, r.randint(2, 6))])
        x = torch.randn(shape, generator=g) * r.uniform(0.5, 6)
        flat = x.view(-1)
        i, j = r.sample(range(flat.numel()), 2)  # e^x overflows float32 from x = 89 on
        flat[i], flat[j] = r.uniform(90, 500), -r.uniform(90, 500)
    xr = x.clone().double().requires_grad_(True)
    torch.nn.functional.softplus(xr).sum().backward()
    ref = xr.grad.float()
    got = _tensor(_call(fn, x.clone(), what="your softplus_grad"), "softplus_grad")
    if _same(got, ref):
        passed("your formula equals autograd's gradient of Σ log(1 + e^x), large |x| included")
        return
    if got.numel() == 1 and x.numel() > 1:
        fail("you returned one number; the gradient has one entry per element of x (the same shape as x)")
    if got.shape != x.shape:
        fail(f"the gradient has shape {tuple(got.shape)}, expected {tuple(x.shape)}: the shape of x")
    for variant, message in [
        (torch.nn.functional.softplus(x), "you returned f's terms log(1 + e^x) themselves; differentiate them"),
        (torch.exp(x), "you differentiated only e^x; the chain rule through log(u) adds the factor 1/u = 1/(1 + e^x)"),
        (torch.sigmoid(-x), "the sign is flipped: d/dx log(1 + e^x) = e^x / (1 + e^x) = σ(x), not σ(-x)"),
        (1 / (1 + torch.exp(x)), "you wrote 1/(1 + e^x) = σ(-x); the numerator is e^x: σ(x) = e^x / (1 + e^x)"),
        (torch.ones_like(x), "the gradient is not 1 everywhere: only for large x; near 0 it is σ(0) = 0.5"),
    ]:
        if _same(got, variant):
            fail(message)
    if bool(torch.isnan(got).any()) or bool(torch.isinf(got).any()):
        fail("your gradient has nan or inf where |x| is large: e^x overflows for x = 100 in float32. "
             "Write σ(x) = 1 / (1 + e^(-x)), or use torch.sigmoid(x)")
    fail("your gradient differs from autograd's: d/dx log(1 + e^x) = e^x / (1 + e^x), the sigmoid σ(x)")


# ---------------------------------------------------------------- 00.2 broadcasting

def _loop_dists(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """The definition, one pair at a time (float64)."""
    A, B = A.double(), B.double()
    out = torch.empty(A.shape[0], B.shape[0], dtype=torch.float64)
    for i in range(A.shape[0]):
        for j in range(B.shape[0]):
            out[i, j] = ((A[i] - B[j]) ** 2).sum()
    return out


@forbids('torch.cdist')
def check_pairwise_sq_dists(fn: Callable) -> None:
    """Check ``fn(A, B) -> D``: A (N, d), B (M, d), D (N, M) with D[i, j] = ||A[i] - B[j]||²."""
    g = torch.Generator().manual_seed(seeded(11))
    sizes = [(5, 3, 4), (4, 4, 2)]  # (N, M, d): N != M first, so a transposed result shows its shape
    if is_hidden():  # other sizes: one row, d = 1, N = M, long rows
        r = draw(11)
        sizes = [(r.randint(2, 9), r.randint(2, 9), r.randint(1, 12)), (1, r.randint(2, 6), r.randint(1, 5)),
                 (r.randint(2, 6), r.randint(2, 6), 1)]
        n = r.randint(2, 7)
        sizes.append((n, n, r.randint(2, 6)))
    for N, M, d in sizes:
        A = torch.randn(N, d, generator=g)
        B = torch.randn(M, d, generator=g) + 0.5
        ref = _loop_dists(A, B)
        got = _tensor(_call(fn, A.clone(), B.clone(), what="your pairwise_sq_dists"), "pairwise_sq_dists")
        if _same(got, ref, atol=1e-4):
            continue
        where = f"for A of shape {(N, d)} and B of shape {(M, d)}"
        if got.shape == (M, N) and _same(got.T, ref, atol=1e-4):
            fail(f"{where} your result is transposed: row i should belong to A[i], so A[:, None, :] - B[None, :, :]")
        if got.shape == (M, N) and N != M:
            fail(f"{where} your result has shape {(M, N)}, expected {(N, M)}: rows for A, columns for B")
        if got.shape == (N, M, d):
            fail(f"{where} your result has shape {(N, M, d)}: sum the squared differences over the last dim")
        if got.shape != (N, M):
            fail(f"{where} your result has shape {tuple(got.shape)}, expected {(N, M)}: broadcast "
                 "A[:, None, :] (N, 1, d) against B[None, :, :] (1, M, d), then sum over d")
        if _same(got, ref.sqrt(), atol=1e-4):
            fail(f"{where} you returned the distances ||A[i] - B[j]||; the exercise asks for their squares (no sqrt)")
        Ad, Bd = A.double(), B.double()
        if _same(got, ((Ad[:, None, :] - Bd[None, :, :]).abs()).sum(-1), atol=1e-4):
            fail(f"{where} you summed absolute differences; square them: ((A[:, None] - B[None]) ** 2).sum(-1)")
        if _same(got, (Ad ** 2).sum(1)[:, None] + (Bd ** 2).sum(1)[None, :] - Ad @ Bd.T, atol=1e-4):
            fail(f"{where} ||a - b||² = ||a||² - 2 a·b + ||b||²: you dropped the factor 2 of the cross term")
        if _same(got, (Ad ** 2).sum(1)[:, None] + (Bd ** 2).sum(1)[None, :] + 2 * Ad @ Bd.T, atol=1e-4):
            fail(f"{where} the cross term has a minus sign: ||a - b||² = ||a||² - 2 a·b + ||b||²")
        fail(f"{where} your distances differ from the definition D[i, j] = ((A[i] - B[j]) ** 2).sum()")
    passed("pairwise squared distances match the double loop, without loops of your own")


# ---------------------------------------------------------------- 00.3 forward hooks

def _mlp(d_in: int, hidden: int, d_out: int, seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, d_out))


def check_layer_output(fn: Callable) -> None:
    """Check ``fn(model, name, x) -> tensor``: the output of the submodule ``name`` while
    ``model(x)`` runs, read with a forward hook that is removed afterwards."""
    g = torch.Generator().manual_seed(seeded(17))
    cases = [((6, 8, 3), 4, "1"), ((6, 8, 3), 2, "2")]  # ((d_in, hidden, d_out), batch, layer name)
    if is_hidden():  # other widths and batch sizes, other layers (the first and the last included)
        r = draw(17)
        names = ["0", "1", "2", "3", "4"]
        r.shuffle(names)
        cases = [((r.randint(2, 9), r.randint(3, 12), r.randint(1, 6)), r.randint(1, 5), n) for n in names[:3]]
    for (d_in, hidden, d_out), batch, name in cases:
        model = _mlp(d_in, hidden, d_out, seeded(19) + batch)
        x = torch.randn(batch, d_in, generator=g)
        # the reference: the layers applied one by one, no hooks
        with torch.no_grad():
            h, outs, ins = x, {}, {}
            for n, layer in model.named_children():
                ins[n] = h
                h = layer(h)
                outs[n] = h
        got = _call(fn, model, name, x.clone(), what="your layer_output")
        if isinstance(got, (tuple, list)) and len(got) == 1 and isinstance(got[0], torch.Tensor):
            fail("you returned the hook's `inputs` tuple; the hook's third argument is the layer's output")
        got = _tensor(got, "layer_output")
        if model.get_submodule(name)._forward_hooks or model._forward_hooks:
            fail("your hook is still registered after the call: keep the handle h = register_forward_hook(...) "
                 "and call h.remove() (in a finally: block, so an error cannot leave it behind)")
        if _same(got, outs[name]):
            continue
        if name != "4" and _same(got, h):
            fail(f"for layer {name!r} you returned the model's final output; return what the hook saw: "
                 "the output of model.get_submodule(name)")
        if _same(got, ins[name]) and not _same(ins[name], outs[name]):
            fail(f"for layer {name!r} you returned the layer's input; the hook is called as "
                 "hook(module, inputs, output): keep `output`")
        for other, out in outs.items():
            if other != name and _same(got, out):
                fail(f"you captured layer {other!r} instead of {name!r}: hook model.get_submodule(name)")
        fail(f"for layer {name!r} your tensor differs from the layer's output during model(x)")
    passed("the hook read each layer's output during model(x) and was removed afterwards")
