"""Checks for chapter 06, fine-tuning: the loss mask of a conversation (transfer of the SFT loss
mask), LoRA's forward pass and initialisation, and counting LoRA's trainable parameters.

Each check runs the learner's function on fixed inputs, compares it with :mod:`minigpt.finetune`
and, when the answer is wrong, tries the usual mistakes one by one to name the likely one.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..finetune import LoRALinear, add_lora, count_parameters
from ..model import GPT
from ..config import GPTConfig
from ..objective import IGNORE_INDEX
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_chat_targets", "check_lora_forward", "check_lora_init", "check_lora_count", "CheckFailed"]


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


def _chat_reference(turns) -> tuple[list[int], list[int]]:
    """x and y for a conversation, from each token's role: a target is kept only if it is an
    assistant token. Independent of ``sft_example``, which it equals for (user, assistant)."""
    s = [t for _, ids in turns for t in ids]
    role = [r for r, ids in turns for _ in ids]
    return s[:-1], [t if role[i + 1] == "assistant" else IGNORE_INDEX for i, t in enumerate(s[1:])]


def _chat_cases() -> list[list[tuple[str, list[int]]]]:
    if not is_hidden():
        return [[("user", [5, 6, 7]), ("assistant", [20, 21])],
                [("user", [5, 6]), ("assistant", [20, 21, 22]), ("user", [8, 9, 10]), ("assistant", [23, 24])],
                [("user", [1]), ("assistant", [30]), ("user", [2, 3]), ("assistant", [31, 32, 33])]]
    r = draw(60)

    def ids(lo, hi):
        return [r.randint(1, 250) for _ in range(r.randint(lo, hi))]

    def chat(n_turns, first="user", lo=1, hi=8):
        roles = ["user", "assistant"] if first == "user" else ["assistant", "user"]
        return [(roles[k % 2], ids(lo, hi)) for k in range(n_turns)]

    return [chat(r.randint(5, 7), lo=2),  # longer conversations
            chat(2 * r.randint(2, 3), lo=1, hi=1),  # one-token turns
            chat(3),  # ends with a user turn: its tokens are never scored
            chat(4, first="assistant", lo=2)]  # opens with an assistant greeting


def check_chat_targets(fn: Callable) -> None:
    """Check ``fn(turns) -> (x, y)`` for a conversation given as (role, ids) turns: the loss sees
    the assistant's tokens only, in every assistant turn."""
    for turns in _chat_cases():
        out = _call(fn, [(role, list(ids)) for role, ids in turns], what="your chat function")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail("return a pair (x, y): the inputs and the targets")
        x, y = _ids(out[0], "x"), _ids(out[1], "y")
        ref_x, ref_y = _chat_reference(turns)  # equal to sft_example for one prompt and one response (tested)
        s = ref_x + [turns[-1][1][-1]]
        role = [r for r, ids in turns for _ in ids]
        first = next(k for k, (r, _) in enumerate(turns) if r == "assistant")
        last = max(k for k, (r, _) in enumerate(turns) if r == "assistant")

        def relabel(rule):  # the targets that a mistaken role for each turn would give
            return _chat_reference([(rule(k, r), ids) for k, (r, ids) in enumerate(turns)])[1]

        if x != ref_x:
            if x == s:
                fail("x should drop the last token of the whole conversation: x = s[:-1]; the last "
                     "token is only ever a target")
            fail("x should be the whole conversation (every turn, in order) without its last token")
        if y == ref_y:
            continue
        if len(y) != len(ref_y):
            fail(f"y should have the same length as x ({len(ref_x)}): the conversation without its "
                 f"first token, with the targets that are not assistant tokens masked; got length {len(y)}")
        if y == s[1:]:
            fail("no loss mask: targets that are user tokens must be -100 (IGNORE_INDEX), or the model "
                 "is trained to write the user's lines too")
        if IGNORE_INDEX not in y and 0 in y:
            fail("you masked with 0, which is a real token id; use -100 (IGNORE_INDEX), the value "
                 "cross_entropy skips")
        if y == relabel(lambda k, r: "user" if r == "assistant" else "assistant"):
            fail("the mask is the wrong way round: you scored the user's tokens and masked the "
                 "assistant's; the loss is on the assistant's tokens only")
        if y == [t if role[i] == "assistant" else IGNORE_INDEX for i, t in enumerate(s[1:])]:
            fail("off by one: decide by the role of the target y[i] = s[i + 1], not of the input "
                 "x[i]; the first token of an assistant turn is predicted from the user's last "
                 "token and must be scored, the token after an assistant turn must not")
        if y == relabel(lambda k, r: "user" if k < first else "assistant"):
            fail("you masked only the prompt before the first assistant turn, as sft_example does; "
                 "in a conversation the later user turns must be masked too")
        if y == relabel(lambda k, r: "assistant" if k == last else "user"):
            fail("you scored only the last assistant turn; every assistant turn is a response to learn")
        fail("some targets are masked where they should be scored, or the other way round: a target "
             "y[i] = s[i + 1] is kept exactly when s[i + 1] is an assistant token")
    passed("every assistant token is scored and nothing else: the loss mask of a whole conversation")


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
