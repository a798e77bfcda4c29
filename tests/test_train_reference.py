"""The training loop against a reference that shares none of its code.

`minigpt.train.train` is checked against a loop written here from the documented recipe only:
batches drawn by an independently written indexer (window starts from NumPy's generator seeded
by the pair (seed, batch number), as ``BatchSampler`` documents), gradient accumulation as a
mean over micro-batches, gradient clipping by the global norm, the learning-rate schedule
computed by hand from ``TrainConfig``'s docstring, and AdamW written out in plain tensor
operations with explicit beta1, beta2, eps and decoupled weight decay on matrices only. The
reference calls none of ``configure_optimizer``, ``BatchSampler``, ``lr_at`` or
``clip_grad_norm_`` (two small tests below compare the hand schedule with ``lr_at`` and the hand
indexer with ``BatchSampler``, so that a wrong constant here cannot hide).

Both sides run the model in float64 (the loss itself is taken in float32 on both, as ``lm_loss``
does), so the reference agrees to ~1e-15 (measured below) and the tolerances can be tight: each
wrong hyperparameter (beta2, accumulation scale, batch stream) moves the weights by 5e-4 or
more, far outside them. The model's forward pass itself is tested elsewhere (against Hugging
Face GPT-2 and SDPA); here it is only the function being optimised.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig
from minigpt.data import BatchSampler
from minigpt.train import TrainConfig, train

TEXT = "to be or not to be, that is the question. whether 'tis nobler in the mind to suffer " * 12
CHARS = sorted(set(TEXT))
DATA = torch.tensor([CHARS.index(c) for c in TEXT], dtype=torch.long)
BLOCK, BATCH, ACCUM, STEPS = 16, 4, 2, 3
# Hyperparameters away from the defaults (beta2 0.99, weight decay 0.1 ...) so that a constant
# hard-wired in place of the config's value shows. grad_clip 1.1 sits between the reference's
# gradient norms (1.25 at step 0, 0.98 and 0.90 after): clipping acts on one step only, so a
# gradient off by a constant factor (which AdamW alone would almost cancel) changes the weights.
CFG = dict(max_iters=STEPS, batch_size=BATCH, grad_accum=ACCUM, learning_rate=1e-2, min_lr=1e-3,
           warmup_iters=1, weight_decay=0.5, beta1=0.8, beta2=0.95, grad_clip=1.1, eval_interval=0,
           seed=4321, device="cpu", dtype="float32", fused="auto")
# The schedule, by hand from TrainConfig's docstring: warmup lr*(s+1)/(warmup+1) for s < warmup,
# then a cosine from lr (s = warmup) to min_lr (s = max_iters): ratio (s - 1) / (3 - 1).
LRS = [1e-2 * 1 / 2, 1e-3 + 0.5 * (1 + math.cos(0.0)) * 9e-3, 1e-3 + 0.5 * (1 + math.cos(math.pi / 2)) * 9e-3]
EPS = 1e-8  # torch.optim.AdamW's default, which the package does not change

# Measured on a clean tree (torch 2.13, CPU, 1 thread): max |package - reference| after 3 steps
# is 6.0e-15 over the weights (which move by up to 2.1e-2) and 5.6e-17 over the accumulated
# gradients. The tolerances below are >= 1e4x those. Planted bugs, measured: beta2 hard-wired to
# 0.999 moves the weights by 5.0e-4 (gradient at step 2 by 8.6e-4); no division by grad_accum
# 1.2e-3 (gradients 0.30, x2); micro-batches that collide across steps 2.5e-2; BatchSampler
# seeded by seed + step 4.0e-2.
WEIGHT_ATOL = 1e-10
GRAD_ATOL = 1e-12


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest's _quiet restores the count afterwards


def _model() -> GPT:
    torch.manual_seed(7)
    cfg = GPTConfig(vocab_size=len(CHARS), block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    return GPT(cfg).double()


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, taken in float32 as the package's objective documents
    (``lm_loss``: logits cast to float32 so that bfloat16 training stays stable)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


def window_starts(seed: int, k: int, n_tokens: int, block: int, batch: int) -> list[int]:
    """Batch k's window starts, written from BatchSampler's contract: NumPy's default generator
    seeded by the pair [seed, k], ``batch`` integers uniform in [0, n_tokens - block)."""
    return [int(s) for s in np.random.default_rng([seed, k]).integers(0, n_tokens - block, size=batch)]


def batch_by_hand(data: torch.Tensor, seed: int, k: int, block: int, batch: int):
    starts = window_starts(seed, k, len(data), block, batch)
    x = torch.stack([data[s:s + block] for s in starts])
    y = torch.stack([data[s + 1:s + block + 1] for s in starts])
    return x, y


def reference_run(model: GPT, cfg: dict, record_grads: list | None = None) -> None:
    """The training loop of TrainConfig's docstring, by hand; updates ``model`` in place."""
    params = dict(model.named_parameters())  # the tied lm_head.weight appears once, as wte
    state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in params.items()}
    b1, b2, wd, clip = cfg["beta1"], cfg["beta2"], cfg["weight_decay"], cfg["grad_clip"]
    for step in range(cfg["max_iters"]):
        grads = {n: torch.zeros_like(p) for n, p in params.items()}
        for micro in range(cfg["grad_accum"]):
            x, y = batch_by_hand(DATA, cfg["seed"], step * cfg["grad_accum"] + micro, BLOCK, cfg["batch_size"])
            loss = ce(model(x)[0], y)
            g = torch.autograd.grad(loss, list(params.values()))
            for n, gi in zip(params, g):
                grads[n] += gi / cfg["grad_accum"]  # the mean over micro-batches
        if record_grads is not None:
            record_grads.append({n: g.clone() for n, g in grads.items()})
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        coef = min(1.0, clip / (norm + 1e-6)) if clip > 0 else 1.0
        lr, t = LRS[step], step + 1
        with torch.no_grad():
            for n, p in params.items():
                g = grads[n] * coef
                m, v = state[n]
                if p.dim() >= 2:
                    p.mul_(1 - lr * wd)  # decoupled weight decay, matrices and embeddings only
                m.mul_(b1).add_((1 - b1) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + EPS))


