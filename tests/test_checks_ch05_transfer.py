"""Exercise 05.5, a whole training loop: the honest loop passes, on the visible and on hidden inputs,
and each mistake planted in it fails with the message that names it, on both too."""

from __future__ import annotations

import pytest
import torch

from minigpt.checks import CheckFailed, ch05, hidden_inputs


def _loop(kind="ref"):
    def my_train(model, batches, lrs, clip):
        if kind != "eval":
            model.train()
        opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
        losses = []
        for (x, y), lr in zip(batches, lrs):
            if kind == "opt_per_step":
                opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
            if kind != "no_lr":
                for group in opt.param_groups:
                    group["lr"] = lr
            if kind not in ("no_zero", "step_first"):
                opt.zero_grad()
            _, loss = model(x, y)
            if kind == "step_first":
                opt.step()
            loss.backward()
            if kind not in ("no_clip", "clip_after"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if kind != "step_first":
                opt.step()
            if kind == "clip_after":
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            losses.append(loss if kind == "tensor" else loss.item() + (0.5 if kind == "bad_loss" else 0.0))
        return losses[:-1] if kind == "short" else losses
    return my_train


OFFSETS = (0, 101, 7919)  # 0: the visible inputs


def _check(fn, offset):
    if offset == 0:
        ch05.check_train_loop(fn)
    else:
        with hidden_inputs(offset):
            ch05.check_train_loop(fn)


@pytest.mark.parametrize("offset", OFFSETS)
def test_the_honest_loop_passes(offset, capsys):
    _check(_loop(), offset)
    assert capsys.readouterr().out == ("✅ training loop: train mode, one AdamW, and per step lr → zero_grad → "
                                       "forward → backward → clip → step\n" if offset == 0 else "")


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("kind, fragment", [
    ("no_zero", "gradients accumulate"),
    ("clip_after", "clipped after opt.step()"),
    ("step_first", "before loss.backward()"),  # the second step's update breaks the first backward
    ("eval", "stayed in eval mode"),
    ("opt_per_step", "new AdamW at every step"),
    ("no_lr", "learning rate never changed"),
    ("no_clip", "no gradient clipping"),
    ("tensor", "loss.item()"),
    ("bad_loss", "the losses are not"),
    ("short", "one loss per step"),
])
def test_each_mistake_is_named(kind, fragment, offset):
    with pytest.raises(CheckFailed) as info:
        _check(_loop(kind), offset)
    assert fragment in str(info.value), str(info.value)
    assert info.value.args[0].startswith("❌")


@pytest.mark.parametrize("set_to_none, fragment", [(True, "did not change"), (False, "before loss.backward()")])
def test_step_before_backward_after_zero_grad_is_named(set_to_none, fragment):
    """After zero_grad(set_to_none=True) step() skips every weight: nothing changes; after
    zero_grad(set_to_none=False) it decays them in place and backward refuses."""
    def my_train(model, batches, lrs, clip):
        model.train()
        opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
        losses = []
        for (x, y), lr in zip(batches, lrs):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=set_to_none)
            _, loss = model(x, y)
            opt.step()
            loss.backward()
            losses.append(loss.item())
        return losses

    for offset in OFFSETS:
        with pytest.raises(CheckFailed, match=fragment.replace("(", "\\(").replace(")", "\\)")):
            _check(my_train, offset)


def test_a_crash_is_reported_and_train_is_forbidden():
    with pytest.raises(CheckFailed, match="ZeroDivisionError"):
        ch05.check_train_loop(lambda m, b, lrs, c: 1 / 0)
    assert "minigpt.train.train" in ch05.check_train_loop.forbidden
