"""Chapter 03's transfer exercises: the GPT as the learner's own nn.Module (03.6) and the post-LN
block (03.7). The honest answers pass; each mistake the chapter names, planted in a small wrong
answer, fails with the message that names it, on the visible inputs and on hidden ones. The
post-LN check's reference, PyTorch's TransformerEncoderLayer, is first checked against the block
written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from minigpt import Block, GPTConfig
from minigpt.checks import CheckFailed, ch03, hidden_inputs

OFFSETS = (0, 101, 7919)  # 0: the visible inputs; the others: hidden draws


class MyGPT(nn.Module):
    """An honest answer to 03.6; the flags plant one mistake each."""

    def __init__(self, cfg, *, wpe=True, ln_f=True, tie=True, drop=True, head_bias=False, names=True):
        super().__init__()
        C = cfg.n_embd
        mods = dict(wte=nn.Embedding(cfg.vocab_size, C), h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]))
        if wpe:
            mods["wpe"] = nn.Embedding(cfg.block_size, C)
        if drop:
            mods["drop"] = nn.Dropout(cfg.dropout)
        if ln_f:
            mods["ln_f"] = nn.LayerNorm(C)
        if names:
            self.transformer = nn.ModuleDict(mods)
        else:
            self.body = nn.ModuleDict(mods)
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=head_bias)
        if tie:
            self.lm_head.weight = mods["wte"].weight
        self.cfg = cfg

    def forward(self, idx, *, use_wpe=True, use_ln_f=True, start=0, softmax=False, scale=False, tuple_blocks=False):
        tf = self.transformer if hasattr(self, "transformer") else self.body
        T = idx.shape[1]
        x = tf.wte(idx) * (math.sqrt(self.cfg.n_embd) if scale else 1.0)
        if use_wpe:
            x = x + tf.wpe(torch.arange(start, start + T))
        x = tf.drop(x) if "drop" in tf else x
        for block in tf.h:
            x = block(x) if tuple_blocks else block(x)[0]
        x = tf.ln_f(x) if use_ln_f else x
        logits = self.lm_head(x)
        return torch.softmax(logits, -1) if softmax else logits


def variant(init=None, **fwd):
    """A class whose __init__ and forward plant the given mistakes."""
    init = init or {}

    class Wrong(MyGPT):
        def __init__(self, cfg):
            super().__init__(cfg, **init)

        def forward(self, idx):
            return super().forward(idx, **fwd)

    return Wrong


def named(check, answer, fragment):
    for offset in OFFSETS:
        with hidden_inputs(offset) if offset else _nothing():
            with pytest.raises(CheckFailed) as info:
                check(answer)
        assert fragment.lower() in str(info.value).lower(), f"offset {offset}: {info.value}"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- 03.6

def test_gpt_module_honest_answer_passes_visible_and_hidden(capsys):
    ch03.check_gpt_module(MyGPT)
    assert capsys.readouterr().out.startswith("✅")
    for offset in OFFSETS[1:]:
        with hidden_inputs(offset):
            ch03.check_gpt_module(ch03.build_and_run(MyGPT))  # how the grader calls it
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("answer, fragment", [
    (variant(use_wpe=False), "forgot the position embeddings"),
    (variant({"wpe": False}, use_wpe=False), "no transformer.wpe"),
    (variant(use_ln_f=False), "forgot the final LayerNorm"),
    (variant({"ln_f": False}, use_ln_f=False), "no final LayerNorm"),
    (variant({"tie": False}), "not tied"),
    (variant(start=1), "positions do not start at 0"),
    (variant(softmax=True), "applied softmax"),
    (variant(scale=True), "√n_embd"),
    (variant({"head_bias": True}), "has a bias"),
    (variant({"drop": False}), "nn.Dropout"),
    (variant({"names": False}), "parameter names differ"),
    (variant(tuple_blocks=True), "block(x)[0]"),
], ids=["no-wpe-used", "no-wpe-module", "no-ln_f-used", "no-ln_f-module", "untied", "positions-from-1",
        "softmax", "scaled-embedding", "head-bias", "no-dropout", "other-names", "block-tuple"])
def test_gpt_module_mistakes_are_named(answer, fragment):
    named(ch03.check_gpt_module, answer, fragment)


def test_gpt_module_refuses_a_subclass_of_the_package_gpt():
    from minigpt import GPT

    class Lazy(GPT):
        def forward(self, idx):
            return super().forward(idx)[0]

    named(ch03.check_gpt_module, Lazy, "inherits from minigpt.GPT")


def test_gpt_module_check_forbids_the_package_gpt():
    assert {"minigpt.model.GPT.__init__", "minigpt.model.GPT.forward"} <= set(ch03.check_gpt_module.forbidden)


# ---------------------------------------------------------------- 03.7

def post_ln(x, blk):
    x = blk.ln_1(x + blk.attn(x)[0])
    return blk.ln_2(x + blk.mlp(x))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_the_reference_encoder_layer_is_the_post_ln_block(dtype, tol):
    """Before the check relies on it: nn.TransformerEncoderLayer(norm_first=False) with the block's
    weights and a causal mask equals the post-LN block written out by hand."""
    torch.manual_seed(0)
    for n_head, n_embd, T in [(1, 8, 1), (2, 16, 7), (4, 32, 12)]:
        blk = Block(GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=n_head, n_embd=n_embd)).eval()
        with torch.no_grad():
            for p in blk.parameters():
                p.normal_(0.0, 0.4)
        blk = blk.to(dtype)
        x = torch.randn(3, T, n_embd, dtype=dtype) * 2
        mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=dtype)
        with torch.no_grad():
            ref = ch03.post_ln_reference(blk).to(dtype)(x, src_mask=mask, is_causal=True)
            assert (ref - post_ln(x, blk)).abs().max().item() < tol
            # and it is not the pre-LN block, which the check must tell apart
            assert (ref - blk(x)[0]).abs().max().item() > 1e-2


def test_post_ln_honest_answer_passes_visible_and_hidden(capsys):
    ch03.check_post_ln_block(post_ln)
    assert capsys.readouterr().out.startswith("✅")
    for offset in OFFSETS[1:]:
        with hidden_inputs(offset):
            ch03.check_post_ln_block(post_ln)
    assert capsys.readouterr().out == ""


def _att(b, h):
    return b.attn(h)[0]


@pytest.mark.parametrize("answer, fragment", [
    (lambda x, b: b(x)[0], "pre-LN block"),
    (lambda x, b: (lambda h: h + b.mlp(b.ln_2(h)))(x + _att(b, b.ln_1(x))), "pre-LN block"),
    (lambda x, b: (lambda h: h + b.ln_2(b.mlp(h)))(x + b.ln_1(_att(b, x))), "before the residual addition"),
    (lambda x, b: (lambda h: b.ln_2(h + b.mlp(h)))(b.ln_1(x) + _att(b, b.ln_1(x))), "before the residual addition"),
    (lambda x, b: (lambda h: h + b.mlp(h))(b.ln_1(x + _att(b, x))), "left out the second LayerNorm"),
    (lambda x, b: (lambda h: h + b.mlp(h))(x + _att(b, x)), "no LayerNorm at all"),
    (lambda x, b: (lambda h: b.ln_1(h + b.mlp(h)))(b.ln_1(x + _att(b, x))), "ln_1 twice"),
    (lambda x, b: b.ln_1(x + _att(b, x)), "forgot the FFN"),
    (lambda x, b: torch.cat([x, _att(b, x)], -1), "shape"),
], ids=["package-block", "pre-ln", "norm-on-branch", "norm-on-input", "no-second-norm", "no-norm",
        "ln_1-twice", "no-ffn", "concatenated"])
def test_post_ln_mistakes_are_named(answer, fragment):
    named(ch03.check_post_ln_block, answer, fragment)


def test_post_ln_check_forbids_the_reference_layer():
    assert "torch.nn.modules.transformer.TransformerEncoderLayer.forward" in ch03.check_post_ln_block.forbidden