def package_run(model: GPT, cfg: dict) -> tuple[list[dict], object]:
    """Run minigpt.train; returns the accumulated gradient seen at the end of each step's backward."""
    names = {id(p): n for n, p in model.named_parameters()}
    seen: dict[str, list] = {n: [] for n in names.values()}
    hooks = [p.register_post_accumulate_grad_hook(lambda p: seen[names[id(p)]].append(p.grad.clone()))
             for p in model.parameters()]
    try:
        hist = train(model, DATA, None, TrainConfig(**cfg))
    finally:
        for h in hooks:
            h.remove()
    accum = cfg["grad_accum"]
    per_step = [{n: g[(s + 1) * accum - 1] for n, g in seen.items()} for s in range(cfg["max_iters"])]
    first_micro = [{n: g[s * accum] for n, g in seen.items()} for s in range(cfg["max_iters"])]
    return per_step, (hist, first_micro)


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_schedule_constants_are_the_documented_ones():
    from minigpt.train import lr_at

    # the hand-written LRS must describe CFG; a typo here would otherwise pass silently
    assert LRS == pytest.approx([5e-3, 1e-2, 5.5e-3])
    assert [lr_at(s, TrainConfig(**CFG)) for s in range(STEPS)] == pytest.approx(LRS, rel=1e-12)


def test_clipping_is_exercised():
    """The reference run's gradient norms straddle grad_clip: some steps are clipped, some not,
    so that the clipping code and an accumulation scale that is off by a constant both matter."""
    grads: list = []
    reference_run(_model(), CFG, grads)
    norms = [math.sqrt(sum(float((g * g).sum()) for g in gs.values())) for gs in grads]
    assert any(n > CFG["grad_clip"] for n in norms), norms
    assert any(n < CFG["grad_clip"] for n in norms), norms


