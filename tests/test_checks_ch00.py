"""The exercise checks of the PyTorch primer (notebook 00b, exercises 00.1-00.3): each reference
solution passes, each common mistake, planted in a small wrong implementation, fails with the
message that names it; and the grader finds the primer as the answer key of chapter 00."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minigpt.checks import ch00, hidden_inputs
from check_helpers import fails_with, passes


# ---------------------------------------------------------------- 00.1

def test_softplus_grad_accepts_the_stable_formulas(capsys):
    passes(ch00.check_softplus_grad, torch.sigmoid, capsys)
    passes(ch00.check_softplus_grad, lambda x: 1 / (1 + torch.exp(-x)), capsys)
    passes(ch00.check_softplus_grad, lambda x: torch.exp(-F.softplus(-x)), capsys)


def test_softplus_grad_names_the_mistakes(capsys):
    check = ch00.check_softplus_grad
    fails_with(check, lambda x: torch.exp(x) / (1 + torch.exp(x)), "nan or inf", "1 / (1 + e^(-x))")
    fails_with(check, F.softplus, "differentiate them")
    fails_with(check, torch.exp, "chain rule")
    fails_with(check, lambda x: torch.sigmoid(-x), "sign is flipped")
    fails_with(check, torch.ones_like, "not 1 everywhere")
    fails_with(check, lambda x: torch.sigmoid(x).sum(), "one number")
    fails_with(check, lambda x: torch.sigmoid(x).reshape(-1)[:-1], "shape")
    fails_with(check, lambda x: 2 * torch.sigmoid(x), "differs from autograd")
    fails_with(check, lambda x: [1.0], "return a tensor")
    fails_with(check, lambda x: 1 / 0, "ZeroDivisionError")


def test_softplus_grad_names_mistakes_by_the_moderate_entries_before_overflow(capsys):
    # each of these also overflows at |x| = 100; the formula is judged where |x| < 20 first
    check = ch00.check_softplus_grad
    fails_with(check, lambda x: torch.log(1 + torch.exp(x)), "differentiate them")
    fails_with(check, lambda x: torch.exp(-x) / (1 + torch.exp(-x)), "sign is flipped")
    fails_with(check, lambda x: 1 / (1 + torch.exp(x)), "sign is flipped")
    fails_with(check, lambda x: torch.where(x.abs() < 50, torch.sigmoid(x), 0.5), "right for moderate x")


def test_softplus_grad_runs_the_answer_without_autograd(capsys):
    def by_backward(x):
        x = x.clone().requires_grad_(True)
        F.softplus(x).sum().backward()
        return x.grad

    def by_grad(x):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(F.softplus(x).sum(), x)[0]

    fails_with(ch00.check_softplus_grad, by_backward, "autograd switched off", "by hand")
    fails_with(ch00.check_softplus_grad, by_grad, "autograd switched off", "by hand")
    assert set(ch00.check_softplus_grad.forbidden) == {"torch.autograd.grad", "torch.autograd.backward",
                                                        "torch.func.grad", "torch.func.vjp"}


# ---------------------------------------------------------------- 00.2

def good_dists(A, B):
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)


def test_pairwise_sq_dists_accepts_broadcasting_and_the_expansion(capsys):
    ch00.check_pairwise_sq_dists(good_dists)
    assert "your function has no Python loop" in capsys.readouterr().out
    passes(ch00.check_pairwise_sq_dists,
           lambda A, B: (A ** 2).sum(1)[:, None] - 2 * A @ B.T + (B ** 2).sum(1)[None, :], capsys)
    assert ch00.check_pairwise_sq_dists.forbidden == ("torch.cdist",)


def test_pairwise_sq_dists_fails_an_answer_that_loops(capsys):
    def rows(A, B):
        return torch.stack([((A - b) ** 2).sum(-1) for b in B], dim=1)  # a comprehension

    def nested(A, B):
        D = torch.empty(len(A), len(B))
        i = 0
        while i < len(A):
            D[i] = ((A[i] - B) ** 2).sum(-1)
            i += 1
        return D

    def pairs(A, B):  # the definition itself, pair by pair
        return torch.tensor([[((a - b) ** 2).sum().item() for b in B] for a in A])

    for fn in (rows, nested, pairs):
        fails_with(ch00.check_pairwise_sq_dists, fn, "your distances are right", "Python loop", "broadcasting")
    assert capsys.readouterr().out == ""


def test_pairwise_sq_dists_names_the_mistakes(capsys):
    check = ch00.check_pairwise_sq_dists
    fails_with(check, lambda A, B: good_dists(A, B).sqrt(), "no sqrt")
    fails_with(check, lambda A, B: good_dists(A, B).T, "transposed")
    fails_with(check, lambda A, B: (A[:, None, :] - B[None, :, :]) ** 2, "sum the squared differences")
    fails_with(check, lambda A, B: (A[:, None, :] - B[None, :, :]).abs().sum(-1), "absolute differences")
    fails_with(check, lambda A, B: (A ** 2).sum(1)[:, None] - A @ B.T + (B ** 2).sum(1)[None, :], "factor 2")
    fails_with(check, lambda A, B: (A ** 2).sum(1)[:, None] + 2 * A @ B.T + (B ** 2).sum(1)[None, :], "minus sign")
    fails_with(check, lambda A, B: ((A - B) ** 2).sum(-1), "raised RuntimeError")
    fails_with(check, lambda A, B: ((A[:, None, :] - B[None, :, :]) ** 2).sum((0, -1)), "shape")
    fails_with(check, lambda A, B: good_dists(A, B) + 1, "differ from the definition")


# ---------------------------------------------------------------- 00.3

def hooked(model, name, x, keep="output", remove=True, layer=None, finally_=True):
    seen = []
    handle = model.get_submodule(layer or name).register_forward_hook(
        lambda m, inputs, output: seen.append(output if keep == "output" else inputs))
    if finally_:
        try:
            out = model(x)
        finally:
            if remove:
                handle.remove()
    else:
        out = model(x)
        if remove:
            handle.remove()
    return {"output": seen[0] if seen else None, "inputs": seen[0] if seen else None, "model": out}[keep]


def test_layer_output_accepts_a_removed_hook(capsys):
    passes(ch00.check_layer_output, hooked, capsys)


def test_layer_output_names_the_mistakes(capsys):
    check = ch00.check_layer_output
    fails_with(check, lambda m, n, x: hooked(m, n, x, remove=False), "still registered", "remove()")
    # visible too: without a finally, the model that raises leaves the hook behind
    fails_with(check, lambda m, n, x: hooked(m, n, x, finally_=False), "raised an error", "finally")
    fails_with(check, lambda m, n, x: hooked(m, n, x, keep="inputs"), "`inputs` tuple")
    fails_with(check, lambda m, n, x: hooked(m, n, x, keep="inputs")[0], "layer's input")
    fails_with(check, lambda m, n, x: hooked(m, n, x, keep="model"), "final output")
    fails_with(check, lambda m, n, x: hooked(m, n, x, layer=str((int(n) + 1) % 4)), "instead of")  # another, never the last
    fails_with(check, lambda m, n, x: hooked(m, n, x) * 2, "differs from the layer's output")


def test_layer_output_needs_a_hook_not_slicing(capsys):
    # visible: the residual sum gives it away; hidden, for a layer without a residual, the missing hook does
    fails_with(ch00.check_layer_output, lambda m, n, x: m[: int(n) + 1](x), "slicing")


def test_layer_output_hidden_cases_ask_for_a_hook_and_a_finally(capsys):
    # (the visible cases ask for the finally as well: test_layer_output_names_the_mistakes)
    def replayed(m, n, x):  # the model's forward, re-run by hand: right values, no hook
        for layer in list(m)[: int(n)]:
            y = layer(x)
            x = x + y if y.shape == x.shape else y
        return m[int(n)](x)

    handles = []

    def global_hook(m, n, x):  # a hook on every module (register_module_forward_hook), left behind
        seen = {}
        handles.append(torch.nn.modules.module.register_module_forward_hook(
            lambda mod, inputs, output: seen.update(out=output) if mod is m.get_submodule(n) else None))
        m(x)
        return seen["out"]

    check = ch00.check_layer_output
    with hidden_inputs():
        check(hooked)  # the honest answer
        fails_with(check, replayed, "no forward hook", "model.get_submodule(name)")
        fails_with(check, lambda m, n, x: hooked(m, n, x, finally_=False), "raised an error", "finally")
    try:
        fails_with(check, global_hook, "still registered")
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------- the grader finds the primer

def test_the_primer_is_chapter_00s_answer_key(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from minigpt.assignments.grade import NOTEBOOKS, find_source

    primer = NOTEBOOKS / "00b_pytorch_primer.ipynb"
    by_ids = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Exercise 00.2: d\nx = 1")])
    assert find_source(by_ids, tmp_path / "sub.ipynb") == primer  # not 00_setup, which has no exercises
    by_meta = nbformat.v4.new_notebook(metadata={"minigpt": {"assignment": {"source": primer.name}}})
    assert find_source(by_meta, tmp_path / "sub.ipynb") == primer
    ch02 = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Exercise 2.1: a\nx = 1")])
    assert find_source(ch02, tmp_path / "sub.ipynb").name == "02_attention.ipynb"
