"""The exercise checks of the PyTorch primer (notebook 00b, exercises 00.1-00.3): each reference
solution passes, each common mistake, planted in a small wrong implementation, fails with the
message that names it; and the grader finds the primer as the answer key of chapter 00."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minigpt.checks import CheckFailed, ch00


def fails_with(check, fn, *fragments):
    with pytest.raises(CheckFailed) as info:
        check(fn)
    msg = str(info.value)
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"expected {frag!r} in: {msg}"
    return msg


def passes(check, fn, capsys):
    check(fn)
    out = capsys.readouterr().out
    assert out.startswith("✅"), out


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


def test_softplus_grad_forbids_autograd(capsys):
    assert set(ch00.check_softplus_grad.forbidden) == {"torch.autograd.grad", "torch.autograd.backward"}


# ---------------------------------------------------------------- 00.2

def good_dists(A, B):
    return ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1)


def test_pairwise_sq_dists_accepts_broadcasting_and_the_expansion(capsys):
    passes(ch00.check_pairwise_sq_dists, good_dists, capsys)
    passes(ch00.check_pairwise_sq_dists,
           lambda A, B: (A ** 2).sum(1)[:, None] - 2 * A @ B.T + (B ** 2).sum(1)[None, :], capsys)
    assert ch00.check_pairwise_sq_dists.forbidden == ("torch.cdist",)


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

def hooked(model, name, x, keep="output", remove=True, layer=None):
    seen = []
    handle = model.get_submodule(layer or name).register_forward_hook(
        lambda m, inputs, output: seen.append(output if keep == "output" else inputs))
    out = model(x)
    if remove:
        handle.remove()
    return {"output": seen[0] if seen else None, "inputs": seen[0] if seen else None, "model": out}[keep]


def test_layer_output_accepts_a_removed_hook(capsys):
    passes(ch00.check_layer_output, hooked, capsys)


def test_layer_output_names_the_mistakes(capsys):
    check = ch00.check_layer_output
    fails_with(check, lambda m, n, x: hooked(m, n, x, remove=False), "still registered", "remove()")
    fails_with(check, lambda m, n, x: hooked(m, n, x, keep="inputs"), "`inputs` tuple")
    fails_with(check, lambda m, n, x: hooked(m, n, x, keep="inputs")[0], "layer's input")
    fails_with(check, lambda m, n, x: hooked(m, n, x, keep="model"), "final output")
    fails_with(check, lambda m, n, x: hooked(m, n, x, layer=str((int(n) + 1) % 4)), "instead of")  # another, never the last
    fails_with(check, lambda m, n, x: hooked(m, n, x) * 2, "differs from the layer's output")


def test_checks_do_not_touch_the_global_rng(capsys):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    for check, fn in [(ch00.check_softplus_grad, lambda x: torch.sigmoid(x) + 0 * torch.rand(1)),
                      (ch00.check_pairwise_sq_dists, lambda A, B: good_dists(A, B) + 0 * torch.rand(1)),
                      (ch00.check_layer_output, hooked)]:
        check(fn)
    assert torch.equal(torch.rand(3), expected)


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
