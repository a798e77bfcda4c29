"""Capture: the weights are the attention formula of the block's own Q and K, in eval mode, and
capturing never changes what the model computes."""

import math

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.viz import AttentionCapture, attention_stages, attention_weights, block_qkv, capture_attention


@pytest.fixture
def model():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=23, block_size=16, n_layer=3, n_head=4, n_embd=32, dropout=0.3)
    return GPT(cfg)  # left in train mode on purpose: capture must switch dropout off itself


class Chars:
    """A minimal tokenizer: one character per token."""

    def __init__(self, alphabet="abcdefghijklmnopqrstuvw"):
        self.alphabet = alphabet

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def tokens(self, ids):
        return [self.alphabet[i] for i in ids]


def reference_weights(model, idx):
    """softmax(QKᵀ/√d_k + causal mask) in float64, from the Q, K that each block's c_attn outputs."""
    outs = []
    hooks = [b.attn.c_attn.register_forward_hook(lambda m, a, out: outs.append(out.detach()))
             for b in model.transformer.h]
    try:
        model.eval()
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    cfg = model.config
    B, T = idx.shape
    hs = cfg.n_embd // cfg.n_head
    ref = []
    for qkv in outs:
        q, k, _ = qkv.double().split(cfg.n_embd, dim=2)
        q = q.view(B, T, cfg.n_head, hs).transpose(1, 2)
        k = k.view(B, T, cfg.n_head, hs).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(hs)
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        ref.append(torch.softmax(s, -1))
    return torch.stack(ref, 1)  # (B, L, H, T, T)


def test_captured_weights_equal_formula_from_blocks_q_and_k(model):
    idx = torch.randint(0, 23, (2, 12), generator=torch.Generator().manual_seed(1))
    weights, _ = attention_weights(model.train(), idx)
    ref = reference_weights(model, idx)
    assert weights.shape == (2, 3, 4, 12, 12)
    torch.testing.assert_close(weights.double(), ref, atol=1e-6, rtol=1e-5)


def test_rows_sum_to_one_and_zero_above_diagonal(model):
    cap = capture_attention(model.train(), list(range(14)))
    w = cap.weights
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4, 14))
    assert (w.triu(1) == 0).all()
    assert (w >= 0).all() and (w <= 1).all()


def test_capture_restores_mode_and_is_deterministic_with_dropout(model):
    model.train()
    a = capture_attention(model, list(range(10))).weights
    b = capture_attention(model, list(range(10))).weights
    assert model.training, "capture must restore the model's train mode"
    assert torch.equal(a, b), "with dropout switched off, two captures must agree exactly"
    model.eval()
    capture_attention(model, list(range(10)))
    assert not model.training


def test_capture_leaves_logits_unchanged(model):
    model.eval()
    idx = torch.randint(0, 23, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fast, _ = model(idx)  # the SDPA path
    cap = capture_attention(model, idx[0])
    torch.testing.assert_close(cap.logits, fast[0], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        again, _ = model(idx)
    assert torch.equal(fast, again), "capturing must not change later forward passes"


def test_block_qkv_and_stages_match_capture(model):
    idx = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    cap = capture_attention(model, idx)
    q, k, v = block_qkv(model, idx, layer=2)
    assert q.shape == k.shape == v.shape == (1, 4, 8, 8)
    st = attention_stages(model, idx, layer=2, head=3)
    torch.testing.assert_close(st.weights, cap.head(2, 3), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(st.scaled, st.scores / math.sqrt(8))
    assert torch.isinf(st.masked.triu(1)[torch.ones(8, 8, dtype=torch.bool).triu(1)]).all()
    torch.testing.assert_close(st.masked.tril(), st.scaled.tril())


def test_capture_text_tokens_and_truncation(model):
    cap = capture_attention(model, "abcabcabcabcabcabcabc", Chars())  # 21 tokens, context 16
    assert isinstance(cap, AttentionCapture)
    assert cap.n_tokens == 16 and cap.truncated == 5
    assert cap.tokens[:4] == ["a", "b", "c", "a"]
    assert "5 tokens cut" in repr(cap)
    assert cap.loss_per_token().shape == (15,)
    torch.testing.assert_close(cap.attends_to(1, 2, 5), cap.weights[1, 2, 5])
    torch.testing.assert_close(cap.attended_by(1, "mean", 5), cap.weights[1].mean(0)[:, 5])


def test_capture_errors_are_clear(model):
    with pytest.raises(ValueError, match="no tokenizer"):
        capture_attention(model, "abc")
    with pytest.raises(ValueError, match="zero tokens"):
        capture_attention(model, [])
    cap = capture_attention(model, [1, 2, 3])
    with pytest.raises(IndexError, match="layers 0..2"):
        cap.head(7, 0)
    with pytest.raises(IndexError, match="'mean'"):
        cap.head(0, 9)
