"""Checks for chapter 05, pretraining: the compute estimate, the learning-rate schedule, one
training step and a whole training loop. Each compares the learner's answer with :mod:`minigpt` and names the usual mistake."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..config import GPTConfig
from ..model import GPT
from ..train import TrainConfig, lr_at
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_training_flops", "check_lr_schedule", "check_train_step", "check_train_loop", "CheckFailed"]


def _call(fn: Callable, *args, what: str):
    with torch.random.fork_rng(devices=[]):
        try:
            return fn(*args)
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - a crash becomes a friendly message
            fail(f"{what} raised {type(e).__name__}: {e}")


def _num(x, what: str) -> float:
    try:
        return float(x.item() if isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError):
        fail(f"{what} should be a number, got {type(x).__name__}")
        raise


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isfinite(a) and abs(a - b) <= rel * max(1.0, abs(b))


def check_training_flops(fn: Callable) -> None:
    """Check ``fn(n_params, iters, batch_size, block_size) -> FLOPs`` = 6 · N · D, with
    D = iters · batch_size · block_size the number of training tokens."""
    cases = ((109_056, 300, 16, 64), (124_000_000, 19_073, 512, 1024))
    if is_hidden():
        r = draw(51)
        cases = tuple((r.randint(10_000, 10**9), r.randint(1, 50_000), r.randint(1, 512), r.randint(8, 4096))
                      for _ in range(3))
    for n, it, b, t in cases:
        got = _num(_call(fn, n, it, b, t, what="your training_flops"), "the FLOP count")
        d = it * b * t
        ref = 6 * n * d
        if _close(got, ref):
            continue
        for value, msg in (
            (2 * n * d, "2·N·D counts the forward pass only; the backward pass costs about twice the "
                        "forward, so training is 6·N·D"),
            (4 * n * d, "4·N·D: add the forward pass (2·N·D) to the backward pass (4·N·D): 6·N·D"),
            (6 * n * it, "D is the number of tokens, not of steps: D = iters · batch_size · block_size"),
            (6 * n * it * b, "D counts tokens: each of the batch_size windows holds block_size tokens"),
            (6 * n * it * t, "D counts tokens: each step sees batch_size windows of block_size tokens"),
            (6 * n + d, "multiply, don't add: FLOPs = 6 · N · D"),
        ):
            if _close(got, value):
                fail(msg)
        fail(f"for N={n:,} and {it} steps of {b}×{t} tokens expected 6·N·D = {ref:.4g} FLOPs, got {got:.4g}")
    passed("training FLOPs ≈ 6 · N · D (2 for the forward pass, 4 for the backward pass)")


@forbids('minigpt.train.lr_at')
def check_lr_schedule(fn: Callable) -> None:
    """Check ``fn(step, max_lr, min_lr, warmup, decay_iters) -> lr`` against
    :func:`minigpt.train.lr_at`: linear warmup to max_lr (lr = max_lr·(step+1)/(warmup+1)), then a
    cosine from max_lr to min_lr at ``decay_iters``, and min_lr after that."""
    max_lr, min_lr, warmup, decay = 1e-3, 1e-4, 10, 100
    steps = [0, 5, 9, 10, 30, 55, 80, 99, 100, 150]
    if is_hidden():  # other rates and lengths; the boundaries and points in between
        r = draw(52)
        max_lr = r.choice([3e-4, 6e-4, 2e-3, 1e-2])
        min_lr, warmup = max_lr * r.choice([0.02, 0.05, 0.1, 0.3]), r.randint(1, 40)  # min_lr > 0: 'decays to 0' shows
        decay = warmup + r.randint(20, 400)
        steps = sorted({0, warmup - 1, warmup, warmup + 1, decay - 1, decay, decay + 1, decay + r.randint(2, 99),
                        *(r.randint(warmup, decay) for _ in range(4)), r.randrange(warmup)})
    cfg = TrainConfig(learning_rate=max_lr, min_lr=min_lr, warmup_iters=warmup, max_iters=decay)
    got = [_num(_call(fn, s, max_lr, min_lr, warmup, decay, what="your lr schedule"), "the learning rate")
           for s in steps]
    ref = [lr_at(s, cfg) for s in steps]
    if all(_close(g, r, 1e-6) for g, r in zip(got, ref)):
        passed("learning rate: linear warmup, cosine decay to min_lr, then constant")
        return
    bad = [(s, g, r) for s, g, r in zip(steps, got, ref) if not _close(g, r, 1e-6)]
    s, g, r = bad[0]
    if s >= warmup:
        ratio = (s - warmup) / (decay - warmup)
        if s <= decay and _close(g, 0.5 * (1 + math.cos(math.pi * ratio)) * max_lr):
            fail(f"at step {s} the cosine decays to 0, not to min_lr: use "
                 "min_lr + 0.5·(1 + cos(π·ratio))·(max_lr − min_lr)")
        if s > decay and _close(g, 0.0):
            fail(f"after decay_iters (step {s}) the rate should stay at min_lr, not drop to 0")
        if s <= decay and _close(g, min_lr + 0.5 * (1 + math.cos(math.pi * s / decay)) * (max_lr - min_lr)):
            fail(f"at step {s}: the cosine should start after the warmup, ratio = (step − warmup)/(decay_iters − warmup)")
        if _close(g, min_lr + (1 - ratio) * (max_lr - min_lr)):
            fail(f"at step {s} your decay is linear; use a cosine, 0.5·(1 + cos(π·ratio))")
        if _close(g, max_lr):
            fail(f"at step {s} the rate is still max_lr: decay it along a cosine after the warmup")
    else:
        if _close(g, max_lr * s / warmup):
            fail(f"at step {s} the warmup gives {g:.4g}: lr = max_lr·step/warmup starts at 0, so the first "
                 "step does nothing; use max_lr·(step+1)/(warmup+1) as minigpt does")
        if _close(g, max_lr):
            fail(f"no warmup: at step {s} the rate should still be rising, max_lr·(step+1)/(warmup+1)")
    fail(f"at step {s} expected lr {r:.4g}, got {g:.4g}")


# Weights after a few AdamW steps, answer vs reference. The grader runs the answer in another
# process (its worker), with another thread count: in float32 the two differed by up to 7.18e-5
# (a CI run, 2026-12-01, hidden case of 05.5), so the toy model is float64 (see _toy), where they
# differ by about 1e-13. The mistakes below differ by 1e-3 or more.
_STEP_TOL = 5e-5


def _toy(seed: int = 5, dropout: float = 0.0) -> GPT:
    """A tiny GPT in float64: the learner's steps and the reference's then agree to about 1e-13 in
    any process and thread count (in float32, AdamW, which divides each gradient by its own size,
    grew rounding differences to 7e-5 in a few steps)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeded(seed))
        return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=dropout)).double()


