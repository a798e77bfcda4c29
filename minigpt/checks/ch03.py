"""Checks for chapter 03, the feed-forward network and the transformer block.

Each check calls the learner's function on fresh random inputs (drawn from a private generator,
so the notebook's own random state is untouched), compares it with :mod:`minigpt`, and when the
answer is wrong, tries the usual mistakes one by one to say which one it most likely is.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..config import GPTConfig
from ..model import GPT, Block, FeedForward
from ..norms import make_norm
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_ffn", "check_gelu_grad", "check_rmsnorm", "check_block", "check_param_count", "check_gpt_module",
           "check_post_ln_block", "build_and_run", "post_ln_reference", "CheckFailed"]


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=1e-4))


def _call(fn: Callable, *args, what: str = "your function", hint: Callable[[Exception], str] | None = None):
    with torch.random.fork_rng(devices=[]):  # the learner's code cannot disturb the notebook's RNG
        try:
            out = fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - turn any crash into a friendly message
            extra = hint(e) if hint else ""
            fail(f"{what} raised {type(e).__name__}: {e}{extra}")
    return out


def _tensor(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        fail(f"{what} should be a torch.Tensor, got {type(x).__name__}")
    return x.detach()


def _first_failure(got: torch.Tensor, ref: torch.Tensor, candidates, generic: str, atol: float = 1e-5) -> None:
    for variant, message in candidates:
        if variant is not None and _same(got, variant, atol):
            fail(message)
    worst = (got.double() - ref.double()).abs().max().item()
    fail(f"{generic} (largest difference {worst:.3g})")


@forbids('minigpt.model.FeedForward.forward', 'minigpt.model.FeedForward.__init__')
def check_ffn(fn: Callable) -> None:
    """Check ``fn(x, W1, b1, W2, b2)`` = max(0, x W1 + b1) W2 + b2, with W1 (C, 4C), W2 (4C, C).

    Compared with :class:`minigpt.FeedForward` with ``activation="relu"``, whose ``nn.Linear``
    layers store the transposed matrices (``c_fc.weight = W1ᵀ``).
    """
    g = torch.Generator().manual_seed(seeded(3))
    C, B, T = 8, 2, 5
    if is_hidden():
        r = draw(3)
        C, B, T = r.randint(2, 12), r.randint(1, 3), r.choice([1, r.randint(2, 9)])
    x = torch.randn(B, T, C, generator=g)
    W1, b1 = torch.randn(C, 4 * C, generator=g) * 0.5, torch.randn(4 * C, generator=g)
    W2, b2 = torch.randn(4 * C, C, generator=g) * 0.5, torch.randn(C, generator=g)
    ffn = FeedForward(GPTConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=C, activation="relu")).eval()
    with torch.no_grad():
        ffn.c_fc.weight.copy_(W1.T)
        ffn.c_fc.bias.copy_(b1)
        ffn.c_proj.weight.copy_(W2.T)
        ffn.c_proj.bias.copy_(b2)
        ref = ffn(x)
    got = _tensor(_call(fn, x.clone(), W1.clone(), b1.clone(), W2.clone(), b2.clone(), what="your FFN"), "the FFN output")
    if _same(got, ref):
        passed("FFN matches minigpt.FeedForward (ReLU)")
        return
    if got.shape != ref.shape:
        fail(f"your output has shape {tuple(got.shape)}, expected {tuple(ref.shape)}: the FFN maps each "
             "C-vector to a C-vector (C -> 4C -> C)")
    h = x @ W1 + b1
    _first_failure(got, ref, [
        (h @ W2 + b2, "no non-linearity: apply max(0, ·) (torch.relu) to x W1 + b1; without it the "
                      "two layers collapse into one linear map"),
        (torch.relu(torch.relu(h) @ W2 + b2), "you applied ReLU after the second layer too; the output "
                                               "of W2 is not passed through the activation"),
        (F.gelu(h) @ W2 + b2, "you used GELU; this exercise is the textbook ReLU version, max(0, ·)"),
        (torch.relu(h) @ W2, "you forgot the output bias b2"),
        (torch.relu(x @ W1) @ W2 + b2, "you forgot the hidden bias b1 (add it before the ReLU)"),
        (torch.relu(torch.relu(x) @ W1 + b1) @ W2 + b2, "ReLU goes after the first layer, not on the input"),
    ], "your FFN differs from max(0, x @ W1 + b1) @ W2 + b2")


@forbids('torch.autograd.grad', 'torch.autograd.backward', 'torch.func.grad', 'torch.func.vjp',
         'torch.nn.functional.gelu')
def check_gelu_grad(fn: Callable) -> None:
    """Check ``fn(x)`` = GELU'(x) = Φ(x) + x·φ(x), the slope of the exact GELU x·Φ(x), elementwise.

    Compared with autograd's derivative of ``torch.nn.functional.gelu`` (exact form) in float64.
    """
    x = torch.linspace(-5, 5, 201, dtype=torch.float64)
    if is_hidden():  # other points, another shape, large magnitudes
        g = torch.Generator().manual_seed(seeded(201))
        r = draw(201)
        x = torch.randn(r.randint(1, 4), r.randint(5, 60), generator=g, dtype=torch.float64) * r.choice([1, 3, 8])
    with torch.enable_grad():
        xg = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(F.gelu(xg).sum(), xg)  # each output depends on its own input only
    got = _tensor(_call(fn, x.clone(), what="your GELU derivative"), "GELU'(x)").double()
    if _same(got, ref, 1e-5):
        passed("GELU's derivative matches autograd's")
        return
    if got.shape != x.shape:
        fail(f"your derivative changed the shape: {tuple(x.shape)} -> {tuple(got.shape)}; it acts elementwise")
    Phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    phi = torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi)
    with torch.enable_grad():
        xt = x.clone().requires_grad_(True)
        (tanh_grad,) = torch.autograd.grad(F.gelu(xt, approximate="tanh").sum(), xt)
    _first_failure(got, ref, [
        (x * Phi, "you returned GELU(x) itself; the exercise asks for its derivative d/dx [x·Φ(x)]"),
        (Phi, "you differentiated only as if x were a constant: the product rule gives two terms, "
              "Φ(x) + x·Φ'(x)"),
        (x * phi, "you kept only x·φ(x): the product rule also gives the term where x is differentiated"),
        (Phi + phi, "the second term of the product rule is x times Φ'(x), not Φ'(x) alone"),
        (Phi + x * torch.exp(-x**2 / 2), "Φ'(x) is the standard normal density, which has the factor 1/√(2π)"),
        (Phi + x * torch.exp(-x**2) / math.sqrt(2 * math.pi), "the normal density has exp(-x²/2), not exp(-x²)"),
        ((x > 0).double(), "that is ReLU's slope (a step); GELU's slope is smooth"),
        (tanh_grad, "that is the slope of the tanh approximation; differentiate the exact x·Φ(x)"),
    ], "your derivative differs from d/dx [x·Φ(x)]")


@forbids('minigpt.norms.RMSNorm.forward', 'minigpt.norms.RMSNorm.__init__', 'minigpt.norms.make_norm',
         'torch.nn.functional.rms_norm', 'torch.rms_norm', 'torch.nn.modules.normalization.RMSNorm.__init__')
def check_rmsnorm(fn: Callable) -> None:
    """Check ``fn(x, g, eps)`` = x / sqrt(mean(x², last dim) + eps) · g, against ``minigpt``'s
    ``norm="rmsnorm"`` (:class:`minigpt.norms.RMSNorm`)."""
    g = torch.Generator().manual_seed(seeded(5))
    C, B, T, eps = 6, 3, 4, 1e-6
    if is_hidden():
        r = draw(5)
        C, B, T, eps = r.randint(3, 16), r.randint(1, 3), r.randint(1, 6), r.choice([1e-5, 1e-6])
    x = torch.randn(B, T, C, generator=g) * 3 + 1
    x[0, 0] = 0.002 * x[0, 0]  # a vector near 0, where eps matters
    gain = torch.randn(C, generator=g)
    norm = make_norm(GPTConfig(n_embd=C, n_head=1, norm="rmsnorm", norm_eps=eps))
    with torch.no_grad():
        norm.weight.copy_(gain)
        ref = norm(x)
    got = _tensor(_call(fn, x.clone(), gain.clone(), eps, what="your RMSNorm"), "the output")
    if _same(got, ref, 1e-4):
        passed("RMSNorm matches minigpt's norm=\"rmsnorm\"")
        return
    if got.shape != ref.shape:
        fail(f"your output has shape {tuple(got.shape)}, expected {tuple(ref.shape)}: keep the shape "
             "(keepdim=True when averaging over the last dimension)")

    def rms(dims=-1, center=False, gain_on=True, eps_outside=False, no_sqrt=False, use_sum=False, absval=False):
        xc = x - x.mean(-1, keepdim=True) if center else x
        if absval:
            denom = x.abs().mean(dims, keepdim=True) + eps
        else:
            ms = x.pow(2).sum(dims, keepdim=True) if use_sum else x.pow(2).mean(dims, keepdim=True)
            denom = ms + eps if no_sqrt else (ms.sqrt() + eps if eps_outside else (ms + eps).sqrt())
        y = xc / denom
        return y * gain if gain_on else y

    _first_failure(got, ref, [
        (rms(center=True), "you subtracted the mean: that is LayerNorm's step; RMSNorm leaves x uncentred "
                           "and divides by the root of the mean of the squares"),
        (gain * F.layer_norm(x, (C,), eps=eps), "that is LayerNorm (centred, divided by the standard "
                                                "deviation); RMSNorm divides x by sqrt(mean(x²) + eps)"),
        (rms(use_sum=True), "you divided by the length sqrt(Σx²): RMS takes the mean of the squares, "
                            "which divides the sum by the number of features"),
        (rms(absval=True), "you divided by the mean of |x|; RMS is the square root of the mean of x²"),
        (rms(dims=0), "you averaged over the batch dimension; RMSNorm normalizes each token's vector "
                      "over the last dimension (dim=-1)"),
        (rms(dims=1), "you averaged over the time dimension; RMSNorm normalizes each token's vector "
                      "over the last dimension (dim=-1)"),
        (rms(gain_on=False), "you forgot the learned gain g: multiply the normalized vector by it"),
        (rms(eps_outside=True), "eps goes inside the square root: x / sqrt(mean(x²) + eps)"),
        (rms(no_sqrt=True), "divide by the root mean square, sqrt(mean(x²) + eps), not by the mean square"),
    ], "your RMSNorm differs from g · x / sqrt(mean(x², dim=-1) + eps)", atol=1e-4)


def _attn_hint(e: Exception) -> str:
    if "tuple" in str(e):
        return " — block.attn returns (output, weights): take its first element, block.attn(h)[0]"
    return ""


def _random_block(seed: int, T: int) -> tuple[Block, torch.Tensor]:
    """A Block in eval mode with random weights, LayerNorm scales and biases included (so that swapped
    LayerNorms show), and an input x of shape (2, T, 8); hidden tests draw other head counts, widths,
    batch sizes and lengths."""
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
    B = 2
    if is_hidden():
        r = draw(seed)
        nh = r.choice([1, 3, 4])
        # n_embd >= 6: a LayerNorm over 2 channels only sees a sign, and mistakes would pass
        cfg = GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=nh, n_embd=nh * r.choice([6, 8]))
        B, T = r.randint(1, 3), r.choice([1, 16, r.randint(2, 15)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeded(seed))
        block = Block(cfg).eval()
        with torch.no_grad():
            for p in block.parameters():
                p.normal_(0.0, 0.4)
        x = torch.randn(B, T, cfg.n_embd) * 2
    return block, x


@forbids('minigpt.model.Block.forward')
def check_block(fn: Callable) -> None:
    """Check ``fn(x, block)``: the pre-LN block by hand from ``block.ln_1``, ``block.attn`` (which
    returns ``(y, weights)``), ``block.ln_2`` and ``block.mlp``; compared with ``block(x)[0]``."""
    block, x = _random_block(13, T=5)
    with torch.no_grad():
        ref = block(x)[0]
        got = _call(fn, x.clone(), block, what="your block", hint=_attn_hint)
        if isinstance(got, (tuple, list)):
            got = got[0]
        got = _tensor(got, "the block output")
        if _same(got, ref, 1e-4):
            passed("pre-LN block matches minigpt.Block")
            return
        B, T, C = x.shape
        if got.shape == (B, T, 2 * C) or got.shape == (B, T, 3 * C):
            fail(f"your output has shape {tuple(got.shape)}: you concatenated instead of added the residual. "
                 "The residual connection is an addition, x = x + attn(ln_1(x)), so the width stays C")
        if got.shape != ref.shape:
            fail(f"your output has shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        att = lambda h: block.attn(h)[0]  # noqa: E731
        ln1, ln2, mlp = block.ln_1, block.ln_2, block.mlp
        h1 = x + att(ln1(x))
        post1 = ln1(x + att(x))
        n1 = ln1(x)
        _first_failure(got, ref, [
            (ln2(post1 + mlp(post1)), "that is the post-LN block of the original Transformer, "
                                     "LayerNorm(x + f(x)); GPT-2 normalizes first: x + f(LayerNorm(x))"),
            (mlp(ln2(att(ln1(x)))), "there is no residual connection: add each sub-layer's output to its "
                                    "input, x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x))"),
            (h1 + mlp(ln2(x)), "the FFN must read the stream after attention was added: "
                               "x = x + attn(ln_1(x)) first, then x = x + mlp(ln_2(x)) on that new x"),
            (h1 + mlp(ln1(h1)), "you used ln_1 twice; the FFN has its own LayerNorm, ln_2"),
            (h1 + mlp(h1), "the FFN's input must be normalized: x + mlp(ln_2(x))"),
            (x + att(x) + mlp(ln2(x + att(x))), "the attention's input must be normalized: x + attn(ln_1(x))"),
            (n1 + att(n1) + mlp(ln2(n1 + att(n1))), "the residual must carry the un-normalized x: "
                                                    "x + attn(ln_1(x)), not ln_1(x) + attn(ln_1(x))"),
            (h1, "you forgot the FFN sub-layer: x = x + mlp(ln_2(x))"),
            (x + mlp(ln2(x)), "you forgot the attention sub-layer: x = x + attn(ln_1(x))[0]"),
        ], "your block differs from minigpt.Block", atol=1e-4)


def _parts(cfg: GPTConfig) -> dict[str, int]:
    """Parameter counts of the pieces of a GPT (for naming a learner's mistake)."""
    V, T, L, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    b = 1 if cfg.bias else 0
    return {
        "wte": V * C, "wpe": T * C,
        "ln": L * 2 * (C + b * C), "ln_f": C + b * C,
        "linear_bias": b * L * (3 * C + C + 4 * C + C),
        "all_bias": b * (L * (3 * C + C + 4 * C + C + 2 * C) + C),
        "ffn_width": L * ((8 * C * C + b * 5 * C) - (2 * C * C + b * 2 * C)),
    }


@forbids('minigpt.model.GPT.num_params', 'minigpt.model.GPT.__init__', 'minigpt.model.Block.__init__',
         'minigpt.model.FeedForward.__init__')
def check_param_count(fn: Callable) -> None:
    """Check ``fn(cfg) -> int``: the parameters of ``GPT(cfg)`` by formula, against ``num_params()``.

    The output head shares its matrix with the token embedding (weight tying): count it once.
    """
    configs = [
        GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),
        GPTConfig(vocab_size=50, block_size=32, n_layer=3, n_head=2, n_embd=48, bias=True),
        GPTConfig(vocab_size=37, block_size=16, n_layer=2, n_head=2, n_embd=24, bias=False),
    ]
    if is_hidden():  # other sizes, both bias settings
        r = draw(17)
        configs = []
        for bias in (True, False, r.random() < 0.5):
            nh = r.randint(1, 4)
            configs.append(GPTConfig(vocab_size=r.randint(10, 300), block_size=r.randint(8, 256),
                                     n_layer=r.randint(1, 7), n_head=nh, n_embd=nh * r.randint(2, 24), bias=bias))
    for cfg in configs:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # shapes only: instant, no memory
            ref = GPT(cfg).num_params()
        got = _call(fn, cfg, what="your parameter count")
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, float) and got.is_integer():
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            fail(f"your count should be an int, got {got!r}")
        if got == ref:
            continue
        p, d = _parts(cfg), got - ref
        where = f"for {cfg.n_layer} layers, n_embd={cfg.n_embd}, vocab_size={cfg.vocab_size}, bias={cfg.bias}"
        known = [
            (p["wte"], "you counted the output head separately, but it is tied to the token embedding "
                       "(lm_head.weight is wte.weight): count that V×C matrix once"),
            (-p["wte"], "you forgot the token embedding, vocab_size × n_embd"),
            (-p["wpe"], "you forgot the position embeddings, block_size × n_embd"),
            (-p["ln"] - p["ln_f"], "you forgot the LayerNorms: each has a scale (and, with bias, a shift) of n_embd"),
            (-p["ln"], "you forgot the two LayerNorms inside each block"),
            (-(p["ln"] + p["ln_f"]) // 2 if cfg.bias else 0,
             "you forgot the LayerNorm biases: with bias=True each LayerNorm has a shift of n_embd as well as "
             "a scale (2 per block, plus ln_f)"),
            (-p["ln_f"], "you forgot the final LayerNorm ln_f"),
            (-p["linear_bias"], "you forgot the biases of the Linear layers (3C + C + 4C + C per block)"),
            (-p["all_bias"], "you forgot all the biases (Linear layers and LayerNorm shifts)"),
            (-p["ffn_width"], "the FFN's hidden layer is 4 × n_embd wide, not n_embd"),
        ]
        if not cfg.bias:
            bias_if_true = _parts(GPTConfig(**{**cfg.to_dict(), "bias": True}))["all_bias"]
            known.insert(0, (bias_if_true, "with bias=False there are no biases at all, in the Linear layers "
                                           "or in the LayerNorms: only count them when cfg.bias is True"))
        for delta, message in known:
            if d == delta and delta != 0:
                fail(f"{where}: {message}")
        fail(f"{where} you counted {got:,} parameters, num_params() says {ref:,} (off by {d:+,}). Per block: "
             "ln_1, attention (c_attn: C×3C + 3C, c_proj: C×C + C), ln_2, FFN (c_fc: C×4C + 4C, "
             "c_proj: 4C×C + C); plus wte, wpe and ln_f")
    passed("parameter count matches GPT.num_params() for three configurations")


