"""Checks for the PyTorch primer (notebook ``00b_pytorch_primer``; its exercises are 00.1-00.3).

Each check calls the learner's function on fresh inputs drawn from a private generator (the
notebook's own random state is untouched), compares it with an independent computation (autograd,
an explicit loop, a direct evaluation of the layers), and, when the answer is wrong, tries the
usual mistakes one by one to say which one it is.
"""

from __future__ import annotations

import contextlib
import dis
import re
from typing import Callable

import torch
from torch import nn

from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_softplus_grad", "check_pairwise_sq_dists", "check_layer_output", "CheckFailed"]


def _call(fn: Callable, *args, what: str = "your function", no_autograd: bool = False):
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            with torch.inference_mode() if no_autograd else contextlib.nullcontext():
                out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            if no_autograd and "grad" in str(e):
                fail(f"{what} raised {type(e).__name__}: {e}. The check runs it with autograd switched off "
                     "(torch.inference_mode()): the exercise asks for the formula, derived by hand")
            fail(f"{what} raised {type(e).__name__}: {e}")
    return out


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4))


def _tensor(out, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        fail(f"{what} should return a tensor, got {type(out).__name__}")
    return out.detach()


# ---------------------------------------------------------------- 00.1 a gradient by hand

@forbids('torch.autograd.grad', 'torch.autograd.backward', 'torch.func.grad', 'torch.func.vjp')
def check_softplus_grad(fn: Callable) -> None:
    """Check ``fn(x) -> g``: the gradient of f(x) = Σ_i log(1 + e^{x_i}) with respect to x, written
    as a formula (g_i = σ(x_i)), compared with what autograd computes on the same x. ``fn`` runs
    under ``torch.inference_mode()``, where autograd records nothing, so it cannot call
    ``.backward()`` on its way to the answer."""
    g = torch.Generator().manual_seed(seeded(5))
    x = torch.cat([torch.randn(7, generator=g) * 3, torch.tensor([0.0, 100.0, -100.0])])
    if is_hidden():  # other shapes (a vector, a matrix, a leading 1), other large values of both signs
        r = draw(5)
        shape = r.choice([(r.randint(4, 30),), (r.randint(2, 5), r.randint(2, 6)), (1, r.randint(4, 6))])
        x = torch.randn(shape, generator=g) * r.uniform(0.5, 6)
        flat = x.view(-1)
        i, j, k = r.sample(range(flat.numel()), 3)  # e^x overflows float32 from x ≈ 88.7 on
        flat[i], flat[j], flat[k] = r.uniform(90, 500), -r.uniform(90, 500), r.uniform(-2, 2)
    xr = x.clone().double().requires_grad_(True)
    torch.nn.functional.softplus(xr).sum().backward()
    ref = xr.grad.float()
    got = _tensor(_call(fn, x.clone(), what="your softplus_grad", no_autograd=True), "softplus_grad")
    if _same(got, ref):
        passed("your softplus_grad, run with autograd switched off (torch.inference_mode), equals "
               "autograd's gradient of Σ log(1 + e^x), large |x| included")
        return
    if got.numel() == 1 and x.numel() > 1:
        fail("you returned one number; the gradient has one entry per element of x (the same shape as x)")
    if got.shape != x.shape:
        fail(f"the gradient has shape {tuple(got.shape)}, expected {tuple(x.shape)}: the shape of x")
    small = x.abs() < 20  # where e^x and e^-x are both finite: the formula shows, not its overflow
    bad = bool(torch.isnan(got).any()) or bool(torch.isinf(got).any())
    if _same(got[small], ref[small]):
        if bad:
            fail("your gradient has nan or inf where |x| is large: e^x overflows float32 from x ≈ 88.7 on. "
                 "Write σ(x) = 1 / (1 + e^(-x)), or use torch.sigmoid(x)")
        fail("your gradient is right for moderate x but wrong where |x| is large: there σ(x) is 1 (x ≫ 0) "
             "or 0 (x ≪ 0)")
    for variant, message in [
        (torch.nn.functional.softplus(x), "you returned f's terms log(1 + e^x) themselves; differentiate them"),
        (torch.exp(x), "you differentiated only e^x; the chain rule through log(u) adds the factor 1/u = 1/(1 + e^x)"),
        (torch.sigmoid(-x), "the sign is flipped: d/dx log(1 + e^x) = e^x / (1 + e^x) = σ(x), "
                            "not σ(-x) = 1 / (1 + e^x) = e^(-x) / (1 + e^(-x))"),
        (torch.ones_like(x), "the gradient is not 1 everywhere: only for large x; near 0 it is σ(0) = 0.5"),
    ]:
        if _same(got[small], variant[small]):
            fail(message)
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


def _has_loop(fn: Callable) -> bool | None:
    """Whether ``fn``'s own code (nested functions and comprehensions included, not the functions
    it calls) has a Python loop: a ``for`` (FOR_ITER) or a jump backwards (``while``). None when
    ``fn`` has no Python code to read (a builtin, or the grader's stand-in for the answer)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    todo = [code]
    while todo:
        c = todo.pop()
        if any(i.opname == "FOR_ITER" or "JUMP_BACKWARD" in i.opname for i in dis.get_instructions(c)):
            return True
        todo += [k for k in c.co_consts if hasattr(k, "co_code")]
    return False


@forbids('torch.cdist')
def check_pairwise_sq_dists(fn: Callable) -> None:
    """Check ``fn(A, B) -> D``: A (N, d), B (M, d), D (N, M) with D[i, j] = ||A[i] - B[j]||², and
    that ``fn``'s own code has no Python loop (the exercise asks for broadcasting). The grader
    calls the answer in another process, where its code cannot be read: there only the values count."""
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
    loop = _has_loop(fn)
    if loop:
        fail("your distances are right, but your function has a Python loop (for, while or a comprehension): "
             "the exercise asks for broadcasting instead, with no loop (section 2's table)")
    passed("pairwise squared distances match the definition, computed pair by pair, for every shape tried"
           + ("" if loop is None else ", and your function has no Python loop"))


# ---------------------------------------------------------------- 00.3 forward hooks

def _hooks_left(model: nn.Module) -> int:
    """Forward hooks registered on ``model`` or any of its sub-modules, or globally."""
    return len(nn.modules.module._global_forward_hooks) + sum(len(m._forward_hooks) for m in model.modules())


class _Fails(nn.Module):
    """A layer that raises when it runs (see :class:`_LayerFailed`)."""


class _LayerFailed(RuntimeError):
    """Raised by a :class:`_Probe` at its :class:`_Fails` layer. Its message, read after the
    learner's function has returned (so after any ``finally:`` ran), counts the hooks still on
    the model: the grader sees only this message when the call runs in its worker process."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def __str__(self) -> str:
        return f"a later layer failed on purpose; forward hooks left: {_hooks_left(self.model)}"


class _Probe(nn.Sequential):
    """The exercise's model: an ``nn.Sequential`` whose forward adds each layer's output to its
    input where their shapes match (a residual stream, as in a GPT), so that the value the model
    passes on is not the layer's own output, and neither slicing the model nor re-running its
    layers one after the other gives that output. It notes, in buffers (which travel back from the
    grader's worker with the state dict), whether each layer had a forward hook while it ran
    (``hooked``), and how many forward hooks are left when its state is read (``left``)."""

    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)
        self.register_buffer("hooked", torch.zeros(len(self)))
        self.register_buffer("left", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self):
            if isinstance(layer, _Fails):
                raise _LayerFailed(self)
            self.hooked[i] += float(bool(layer._forward_hooks or nn.modules.module._global_forward_hooks))
            y = layer(x)
            x = x + y if y.shape == x.shape else y
        return x

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.left.fill_(_hooks_left(self))
        super()._save_to_state_dict(destination, prefix, keep_vars)


