"""The causal exercises of chapter 08 (08.4 ablation, 08.5 induction head, 08.6 patching): the
reference solutions pass, on the visible and on several hidden draws, and the usual mistakes fail
with a message that names them. The checks' references are computed without forward hooks (W_O
columns set to zero, blocks run one by one, loops over queries), so a hook-based answer is checked
against another method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minigpt.checks import ch08, hidden_inputs
from tests.check_helpers import fails_with, failure, passes

OFFSETS = [7919, 31, 4242]


# ---------------------------------------------------------------- 08.4 ablation

def _loss(model, idx):
    with torch.no_grad():
        logits = model(idx)[0]
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), idx[:, 1:]).item()


def _ablation(slicer=None, sign=1.0, remove=True, ret="change", swap=False):
    def fn(model, idx, layer, head):
        if swap:
            layer, head = head, layer
        hs = model.config.n_embd // model.config.n_head

        def hook(module, args):
            z = args[0].clone()
            z[..., (slicer or (lambda h: slice(h * hs, (h + 1) * hs)))(head)] = 0
            return (z,)

        clean = _loss(model, idx)
        handle = model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(hook)
        ablated = _loss(model, idx)
        if remove:
            handle.remove()
        return ablated if ret == "ablated" else sign * (ablated - clean)
    return fn


def _ablation_output_slice(model, idx, layer, head):
    hs = model.config.n_embd // model.config.n_head

    def hook(module, args, out):
        out = out.clone()
        out[..., head * hs:(head + 1) * hs] = 0
        return out

    clean = _loss(model, idx)
    handle = model.transformer.h[layer].attn.c_proj.register_forward_hook(hook)
    try:
        return _loss(model, idx) - clean
    finally:
        handle.remove()


def _ablation_forgot_return(model, idx, layer, head):
    hs = model.config.n_embd // model.config.n_head

    def hook(module, args):
        z = args[0].clone()
        z[..., head * hs:(head + 1) * hs] = 0  # edits a copy and returns nothing: no effect

    clean = _loss(model, idx)
    handle = model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(hook)
    try:
        return _loss(model, idx) - clean
    finally:
        handle.remove()


def test_ablation_reference_passes(capsys):
    passes(ch08.check_ablation_effect, _ablation(), capsys)
    for off in OFFSETS:
        with hidden_inputs(off):
            ch08.check_ablation_effect(_ablation())


def test_ablation_mistakes_fail():
    fails_with(ch08.check_ablation_effect, _ablation(sign=-1.0), "sign")
    fails_with(ch08.check_ablation_effect, _ablation(ret="ablated"), "ablated loss itself")
    fails_with(ch08.check_ablation_effect, _ablation(slicer=lambda h: slice(None)), "all 4 heads")
    fails_with(ch08.check_ablation_effect, _ablation_output_slice, "output")
    fails_with(ch08.check_ablation_effect, _ablation_forgot_return, "changed nothing")
    fails_with(ch08.check_ablation_effect, _ablation(remove=False), "handle.remove()")
    fails_with(ch08.check_ablation_effect, _ablation(swap=True), "swapped")


def test_ablation_mistakes_fail_hidden():
    for off in OFFSETS:
        assert "sign" in failure(ch08.check_ablation_effect, _ablation(sign=-1.0), off)
        assert "output" in failure(ch08.check_ablation_effect, _ablation_output_slice, off)


def test_ablation_forbids_the_package():
    from minigpt.interpret import ablate

    def uses_package(model, idx, layer, head):
        clean = _loss(model, idx)
        with ablate(model, heads=[(layer, head)]):
            return _loss(model, idx) - clean

    msg = failure(ch08.check_ablation_effect, uses_package)
    assert "ablate" in msg


# ---------------------------------------------------------------- 08.5 induction head

def _head(key_offset=1, average_all_queries=False, swap=False):
    def fn(weights):
        T = weights.shape[-1]
        half = T // 2
        q = torch.arange(half, T)
        if key_offset is None:  # previous-token score instead
            s = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1).mean(-1).mean(0)
        elif average_all_queries:
            q = torch.arange(T)
            k = (q - half + key_offset).clamp(min=0)
            s = weights[..., q, k].mean(-1).mean(0)
        else:
            s = weights[..., q, q - half + key_offset].mean(-1).mean(0)
        l, h = divmod(int(s.argmax()), s.shape[1])
        return (h, l) if swap else (l, h)
    return fn


def test_induction_reference_passes(capsys):
    passes(ch08.check_induction_head, _head(), capsys)
    for off in OFFSETS:
        with hidden_inputs(off):
            ch08.check_induction_head(_head())


def test_induction_mistakes_fail():
    fails_with(ch08.check_induction_head, _head(key_offset=0), "off by one")
    fails_with(ch08.check_induction_head, _head(key_offset=None), "previous-token head")
    fails_with(ch08.check_induction_head, _head(swap=True), "swapped")
    fails_with(ch08.check_induction_head, lambda w: 3, "pair")
    for off in OFFSETS:
        assert "off by one" in failure(ch08.check_induction_head, _head(key_offset=0), off)
        assert "previous-token" in failure(ch08.check_induction_head, _head(key_offset=None), off)


# ---------------------------------------------------------------- 08.6 patching

def _patch(layer_shift=0, pos_shift=0, all_positions=False, reverse=False, prob=False, remove=True):
    def fn(model, clean, corrupted, layer, position, target):
        src, dst = (corrupted, clean) if reverse else (clean, corrupted)
        block = model.transformer.h[layer + layer_shift] if layer + layer_shift < model.config.n_layer \
            else model.transformer.ln_f
        where = slice(None) if all_positions else position + pos_shift
        saved = {}

        def keep(module, args):
            saved["x"] = args[0].clone()

        def put(module, args):
            x = args[0].clone()
            x[:, where] = saved["x"][:, where]
            return (x,) + tuple(args[1:])

        with torch.no_grad():
            h = block.register_forward_pre_hook(keep)
            model(src)
            h.remove()
            h = block.register_forward_pre_hook(put)
            logits = model(dst)[0]
            if remove:
                h.remove()
        lp = torch.log_softmax(logits[:, -1], -1)[:, target].mean()
        return lp.exp().item() if prob else lp.item()
    return fn


def test_patch_reference_passes(capsys):
    passes(ch08.check_patch_position, _patch(), capsys)
    for off in OFFSETS:
        with hidden_inputs(off):
            ch08.check_patch_position(_patch())


def test_patch_mistakes_fail():
    fails_with(ch08.check_patch_position, _patch(layer_shift=1), "one layer too late")
    fails_with(ch08.check_patch_position, _patch(pos_shift=1), "off by one position")
    fails_with(ch08.check_patch_position, _patch(all_positions=True), "every position")
    fails_with(ch08.check_patch_position, _patch(reverse=True), "direction")
    fails_with(ch08.check_patch_position, _patch(prob=True), "probability")
    fails_with(ch08.check_patch_position, _patch(remove=False), "handle.remove()")
    for off in OFFSETS:
        assert "too late" in failure(ch08.check_patch_position, _patch(layer_shift=1), off)
        assert "every position" in failure(ch08.check_patch_position, _patch(all_positions=True), off)


def test_patch_forbids_the_package():
    from minigpt.interpret import patched, run_with_cache

    def uses_package(model, clean, corrupted, layer, position, target):
        with patched(model, run_with_cache(model, clean), resid=[layer], positions=[position]):
            logits = model(corrupted)[0]
        return torch.log_softmax(logits[:, -1], -1)[:, target].mean().item()

    assert "patched" in failure(ch08.check_patch_position, uses_package)


@pytest.mark.parametrize("check", [ch08.check_ablation_effect, ch08.check_patch_position, ch08.check_induction_head])
def test_crash_becomes_message(check):
    def boom(*args):
        raise RuntimeError("shapes")
    assert "raised RuntimeError: shapes" in failure(check, boom)