# ---------------------------------------------------------------- 03.6 the GPT as your own nn.Module

_TRANSFORMER_NAMES = ("transformer.wte", "transformer.wpe", "transformer.drop", "transformer.h", "transformer.ln_f",
                      "lm_head")


def build_and_run(cls: type) -> Callable:
    """Wrap a learner's GPT class as a function ``run(cfg, weights, idx) -> report`` for
    :func:`check_gpt_module`.

    ``run`` builds ``cls(cfg)``, loads ``weights`` (``(name, tensor)`` pairs of a
    :class:`minigpt.GPT`'s state dict) into it, and returns plain data: the eval-mode logits for
    ``idx``, whether the head's weight *is* the token embedding's, the parameter names ``cls`` lacks
    and those it has beyond GPT's, and the class of every submodule. In the grader the class lives in the
    student's kernel and the check sees only such data, so the hidden tests pass
    ``build_and_run(MyGPT)``; in the notebook the check wraps a class itself.
    """

    def run(cfg: GPTConfig, weights: list, idx: torch.Tensor) -> dict:
        model = cls(cfg)
        if not isinstance(model, torch.nn.Module):
            return {"not_module": type(model).__name__}
        state = model.state_dict(keep_vars=True)
        head, wte = state.get("lm_head.weight"), state.get("transformer.wte.weight")
        tied = head is not None and head is wte
        extra, lacks = model.load_state_dict(dict(weights), strict=False)  # (missing, unexpected) keys
        model.eval()
        with torch.no_grad():
            out = model(idx)
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        return {"logits": out, "tied": tied, "lacks": list(lacks), "extra": list(extra),
                "modules": {n: type(m).__name__ for n, m in model.named_modules()},
                "bases": [f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__]}

    run.__name__ = f"build_and_run({getattr(cls, '__name__', 'cls')})"
    return run