def _mlp(d_in: int, hidden: int, d_out: int, seed: int, fails: bool = False) -> _Probe:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d_out)]
        return _Probe(*layers[:3], _Fails()) if fails else _Probe(*layers)


_FINALLY = ("call h.remove() in a finally: block (try: model(x) finally: h.remove()), so that an error "
            "inside model(x) cannot leave it behind")


def _check_error_path(fn: Callable, model: _Probe, name: str, x: torch.Tensor) -> None:
    """``model(x)`` raises after layer ``name``: whatever ``fn`` does, no hook may stay behind."""
    try:
        with torch.random.fork_rng(devices=[]):
            fn(model, name, x)
        left = max(_hooks_left(model), int(model.left))
    except CheckFailed:
        raise
    except Exception as e:  # noqa: BLE001 - the expected error, here or re-created by the grader
        if type(e).__name__ != _LayerFailed.__name__:
            fail(f"your layer_output raised {type(e).__name__}: {e}")
        found = re.search(r"hooks left: (\d+)", str(e))
        left = max(_hooks_left(model), int(found[1]) if found else 0)
    if left:
        fail(f"when model(x) raised an error after layer {name!r}, your hook stayed registered: {_FINALLY}")


def check_layer_output(fn: Callable) -> None:
    """Check ``fn(model, name, x) -> tensor``: the output of the submodule ``name`` while
    ``model(x)`` runs, read with a forward hook that is removed afterwards.

    Both the visible and the hidden cases end with a model that raises after the hooked layer:
    the hook must come off all the same (a ``finally:``). The hidden cases also ask that the layer
    had a hook while it ran; the visible ones do not, so that an answer hard-coded to their inputs
    still passes them (tests/test_checks_hidden.py relies on that) and fails the hidden ones."""
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
        # the reference: the layers applied one by one as the model's forward does, no hooks
        with torch.no_grad():
            h, outs, ins, stream = x, {}, {}, {}
            for n, layer in model.named_children():
                ins[n] = h
                outs[n] = layer(h)
                h = stream[n] = h + outs[n] if outs[n].shape == h.shape else outs[n]
        got = _call(fn, model, name, x.clone(), what="your layer_output")
        if isinstance(got, (tuple, list)) and len(got) == 1 and isinstance(got[0], torch.Tensor):
            fail("you returned the hook's `inputs` tuple; the hook's third argument is the layer's output")
        got = _tensor(got, "layer_output")
        if max(_hooks_left(model), int(model.left)):
            fail("your hook is still registered after the call: keep the handle h = register_forward_hook(...) "
                 f"and {_FINALLY}")
        if _same(got, outs[name]):
            if is_hidden() and not model.hooked[int(name)]:
                fail(f"layer {name!r} had no forward hook while model(x) ran: you computed its output another "
                     "way (slicing the model, or re-running its layers); register a hook on "
                     "model.get_submodule(name) and keep the output it is given")
            continue
        if _same(got, stream[name]):
            last = "the model's final output, " if stream[name] is h else ""
            fail(f"for layer {name!r} you returned {last}the value the model passes on after the layer: its output "
                 "plus its input (these models add them, like a GPT's residual stream), which is also what slicing "
                 "the model gives; a forward hook on model.get_submodule(name) sees the layer's own output")
        if _same(got, h):
            fail(f"for layer {name!r} you returned the model's final output; return what the hook saw: "
                 "the output of model.get_submodule(name)")
        if _same(got, ins[name]):
            fail(f"for layer {name!r} you returned the layer's input; the hook is called as "
                 "hook(module, inputs, output): keep `output`")
        for other, out in outs.items():
            if other != name and _same(got, out):
                fail(f"you captured layer {other!r} instead of {name!r}: hook model.get_submodule(name)")
        fail(f"for layer {name!r} your tensor differs from the layer's output during model(x)")
    # a model that raises after the hooked layer: the hook must still come off
    d_in, hidden, name = (r.randint(2, 9), r.randint(3, 12), str(r.randint(0, 2))) if is_hidden() else (6, 8, "1")
    model = _mlp(d_in, hidden, 1, seeded(29), fails=True)
    _check_error_path(fn, model, name, torch.randn(2, d_in, generator=g))
    passed("your tensor is the layer's own output during model(x) (not the sum the model passes on), "
           "and no hook was left behind, even when model(x) raised an error")
