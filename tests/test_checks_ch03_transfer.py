"""Chapter 03's transfer exercises: each planted mistake fails with the message that names it,
on the visible and on the hidden inputs, and the honest answer passes."""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

from minigpt.checks import CheckFailed, ch03, hidden_inputs


def gelu_grad(x):
    Phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    return Phi + x * torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi)


def rmsnorm(x, g, eps=1e-6):
    return g * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _Phi(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


def _tanh_gelu_grad(x):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)[0].detach()


GELU_GRAD_MISTAKES = [
    (lambda x: x * _Phi(x), "GELU(x) itself"),
    (_Phi, "product rule gives two terms"),
    (lambda x: x * torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi), "kept only x·φ(x)"),
    (lambda x: _Phi(x) + torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi), "not Φ'(x) alone"),
    (lambda x: _Phi(x) + x * torch.exp(-x**2 / 2), "1/√(2π)"),
    (lambda x: _Phi(x) + x * torch.exp(-x**2) / math.sqrt(2 * math.pi), "not exp(-x²)"),
    (lambda x: (x > 0).double(), "ReLU's slope"),
    (_tanh_gelu_grad, "tanh approximation"),
    (lambda x: gelu_grad(x)[..., :-1], "changed the shape"),
]


def _rms(x, g, eps=1e-6, dim=-1, center=False, gain=True, eps_out=False, no_sqrt=False, use_sum=False):
    xc = x - x.mean(-1, keepdim=True) if center else x
    ms = x.pow(2).sum(dim, keepdim=True) if use_sum else x.pow(2).mean(dim, keepdim=True)
    d = ms + eps if no_sqrt else (ms.sqrt() + eps if eps_out else (ms + eps).sqrt())
    return xc / d * (g if gain else 1)


RMS_MISTAKES = [
    (lambda x, g, eps=1e-6: _rms(x, g, eps, center=True), "subtracted the mean"),
    (lambda x, g, eps=1e-6: g * F.layer_norm(x, x.shape[-1:], eps=eps), "that is LayerNorm"),
    (lambda x, g, eps=1e-6: _rms(x, g, eps, use_sum=True), "the length"),
    (lambda x, g, eps=1e-6: g * x / (x.abs().mean(-1, keepdim=True) + eps), "mean of |x|"),
    (lambda x, g, eps=1e-6: _rms(x, g, eps, dim=0), "batch dimension"),
    (lambda x, g, eps=1e-6: _rms(x, g, eps, dim=1), "time dimension"),
    (lambda x, g, eps=1e-6: _rms(x, g, eps, gain=False), "forgot the learned gain"),
    (lambda x, g, eps=1e-6: _rms(x, g, eps, eps_out=True), "inside the square root"),
    (lambda x, g, eps=1e-6: _rms(x, g, eps, no_sqrt=True), "not by the mean square"),
    (lambda x, g, eps=1e-6: rmsnorm(x, g, eps).mean(-1), "keepdim"),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("check, honest, mistakes", [
    (ch03.check_gelu_grad, gelu_grad, GELU_GRAD_MISTAKES),
    (ch03.check_rmsnorm, rmsnorm, RMS_MISTAKES),
], ids=["gelu_grad", "rmsnorm"])
def test_mistakes_are_named_and_honest_answer_passes(check, honest, mistakes, hidden, capsys):
    ctx = hidden_inputs() if hidden else contextlib.nullcontext()
    with ctx:
        check(honest)
        for wrong, message in mistakes:
            with pytest.raises(CheckFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
                check(wrong)
    if not hidden:
        assert capsys.readouterr().out.count("✅") == 1


def test_rmsnorm_eps_matters_on_the_visible_inputs():
    """The near-zero vector makes eps visible: an answer that drops eps fails."""
    with pytest.raises(CheckFailed):
        ch03.check_rmsnorm(lambda x, g, eps=1e-6: g * x / x.pow(2).mean(-1, keepdim=True).sqrt())


def test_forbidden_lists_name_the_packaged_versions():
    assert "torch.autograd.grad" in ch03.check_gelu_grad.forbidden
    assert {"minigpt.norms.RMSNorm.forward", "torch.nn.functional.rms_norm"} <= set(ch03.check_rmsnorm.forbidden)
    assert "minigpt.model.Block.__init__" in ch03.check_param_count.forbidden