def _ref_step(model, opt, x, y, clip):
    opt.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


@forbids('minigpt.train.train')
def check_train_step(fn: Callable) -> None:
    """Check ``fn(model, opt, x, y, clip) -> loss``: one training step. Forward with targets, loss,
    zero the old gradients, backward, clip the gradient norm to ``clip``, optimizer step; return
    the loss (a float) computed before the update. It is run for three steps on a toy model."""
    g = torch.Generator().manual_seed(seeded(3))
    shape, clip = (4, 9), 0.05  # a small clip, so that clipping always acts
    if is_hidden():
        r = draw(53)
        shape, clip = (r.randint(1, 6), r.randint(2, 9)), r.choice([0.02, 0.05, 0.1])
    batches = [torch.randint(0, 13, shape, generator=g) for _ in range(3)]
    models, losses = [], []
    for who in ("ref", "you"):
        m = _toy()
        m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
        ls = []
        for b in batches:
            x, y = b[:, :-1], b[:, 1:]
            if who == "ref":
                ls.append(_ref_step(m, opt, x, y, clip))
            else:
                ls.append(_num(_call(fn, m, opt, x, y, clip, what="your train_step"), "the returned loss"))
        models.append(m)
        losses.append(ls)
    ref_m, you_m = models
    diff = max((a - b).abs().max().item() for a, b in zip(ref_m.parameters(), you_m.parameters()))
    if diff < _STEP_TOL and all(_close(a, b, 1e-5) for a, b in zip(*losses)):
        passed("training step: zero_grad → forward → loss → backward → clip → AdamW step")
        return
    if diff < _STEP_TOL:
        fail("the weights are right but the returned loss is not: return loss.item() from this step's "
             "forward pass (before the update)")
    first = _toy()
    if all((a - b).abs().max().item() < 1e-7 for a, b in zip(first.parameters(), you_m.parameters())):
        if all(q.grad is None or not q.grad.any() for q in you_m.parameters()):
            fail("the weights did not change and the gradients are gone: you called opt.zero_grad() between "
                 "loss.backward() and opt.step(), which wipes the gradients before the update; zero them at "
                 "the start of the step, before the forward pass")
        fail("the weights did not change: call opt.step() after loss.backward()")
    # replay the usual mistakes and compare
    def replay(step):
        m = _toy()
        m.train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
        for b in batches:
            step(m, opt, b[:, :-1], b[:, 1:])
        return max((a - c).abs().max().item() for a, c in zip(m.parameters(), you_m.parameters()))

    def no_zero(m, opt, x, y):
        _, loss = m(x, y); loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), clip); opt.step()

    def no_clip(m, opt, x, y):
        opt.zero_grad(); _, loss = m(x, y); loss.backward(); opt.step()

    def clip_after(m, opt, x, y):
        opt.zero_grad(); _, loss = m(x, y); loss.backward(); opt.step()
        torch.nn.utils.clip_grad_norm_(m.parameters(), clip)

    def clip_value(m, opt, x, y):
        opt.zero_grad(); _, loss = m(x, y); loss.backward()
        torch.nn.utils.clip_grad_value_(m.parameters(), clip); opt.step()

    grads = [q.grad.norm() for q in you_m.parameters() if q.grad is not None]
    grad_norm = torch.stack(grads).norm().item() if grads else 0.0
    if replay(no_clip) < _STEP_TOL and 0 < grad_norm <= clip * 1.001:
        fail("you clipped after opt.step(), so it had no effect on the update: clip between "
             "backward and step")
    for step, msg in (
        (no_zero, "gradients accumulate across steps: call opt.zero_grad() before loss.backward() "
                  "(PyTorch adds new gradients to the old ones)"),
        (no_clip, "no gradient clipping: call torch.nn.utils.clip_grad_norm_(model.parameters(), clip) "
                  "after backward and before opt.step()"),
        (clip_after, "you clipped after opt.step(), so it had no effect on the update: clip between "
                     "backward and step"),
        (clip_value, "you clipped each gradient value; clip the global norm with clip_grad_norm_"),
    ):
        if replay(step) < _STEP_TOL:
            fail(msg)
    fail(f"after three steps your weights differ from the reference (largest difference {diff:.3g}); "
         "the order is zero_grad, forward, backward, clip_grad_norm_, step")


