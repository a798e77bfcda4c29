"""The attention formula against PyTorch's own scaled_dot_product_attention, and gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPTConfig, attention, causal_mask
from minigpt.attention import CausalSelfAttention


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_sdpa_random_shapes(seed, masked):
    g = torch.Generator().manual_seed(seed)
    B, H, T, d = (int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g)),
                  int(torch.randint(1, 20, (1,), generator=g)), int(torch.randint(1, 17, (1,), generator=g)))
    q, k, v = (torch.randn(B, H, T, d, generator=g) for _ in range(3))
    mask = causal_mask(T) if masked else None
    y, w = attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=masked)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, T))
    if masked:
        assert (w.triu(1) == 0).all()


def test_attention_with_arbitrary_boolean_mask():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 5, generator=g) for _ in range(3))
    mask = torch.rand(7, 7, generator=g) > 0.5
    mask[:, 0] = True  # every row must see something
    torch.testing.assert_close(attention(q, k, v, mask)[0],
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-5, rtol=1e-5)


def test_causal_mask_offsets_for_cached_queries():
    m = causal_mask(2, 5)  # the last 2 of 5 positions
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(causal_mask(4), torch.tril(torch.ones(4, 4, dtype=torch.bool)))


def test_scaling_is_by_sqrt_dk():
    q = torch.tensor([[[1.0, 1.0, 1.0, 1.0]]])
    k = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])
    v = torch.tensor([[[1.0], [0.0]]])
    _, w = attention(q, k, v)
    expected = torch.softmax(torch.tensor([4.0 / math.sqrt(4), 0.0]), 0)
    torch.testing.assert_close(w[0, 0], expected)


def test_attention_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = causal_mask(5)
    assert torch.autograd.gradcheck(lambda a, b, c: attention(a, b, c, mask)[0], (q, k, v))


@pytest.mark.parametrize("T", [1, 5, 16])
def test_module_paths_agree(T):
    cfg = GPTConfig(vocab_size=10, block_size=16, n_layer=1, n_head=4, n_embd=32)
    torch.manual_seed(0)
    mod = CausalSelfAttention(cfg).eval()
    x = torch.randn(3, T, 32)
    fast, none = mod(x)
    slow, w = mod(x, return_weights=True)
    assert none is None and w.shape == (3, 4, T, T)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    # the weights are the formula recomputed from the module's own Q and K
    q, k, _ = mod.c_attn(x).split(32, dim=2)
    q = q.view(3, T, 4, 8).transpose(1, 2)
    k = k.view(3, T, 4, 8).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~causal_mask(T), float("-inf"))
    torch.testing.assert_close(w, torch.softmax(scores, -1), atol=1e-6, rtol=1e-5)
