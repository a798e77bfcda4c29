"""Model properties: causality, paths agree, KV cache, parameter count, clear input errors."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import GPT, GPTConfig


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_causality_future_tokens_never_change_earlier_logits(data):
    cfg = GPTConfig(vocab_size=13, block_size=12, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    T = data.draw(st.integers(2, 12))
    ids = data.draw(st.lists(st.integers(0, 12), min_size=T, max_size=T))
    t = data.draw(st.integers(1, T - 1))  # change tokens at positions >= t
    new_tail = data.draw(st.lists(st.integers(0, 12), min_size=T - t, max_size=T - t))
    a = torch.tensor([ids])
    b = torch.tensor([ids[:t] + new_tail])
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :t], lb[:, :t], atol=1e-6, rtol=0)


def test_explicit_and_sdpa_models_agree(tiny_config, tiny_model):
    explicit = GPT(GPTConfig(**{**tiny_config.to_dict(), "attn_impl": "explicit"})).eval()
    explicit.load_state_dict(tiny_model.state_dict())
    idx = torch.randint(0, tiny_config.vocab_size, (3, 16))
    torch.testing.assert_close(tiny_model(idx)[0], explicit(idx)[0], atol=1e-5, rtol=1e-5)
    logits, loss, attns = tiny_model(idx, return_attn=True)
    assert loss is None and len(attns) == tiny_config.n_layer
    assert attns[0].shape == (3, tiny_config.n_head, 16, 16)
    torch.testing.assert_close(attns[1].sum(-1), torch.ones(3, tiny_config.n_head, 16))


def test_kv_cache_forward_equals_full_forward(tiny_model, tiny_config):
    idx = torch.randint(0, tiny_config.vocab_size, (2, 16))
    full = tiny_model(idx)[0]
    cache = tiny_model.new_kv_cache(2)
    parts = [tiny_model(idx[:, a:b], kv_cache=cache)[0] for a, b in [(0, 5), (5, 6), (6, 11), (11, 16)]]
    assert cache.pos == 16
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_weight_tying_and_init(tiny_model):
    assert tiny_model.lm_head.weight is tiny_model.transformer.wte.weight
    std = tiny_model.transformer.h[0].attn.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 2) ** 0.5, rel=0.2)


def test_num_params_by_hand(tiny_config, tiny_model):
    V, T, C, L = tiny_config.vocab_size, tiny_config.block_size, tiny_config.n_embd, tiny_config.n_layer
    per_block = (2 * 2 * C) + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    expected = V * C + T * C + L * per_block + 2 * C
    assert tiny_model.num_params() == expected
    assert tiny_model.num_params(exclude_embeddings=True) == expected - V * C - T * C
    assert tiny_model.flops_per_token() > 6 * tiny_model.num_params(exclude_embeddings=True)


def test_loss_matches_cross_entropy(tiny_model, tiny_config):
    idx = torch.randint(0, tiny_config.vocab_size, (2, 8))
    tgt = torch.randint(0, tiny_config.vocab_size, (2, 8))
    logits, loss = tiny_model(idx, tgt)
    ref = torch.nn.functional.cross_entropy(logits.view(-1, tiny_config.vocab_size), tgt.view(-1))
    torch.testing.assert_close(loss, ref)


def test_relu_option_changes_the_ffn():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, activation="relu")
    assert isinstance(GPT(cfg).transformer.h[0].mlp.act, torch.nn.ReLU)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 17, dtype=torch.long), "longer than the context"),
    (torch.full((1, 3), 23), "out of range"),
    (torch.full((1, 3), -1), "out of range"),
    (torch.zeros(1, 3), "integer token ids"),
    (torch.zeros(5, dtype=torch.long), "idx[None]"),
    (torch.zeros(1, 0, dtype=torch.long), "empty"),
])
def test_invalid_input_fails_clearly(tiny_model, bad, message):
    with pytest.raises((ValueError, TypeError), match=None) as err:
        tiny_model(bad)
    assert message in str(err.value)


def test_dropout_is_off_in_eval_and_on_in_train():
    cfg = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5)
    model = GPT(cfg)
    idx = torch.randint(0, 10, (2, 8))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])