def _gpt_configs() -> list[tuple[GPTConfig, int, int]]:
    """(config, batch, T) for check_gpt_module; hidden: other depths, widths, heads, contexts."""
    if not is_hidden():
        return [(GPTConfig(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16), 2, 7)]
    r = draw(23)
    out = []
    for _ in range(2):
        nh = r.choice([1, 2, 3, 4])
        bs = r.randint(4, 24)
        cfg = GPTConfig(vocab_size=r.randint(5, 90), block_size=bs, n_layer=r.randint(1, 3), n_head=nh,
                        n_embd=nh * r.choice([4, 6, 8]), dropout=r.choice([0.0, 0.1, 0.2]))
        out.append((cfg, r.randint(1, 3), r.choice([1, bs - 1, r.randint(1, bs - 1)])))
    return out


def _module_hint(e: Exception) -> str:
    s = str(e)
    if "tuple" in s:
        return " — a Block returns (x, weights): take x = block(x)[0]"
    if "index out of range" in s.lower():
        return (" — position ids run 0 … T-1 (torch.arange(T)); transformer.wpe has block_size rows, "
                "transformer.wte has vocab_size rows")
    return ""


@forbids('minigpt.model.GPT.__init__', 'minigpt.model.GPT.forward', 'minigpt.model.GPT.embed')
def check_gpt_module(fn: Callable) -> None:
    """Check a learner's GPT class, ``MyGPT(cfg)`` with ``forward(idx) -> logits``, against
    :class:`minigpt.GPT`: the same parameter names (``minigpt.GPT``'s state dict loads into it), a
    head tied to the token embedding (the same ``Parameter``), and the same eval-mode logits.

    ``fn`` is the class, or :func:`build_and_run` of it (how the grader reaches it).
    """
    run = build_and_run(fn) if isinstance(fn, type) else fn
    for cfg, B, T in _gpt_configs():
        where = f"(n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_embd={cfg.n_embd}, block_size={cfg.block_size}, T={T})"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeded(23))
            ref = GPT(cfg).eval()
            with torch.no_grad():  # larger, varied weights, so that every missing piece shows in the logits
                for name, p in ref.named_parameters():
                    p.normal_(0.0, 1.0 if name.startswith(("transformer.wte", "transformer.wpe")) else 0.4)
                    if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                        p.add_(1.0)  # LayerNorm scales around 1
            idx = torch.randint(0, cfg.vocab_size, (B, T))
        tf = ref.transformer
        with torch.no_grad():
            want = ref(idx)[0]
            weights = [(k, v.clone()) for k, v in ref.state_dict().items()]
        got = _call(run, cfg, weights, idx.clone(), what="your MyGPT", hint=_module_hint)
        if not isinstance(got, dict) or ("logits" not in got and "not_module" not in got):
            fail("pass the class itself to the check: ch03.check_gpt_module(MyGPT)")
        if "not_module" in got:
            fail(f"MyGPT(cfg) built a {got['not_module']}, not an nn.Module: write class MyGPT(nn.Module)")
        if "minigpt.model.GPT" in got.get("bases", []):
            fail("MyGPT inherits from minigpt.GPT; build it from nn.Module, Block and nn.Embedding yourself")
        lacks, extra = list(got.get("lacks", [])), list(got.get("extra", []))
        if lacks or extra:
            names = (f"your parameter names differ from minigpt.GPT's, so its weights cannot load: your model "
                     f"lacks {lacks[:4]} and has {extra[:4]} besides. Name the modules {', '.join(_TRANSFORMER_NAMES)} "
                     "(self.transformer an nn.ModuleDict, transformer.h an nn.ModuleList of Block(cfg))")
            if "transformer.wte.weight" in lacks or "transformer.h.0.ln_1.weight" in lacks:
                fail(names)
            if "transformer.wpe.weight" in lacks:
                fail("your model has no transformer.wpe: a GPT adds a learned position embedding P[i] "
                     "(nn.Embedding(block_size, n_embd)) to the token embedding E[w]")
            if any(k.startswith("transformer.ln_f.") for k in lacks):
                fail("your model has no final LayerNorm transformer.ln_f: the stream is normalized once more "
                     "after the last block, before the head")
            if "lm_head.weight" in lacks:
                fail("your model has no lm_head: make it nn.Linear(n_embd, vocab_size, bias=False), with its "
                     "weight set to the token embedding's (weight tying)")
            if "lm_head.bias" in extra:
                fail("lm_head has a bias; GPT-2's head has none: nn.Linear(n_embd, vocab_size, bias=False)")
            fail(names)
        if not got.get("tied"):
            fail("the head is not tied: lm_head.weight must be the same Parameter as transformer.wte.weight "
                 "(assign one to the other in __init__). Equal values are not enough: training would move "
                 "them apart, and the model would count the V×C matrix twice")
        if got.get("modules", {}).get("transformer.drop") != "Dropout":
            fail("transformer.drop should be an nn.Dropout(cfg.dropout), applied to E[w] + P[i]")
        out = _tensor(got["logits"], "the output of forward")
        V = cfg.vocab_size
        if out.shape == (B, T, cfg.n_embd) and cfg.n_embd != V:
            fail(f"{where} forward returned shape {tuple(out.shape)}, the final vectors: apply the head, "
                 "lm_head(ln_f(x)), to get one logit per vocabulary entry")
        if out.shape != (B, T, V):
            fail(f"{where} forward returned shape {tuple(out.shape)}, expected (B, T, vocab_size) = {(B, T, V)}")
        if _same(out, want, 1e-4):
            continue
        with torch.no_grad():
            def head(x, blocks=True, ln=True):
                if blocks:
                    for blk in tf.h:
                        x = blk(x)[0]
                return ref.lm_head(tf.ln_f(x) if ln else x)

            pos = torch.arange(T)
            E, P = tf.wte(idx), tf.wpe
            candidates = [
                (head(E), "you forgot the position embeddings: the blocks' input is E[w] + P[i], "
                          "with P = transformer.wpe"),
                (head(E + P(pos), ln=False), "you forgot the final LayerNorm: logits = lm_head(ln_f(x)) after the "
                                             "last block"),
                (head(E + P(pos + 1)) if T < cfg.block_size else None,
                 "your positions do not start at 0: the first token of idx is at position 0, so P[i] for "
                 "i = torch.arange(T)"),
                (head(E + P(pos + cfg.block_size - T)) if 0 < cfg.block_size - T != 1 else None,
                 "your positions do not start at 0: the first token of idx is at position 0 (not "
                 "block_size - T), so P[i] for i = torch.arange(T)"),
                (torch.softmax(want, -1), "forward applied softmax: return the raw logits; the loss (chapter 04) "
                                          "and sampling (chapter 07) turn them into probabilities themselves"),
                (torch.log_softmax(want, -1), "forward applied log_softmax: return the raw logits; the loss "
                                              "(chapter 04) applies log-softmax itself"),
                (head(math.sqrt(cfg.n_embd) * E + P(pos)),
                 "you scaled the token embedding by √n_embd (the original Transformer does this; GPT-2 "
                 "does not): the input is E[w] + P[i]"),
                (head(E + P(pos), blocks=False), "the blocks were skipped: run x through every block of "
                                                 "transformer.h, in order"),
            ]
        _first_failure(out, want, candidates, f"{where} your logits differ from minigpt.GPT's", atol=1e-4)
    passed("MyGPT loads minigpt.GPT's weights and gives its logits; the head is tied")


