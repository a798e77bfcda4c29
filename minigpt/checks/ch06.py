"""Checks for chapter 06, fine-tuning: SFT loss masks, LoRA's forward pass and initialisation,
and counting LoRA's trainable parameters.

Each check runs the learner's function on fixed inputs, compares it with :mod:`minigpt.finetune`
and, when the answer is wrong, tries the usual mistakes one by one to name the likely one.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..finetune import LoRALinear, add_lora, count_parameters, sft_example
from ..model import GPT
from ..config import GPTConfig
from ..objective import IGNORE_INDEX
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_sft_targets", "check_lora_forward", "check_lora_init", "check_lora_count", "CheckFailed"]


def _call(fn: Callable, *args, what: str = "your function"):
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            return fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            fail(f"{what} raised {type(e).__name__}: {e}")


def _ids(t, what: str) -> list[int]:
    if isinstance(t, torch.Tensor):
        if t.dim() != 1:
            fail(f"{what} should be 1-D (one sequence), got shape {tuple(t.shape)}")
        return [int(v) for v in t.tolist()]
    if isinstance(t, (list, tuple)) and all(isinstance(v, int) for v in t):
        return list(t)
    fail(f"{what} should be a 1-D tensor (or list) of token ids, got {type(t).__name__}")
    raise AssertionError  # unreachable


@forbids('minigpt.finetune.sft.sft_example')
def check_sft_targets(fn: Callable) -> None:
    """Check ``fn(prompt_ids, response_ids) -> (x, y)``: inputs and loss-masked targets."""
    cases = [([5, 6, 7, 8], [20, 21, 22]), ([9], [30, 31]), ([1, 2, 3, 4, 5, 6], [40])]
    if is_hidden():  # other lengths: one-token prompts and responses, long ones
        r = draw(61)

        def ids(n):
            return [r.randint(1, 250) for _ in range(n)]

        cases = [(ids(r.randint(2, 12)), ids(r.randint(2, 9))), (ids(1), ids(r.randint(1, 5))),
                 (ids(r.randint(2, 30)), ids(1)), (ids(2), ids(2))]
    for prompt, response in cases:
        out = _call(fn, list(prompt), list(response), what="your SFT function")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail("return a pair (x, y): the inputs and the targets")
        x, y = _ids(out[0], "x"), _ids(out[1], "y")
        ref_x, ref_y = (t.tolist() for t in sft_example(prompt, response))
        s = prompt + response
        P = len(prompt)
        if x != ref_x:
            if x == s:
                fail("x should drop the last token: x = (prompt + response)[:-1]; the last token is "
                     "only ever a target, never an input")
            fail(f"x should be (prompt + response)[:-1] = {ref_x}, got {x}")
        if y == ref_y:
            continue
        if y == s[1:]:
            fail("no loss mask: the targets of prompt positions must be -100 (IGNORE_INDEX), or the "
                 "model is trained to reproduce the prompt too")
        if len(y) != len(ref_y):
            fail(f"y should have the same length as x ({len(ref_x)}): y = (prompt + response)[1:] with "
                 f"the prompt part masked, got length {len(y)}")
        if set(y) <= set(s[1:]) | {0} and 0 in y and IGNORE_INDEX not in y:
            fail("you masked with 0, which is a real token id; use -100 (IGNORE_INDEX), the value "
                 "cross_entropy skips")
        masked = [i for i, v in enumerate(y) if v == IGNORE_INDEX]
        if masked == list(range(P - 1, len(y))):
            fail("you masked the response and kept the prompt; it is the other way round: the loss "
                 "is on the response tokens only")
        if masked == list(range(P)):
            fail(f"off by one: you masked {P} targets, but y[i] is the token after x[i], so only the "
                 f"first len(prompt) - 1 = {P - 1} targets are prompt tokens; the first response "
                 "token is predicted from the last prompt token and must be scored")
        if masked == list(range(max(P - 2, 0))):
            fail(f"off by one: mask the first len(prompt) - 1 = {P - 1} targets (you masked {P - 2}), "
                 "so the last prompt token is not a target")
        fail(f"for prompt {prompt} and response {response} expected y = {ref_y}, got {y}")
    passed("inputs and masked targets match minigpt.finetune.sft_example: the loss sees only the response")


@forbids('minigpt.finetune.lora.LoRALinear.forward')
def check_lora_forward(fn: Callable) -> None:
    """Check ``fn(x, W, b, A, B, alpha, r)`` = x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ."""
    g = torch.Generator().manual_seed(seeded(6))
    d_in, d_out, r, alpha = 6, 5, 2, 8.0  # alpha / r = 4, so a missing or inverted scale shows
    if is_hidden():
        rr = draw(62)
        d_in, d_out, r = rr.randint(2, 12), rr.randint(2, 12), rr.randint(2, 4)  # r > 1: alpha != alpha / r
        alpha = float(r * rr.choice([2, 3, 0.5, 4]))
    x = torch.randn(3, 4, d_in, generator=g)
    base = torch.nn.Linear(d_in, d_out)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=g))
        base.bias.copy_(torch.randn(d_out, generator=g))
    layer = LoRALinear(base, r=r, alpha=alpha)
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(r, d_in, generator=g))
        layer.lora_B.copy_(torch.randn(d_out, r, generator=g))
    W, b, A, B = (t.detach().clone() for t in (base.weight, base.bias, layer.lora_A, layer.lora_B))
    got = _call(fn, x.clone(), W, b, A, B, alpha, r, what="your LoRA forward")
    if not isinstance(got, torch.Tensor):
        fail(f"return a tensor, got {type(got).__name__}")
    ref = layer(x).detach()
    if got.shape != ref.shape:
        fail(f"the output has shape {tuple(got.shape)}, expected {tuple(ref.shape)} (…, out_features)")
    close = lambda a: torch.allclose(got.detach(), a, atol=1e-4, rtol=1e-4)  # noqa: E731
    if close(ref):
        passed("your LoRA layer matches minigpt.finetune.LoRALinear")
        return
    plain = x @ W.T + b
    low = x @ A.T @ B.T
    if close(plain + low):
        fail("you forgot the scaling: multiply the low-rank term by alpha / r")
    if close(plain + low * r / alpha):
        fail("the scaling is inverted: it is alpha / r, not r / alpha")
    if close(plain + low * alpha):
        fail("the scaling is alpha / r, not alpha")
    if close(plain):
        fail("your output ignores the adapter: add (alpha / r) · x Aᵀ Bᵀ to the frozen layer's output")
    if close(low * alpha / r):
        fail("you returned only the adapter's term; add the frozen layer's output x Wᵀ + b")
    if close(x @ W.T + low * alpha / r):
        fail("you dropped the bias b of the frozen layer")
    fail("your output differs from x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ (A is (r, in), B is (out, r))")


@forbids('minigpt.finetune.lora.LoRALinear.__init__')
def check_lora_init(fn: Callable) -> None:
    """Check ``fn(in_features, out_features, r) -> (A, B)``: A random (r, in), B zeros (out, r)."""
    d_in, d_out, r = 12, 7, 3
    if is_hidden():
        rr = draw(63)
        d_in, d_out, r = rr.randint(8, 64), rr.randint(2, 64), rr.randint(1, 8)
        d_out += d_out == d_in
    out = _call(fn, d_in, d_out, r, what="your init function")
    if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(t, torch.Tensor) for t in out):
        fail("return a pair of tensors (A, B)")
    A, B = out
    if tuple(A.shape) == (d_out, r) and tuple(B.shape) == (r, d_in):
        fail(f"A and B are swapped: A is (r, in_features) = ({r}, {d_in}) and B is (out_features, r) = "
             f"({d_out}, {r}), so that B @ A has the shape of W, (out, in)")
    if tuple(A.shape) != (r, d_in) or tuple(B.shape) != (d_out, r):
        fail(f"A should be (r, in_features) = ({r}, {d_in}) and B (out_features, r) = ({d_out}, {r}); got "
             f"{tuple(A.shape)} and {tuple(B.shape)}")
    if B.abs().sum() != 0 and A.abs().sum() == 0:
        fail("it is B that starts at zero, and A that is random (the other way round the update is "
             "also 0 at first, but that is not LoRA's convention)")
    if B.abs().sum() != 0:
        fail("B must start at zero, so that B·A = 0 and the adapted model starts exactly as the "
             "pretrained one; with a random B the first forward pass is already changed")
    if A.abs().sum() == 0:
        fail("A must not be zero too: with A = B = 0 no gradient reaches either matrix (dL/dB "
             "involves A, dL/dA involves B), so the adapter never learns")
    if A.std() < 1e-4:
        fail("A is nearly zero; initialise it randomly, e.g. like nn.Linear (kaiming_uniform_) or "
             "with a small normal")
    passed("A is random (r, in) and B is zero (out, r): B·A = 0 at the start, and gradients flow")


@forbids('minigpt.finetune.lora.add_lora', 'minigpt.finetune.classify.count_parameters', 'minigpt.model.GPT.__init__')
def check_lora_count(fn: Callable) -> None:
    """Check ``fn(n_embd, n_layer, r)``: adapter parameters on c_attn, attn.c_proj, c_fc, mlp.c_proj."""
    cases = ((256, 6, 8), (32, 2, 4), (48, 3, 1))
    if is_hidden():
        rr = draw(64)
        cases = tuple((4 * rr.randint(2, 40), rr.randint(1, 8), rr.choice([1, 2, 4, 8, 16])) for _ in range(3))
    for C, L, r in cases:
        got = _call(fn, C, L, r, what="your count")
        model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=L, n_head=4, n_embd=C))
        add_lora(model, r=r)
        ref = count_parameters(model)[0]
        if got == ref:
            continue
        per = {"c_attn": r * (C + 3 * C), "attn.c_proj": r * (C + C), "c_fc": r * (C + 4 * C),
               "mlp.c_proj": r * (4 * C + C)}
        if got == ref // L:
            fail("that is one block's adapters; multiply by n_layer")
        if got == L * (per["c_attn"] + per["attn.c_proj"]):
            fail("you counted only the attention projections; the FFN's c_fc and c_proj get adapters too")
        if got == L * r * (C + C) * 4:
            fail("not every layer is C → C: c_attn is C → 3C, c_fc is C → 4C and the FFN's c_proj is "
                 "4C → C; an adapter on in → out has r·(in + out) parameters")
        if got == 2 * ref:
            fail("an adapter on in → out has r·(in + out) parameters (A is r × in, B is out × r); you "
                 "doubled it")
        fail(f"for n_embd={C}, n_layer={L}, r={r} expected {ref:,}, got {got!r}: sum r·(in + out) over "
             "c_attn (C → 3C), attn.c_proj (C → C), mlp.c_fc (C → 4C), mlp.c_proj (4C → C), per block")
    passed("your count matches the model's trainable parameters after add_lora")