class _KeyedDropout(torch.nn.Module):
    """A model whose dropout masks are keyed by its count of forward passes, as :func:`minigpt.train.train`
    keys them by step: a loop run in another process (the grader's worker) draws the same masks."""

    def __init__(self, gpt: GPT, seed: int) -> None:
        super().__init__()
        self.gpt, self.seed = gpt, seed
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x, targets=None):
        if self.training:
            torch.manual_seed(self.seed + int(self.calls))
        self.calls += 1
        return self.gpt(x, targets)


def _ref_loop(model, batches, lrs, clip):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    losses = []
    for (x, y), lr in zip(batches, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        losses.append(_ref_step(model, opt, x, y, clip))
    return losses


def _loop_mistakes(clip: float) -> tuple:
    """Wrong loops, each ``(loop(model, batches, lrs), the message that names its mistake)``."""
    def loop(step, *, train_mode=True, one_opt=True, set_lr=True):
        def run(model, batches, lrs):
            if train_mode:
                model.train()
            opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
            for (x, y), lr in zip(batches, lrs):
                if not one_opt:
                    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
                for group in opt.param_groups:
                    group["lr"] = lr if set_lr else group["lr"]
                step(model, opt, x, y)
        return run

    def ok(m, opt, x, y):
        _ref_step(m, opt, x, y, clip)

    def no_zero(m, opt, x, y):
        _, loss = m(x, y); loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), clip); opt.step()

    def no_clip(m, opt, x, y):  # also what clipping after opt.step() does to the weights
        opt.zero_grad(); _, loss = m(x, y); loss.backward(); opt.step()

    return (
        (loop(no_zero), "gradients accumulate across steps: call opt.zero_grad() at the start of every step "
                        "(PyTorch adds new gradients to the old ones)"),
        (loop(ok, train_mode=False), "the model stayed in eval mode, so dropout was off while training: "
                                     "call model.train() before the loop"),
        (loop(ok, one_opt=False), "you built a new AdamW at every step, which throws away its running averages "
                                  "m and v: build the optimizer once, before the loop"),
        (loop(ok, set_lr=False), "the learning rate never changed from AdamW's default: before each step set "
                                 "group['lr'] = lrs[i] for every group in opt.param_groups"),
        (loop(no_clip), None),  # no clipping, or clipping after opt.step(): the gradients left tell which
    )