# ---------------------------------------------------------------- 03.7 the post-LN block

def post_ln_reference(block: Block) -> torch.nn.TransformerEncoderLayer:
    """PyTorch's own post-LN encoder layer (``norm_first=False``) holding ``block``'s weights.

    The activation is passed as a plain function: given an ``nn.GELU`` *module*, the layer's
    inference fast path (taken under ``no_grad``) runs the exact GELU whatever its ``approximate``
    setting, while ``minigpt`` uses the tanh form. Call it with a causal mask.
    """
    C = block.ln_1.normalized_shape[0]
    layer = torch.nn.TransformerEncoderLayer(C, block.attn.n_head, dim_feedforward=4 * C, dropout=0.0,
                                             activation=_gelu_tanh, batch_first=True, norm_first=False,
                                             layer_norm_eps=block.ln_1.eps).eval()
    a, m = block.attn, block.mlp
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(a.c_attn.weight)  # (3C, C): Q, K, V stacked, heads contiguous
        layer.self_attn.in_proj_bias.copy_(a.c_attn.bias)
        layer.self_attn.out_proj.load_state_dict(a.c_proj.state_dict())
        layer.linear1.load_state_dict(m.c_fc.state_dict())
        layer.linear2.load_state_dict(m.c_proj.state_dict())
        layer.norm1.load_state_dict(block.ln_1.state_dict())
        layer.norm2.load_state_dict(block.ln_2.state_dict())
    return layer


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