def test_training_loop_equals_handwritten_adamw():
    """Weights after 3 steps (2 micro-batches each), and every accumulated gradient, equal the
    hand-written loop's; also each micro-batch contributes loss/grad_accum to the gradient."""
    ref, pkg = _model(), _model()
    ref_grads: list = []
    reference_run(ref, CFG, ref_grads)
    pkg_grads, (_, first_micro) = package_run(pkg, CFG)
    for s in range(STEPS):
        assert max_diff(pkg_grads[s], ref_grads[s]) < GRAD_ATOL, f"step {s}: accumulated gradient"
    # micro-batch 0 alone contributes (its loss gradient) / grad_accum
    m0 = _model()  # at step 0 the weights are the initial ones
    x, y = batch_by_hand(DATA, CFG["seed"], 0, BLOCK, BATCH)
    g = dict(zip(dict(m0.named_parameters()), torch.autograd.grad(ce(m0(x)[0], y), list(m0.parameters()))))
    assert max_diff(first_micro[0], {n: gi / ACCUM for n, gi in g.items()}) < GRAD_ATOL
    wdiff = max(float((p - q).abs().max()) for p, q in zip(pkg.state_dict().values(), ref.state_dict().values()))
    assert wdiff < WEIGHT_ATOL
    moved = max(float((p - q).abs().max()) for p, q in zip(ref.state_dict().values(), _model().state_dict().values()))
    assert moved > 1e-3  # training did move the weights: the comparison is not between two copies of the init


def test_train_loss_probe_uses_its_own_fixed_batches():
    """The train-loss estimate at step 0 is the mean loss over ``train_eval_batches`` fixed batches of
    a stream distinct from the training batches (seed + 1), computed here with the hand indexer."""
    cfg = {**CFG, "max_iters": 1, "eval_interval": 1, "train_eval_batches": 3}
    model = _model()
    hist = train(model, DATA, None, TrainConfig(**cfg))
    ref = _model().eval()
    with torch.no_grad():
        losses = []
        for i in range(3):
            x, y = batch_by_hand(DATA, cfg["seed"] + 1, i, BLOCK, BATCH)
            losses.append(float(ce(ref(x)[0], y)))
        training = []
        for i in range(3):
            x, y = batch_by_hand(DATA, cfg["seed"], i, BLOCK, BATCH)
            training.append(float(ce(ref(x)[0], y)))
    # measured: 0.0 difference; a probe that reads the training stream instead is off by 2.4e-3
    assert hist.train_loss[0] == pytest.approx(sum(losses) / 3, abs=1e-12)
    assert abs(sum(training) / 3 - sum(losses) / 3) > 1e-4  # the two streams differ measurably


@pytest.mark.parametrize("seed", [0, 1, 1337])
def test_batch_sampler_matches_hand_indexer_and_streams_do_not_collide(seed):
    n = len(DATA)
    s = BatchSampler(DATA, BLOCK, BATCH, seed=seed)
    for k in range(6):
        x, y = s.batch(k)
        hx, hy = batch_by_hand(DATA, seed, k, BLOCK, BATCH)
        assert torch.equal(x, hx) and torch.equal(y, hy)
    # every (seed, step) pair is its own stream: neighbours along either axis never coincide
    starts = {(a, k): tuple(window_starts(a, k, n, BLOCK, 8)) for a in (seed, seed + 1) for k in range(6)}
    assert len(set(starts.values())) == len(starts)
    other = BatchSampler(DATA, BLOCK, 8, seed=seed + 1)
    mine = BatchSampler(DATA, BLOCK, 8, seed=seed)
    for k in range(5):
        assert not torch.equal(mine.batch(k + 1)[0], other.batch(k)[0])  # seed + step would collide here
        assert not torch.equal(mine.batch(k)[0], mine.batch(k + 1)[0])