@forbids('minigpt.train.train')
def check_train_loop(fn: Callable) -> None:
    """Check ``fn(model, batches, lrs, clip) -> losses``: a whole training loop. Training mode, one
    AdamW (weight decay 0.1) for the run, and for each batch ``(x, y)`` at learning rate ``lrs[i]``:
    zero_grad, forward with targets, backward, clip the gradient norm to ``clip``, step; the losses
    are returned as a list of floats. It is compared with a reference loop on a toy model with
    dropout (its masks keyed by the forward pass), handed over in eval mode."""
    g = torch.Generator().manual_seed(seeded(4))
    steps, shape, clip, dropout = 5, (4, 9), 0.05, 0.1  # a small clip, so that clipping acts
    if is_hidden():  # other lengths, batch shapes, clips and dropout rates
        r = draw(54)
        steps, shape = r.randint(2, 8), (r.randint(1, 6), r.randint(3, 9))
        clip, dropout = r.choice([0.02, 0.03, 0.1]), r.choice([0.1, 0.2, 0.3])
    batches = [(b[:, :-1], b[:, 1:]) for b in (torch.randint(0, 13, shape, generator=g) for _ in range(steps))]
    lrs = [float(v) for v in torch.empty(steps).uniform_(3e-3, 3e-2, generator=g)]

    def run(loop, *args):  # a fresh toy model in eval mode, the same dropout masks for every loop
        m = _KeyedDropout(_toy(dropout=dropout), seeded(11)).eval()
        with torch.random.fork_rng(devices=[]):
            out = loop(m, *args)
        return m, out

    ref_m, ref_losses = run(_ref_loop, batches, lrs, clip)
    def attempt(m, *args):
        try:
            return fn(m, *args)
        except RuntimeError as e:  # step() changed weights that backward still needed
            if "modified by an inplace operation" in str(e):
                fail("opt.step() changed the weights before loss.backward() used them, and PyTorch refused: "
                     "backward first, then clip, then step")
            raise

    you_m, got = run(lambda m, *a: _call(attempt, m, *a, what="your training loop"), batches, lrs, clip)
    if not isinstance(got, (list, tuple)):
        fail(f"return the list of the losses, one per step; got {type(got).__name__}")
    if any(isinstance(v, torch.Tensor) for v in got):
        fail("your losses are tensors: append loss.item(), a float (a tensor also keeps its step's whole "
             "computation graph in memory)")
    if len(got) != steps:
        fail(f"return one loss per step: {steps} batches, {len(got)} losses")

    def distance(m):
        return max((a - b).abs().max().item() for a, b in zip(m.parameters(), you_m.parameters()))

    diff = distance(ref_m)
    losses_ok = all(_close(_num(a, "each loss"), b, 1e-5) for a, b in zip(got, ref_losses))
    if diff < _STEP_TOL and losses_ok:
        passed("training loop: train mode, one AdamW, and per step lr → zero_grad → forward → backward → clip → step")
        return
    if diff < _STEP_TOL:
        fail("the weights are right but the losses are not: append loss.item() of each step's forward pass, "
             "before the update")
    if distance(_toy(dropout=dropout)) < 1e-7:
        fail("the weights did not change: each step must call opt.step() after loss.backward(), and zero the "
             "gradients at the start of the step, not between backward and step")
    for loop, msg in _loop_mistakes(clip):
        if distance(run(loop, batches, lrs)[0]) < _STEP_TOL:
            if msg is not None:
                fail(msg)
            grads = [q.grad.norm() for q in you_m.parameters() if q.grad is not None]
            left = torch.stack(grads).norm().item() if grads else 0.0  # the last step's gradient, as you left it
            if 0 < left <= clip * 1.001:
                fail("you clipped after opt.step(), so clipping had no effect on the updates: clip between "
                     "backward and step")
            fail("no gradient clipping: call torch.nn.utils.clip_grad_norm_(model.parameters(), clip) "
                 "after backward and before opt.step()")
    fail(f"after {steps} steps your weights differ from the reference (largest difference {diff:.3g}); "
         "per step: set the lr, zero_grad, forward, backward, clip_grad_norm_, step")