@forbids('minigpt.model.Block.forward', 'torch.nn.modules.transformer.TransformerEncoderLayer.__init__',
         'torch.nn.modules.transformer.TransformerEncoderLayer.forward')
def check_post_ln_block(fn: Callable) -> None:
    """Check ``fn(x, block)``: the post-LN block of the original Transformer, x = ln_1(x + attn(x)),
    then x = ln_2(x + mlp(x)), from ``block``'s sub-modules; compared with PyTorch's
    ``nn.TransformerEncoderLayer(norm_first=False)`` holding the same weights, with a causal mask."""
    block, x = _random_block(29, T=6)
    T = x.shape[1]
    mask = torch.nn.Transformer.generate_square_subsequent_mask(T)  # -inf above the diagonal
    with torch.no_grad():
        ref = post_ln_reference(block)(x, src_mask=mask, is_causal=True)
        got = _call(fn, x.clone(), block, what="your post-LN block", hint=_attn_hint)
        if isinstance(got, (tuple, list)):
            got = got[0]
        got = _tensor(got, "the block output")
        if _same(got, ref, 1e-4):
            passed("post-LN block matches torch.nn.TransformerEncoderLayer(norm_first=False)")
            return
        if got.shape != ref.shape:
            fail(f"your output has shape {tuple(got.shape)}, expected {tuple(ref.shape)}: each sub-layer's "
                 "output is added to its input (same width), then normalized")
        att = lambda h: block.attn(h)[0]  # noqa: E731
        ln1, ln2, mlp = block.ln_1, block.ln_2, block.mlp
        h1 = ln1(x + att(x))
        pre1 = x + att(ln1(x))
        _first_failure(got, ref, [
            (pre1 + mlp(ln2(pre1)), "that is the pre-LN block of GPT-2 (exercise 03.4), x + f(LN(x)); the "
                                    "post-LN block normalizes after the residual addition: LN(x + f(x))"),
            (x + att(x) + mlp(x + att(x)), "there is no LayerNorm at all: each sub-layer is followed by one, "
                                           "x = ln_1(x + attn(x)), then x = ln_2(x + mlp(x))"),
            (h1 + mlp(h1), "you left out the second LayerNorm: after the FFN's residual addition comes ln_2, "
                           "x = ln_2(x + mlp(x))"),
            (ln2(x + att(x) + mlp(x + att(x))), "you left out the first LayerNorm: x = ln_1(x + attn(x)) "
                                                "before the FFN reads x"),
            ((lambda h: h + ln2(mlp(h)))(x + ln1(att(x))),
             "you normalized the sub-layer's output before the residual addition, x + LN(f(x)); post-LN "
             "normalizes the sum: LN(x + f(x))"),
            ((lambda h: ln2(h + mlp(h)))(ln1(x) + att(ln1(x))),
             "you normalized x before the residual addition, LN(x) + f(LN(x)); post-LN adds first and "
             "normalizes the sum: LN(x + f(x))"),
            (ln2(h1 + mlp(ln2(h1))), "the FFN reads x itself, not ln_2(x): in the post-LN block the norm "
                                     "comes after the addition, x = ln_2(x + mlp(x))"),
            (ln1(h1 + mlp(h1)), "you used ln_1 twice; the FFN's sum is normalized by its own LayerNorm, ln_2"),
            (ln2(x + mlp(x)), "you forgot the attention sub-layer: x = ln_1(x + attn(x))"),
            (h1, "you forgot the FFN sub-layer: x = ln_2(x + mlp(x))"),
        ], "your block differs from ln_1(x + attn(x)) then ln_2(x + mlp(x))", atol=1e-4)
