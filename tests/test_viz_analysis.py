"""Analysis scores on hand-built attention matrices give the answer we planted."""

import math

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.viz import (attention_rollout, entropy_bound, first_token_score, head_entropy, induction_score,
                         induction_scores, induction_targets, previous_token_score, repeated_random_tokens,
                         row_entropy, self_token_score, token_class_score, top_heads, uniform_attention)

T = 12


def random_heads(n_layer=3, n_head=4, T=T, seed=0):
    """Causal attention with random (but not structured) weights, shape (L, H, T, T)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n_layer, n_head, T, T, generator=g, dtype=torch.float64)
    return torch.softmax(s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")), -1)


def previous_token_head(T=T):
    w = torch.zeros(T, T, dtype=torch.float64)
    w[0, 0] = 1
    w[torch.arange(1, T), torch.arange(T - 1)] = 1
    return w


def sink_head(T=T):
    w = torch.zeros(T, T, dtype=torch.float64)
    w[:, 0] = 1
    return w


def test_planted_previous_token_head_scores_highest():
    w = random_heads()
    w[1, 2] = 0.9 * previous_token_head() + 0.1 * uniform_attention(T)
    s = previous_token_score(w)
    assert s.shape == (3, 4)
    assert top_heads(s, 1)[0][:2] == (1, 2)
    assert s[1, 2] > 0.9
    assert previous_token_score(previous_token_head()) == 1.0
    assert top_heads(s, 3)[0][2] >= top_heads(s, 3)[1][2] >= top_heads(s, 3)[2][2]


def test_first_token_sink_score():
    w = random_heads()
    w[2, 0] = sink_head()
    s = first_token_score(w)
    assert top_heads(s, 1)[0][:2] == (2, 0) and s[2, 0] == 1.0
    expected = sum(1 / (i + 1) for i in range(1, T)) / (T - 1)
    assert first_token_score(uniform_attention(T)).item() == pytest.approx(expected)
    assert self_token_score(torch.eye(T)).item() == 1.0


def test_entropy_of_one_hot_and_uniform_heads():
    assert head_entropy(previous_token_head()).item() == pytest.approx(0.0, abs=1e-12)
    assert head_entropy(uniform_attention(T)).item() == pytest.approx(entropy_bound(T))
    assert head_entropy(uniform_attention(T), normalize=True).item() == pytest.approx(1.0)
    torch.testing.assert_close(row_entropy(uniform_attention(4)),
                               torch.tensor([0.0, math.log(2), math.log(3), math.log(4)], dtype=torch.float64))
    w = random_heads()
    w[0, 3] = sink_head()
    e = head_entropy(w)
    assert top_heads(e, 1, largest=False)[0][:2] == (0, 3)
    assert (e <= entropy_bound(T) + 1e-9).all()


def test_induction_targets_and_planted_induction_head():
    P = 6
    ids = torch.tensor([[5, 1, 9, 3, 7, 2]]).repeat(1, 2)[0]  # distinct tokens, repeated
    tgt = induction_targets(ids)
    assert tgt[:P].sum() == 0  # the first copy has nothing to copy from
    for i in range(P, 2 * P):
        assert tgt[i].nonzero().flatten().tolist() == [i - P + 1]
    ind = torch.zeros(2 * P, 2 * P, dtype=torch.float64)
    for i in range(2 * P):
        ind[i, i - P + 1 if i >= P else 0] = 1
    w = random_heads(2, 3, 2 * P)
    w[1, 1] = ind
    w[0, 0] = previous_token_head(2 * P)
    s = induction_score(w, ids)
    assert top_heads(s, 1)[0][:2] == (1, 1) and s[1, 1] == 1.0
    assert s[0, 0] == 0.0, "a previous-token head is not an induction head"
    with pytest.raises(ValueError, match="no token repeats"):
        induction_score(w, torch.arange(2 * P))


def test_token_class_score():
    keys = torch.zeros(T, dtype=torch.bool)
    keys[[3, 7]] = True
    w = torch.zeros(T, T, dtype=torch.float64)
    w[:3, 0] = 1
    w[3:7, 3] = 1
    w[7:, 7] = 1
    assert token_class_score(w, keys).item() == 1.0  # queries 3.. see a marked key and look only there
    base = token_class_score(uniform_attention(T), keys).item()
    expected = sum((1 if i < 7 else 2) / (i + 1) for i in range(3, T)) / (T - 3)
    assert base == pytest.approx(expected)
    with pytest.raises(ValueError, match="marks 3 tokens"):
        token_class_score(w, [True, False, True])


def test_rollout_properties_and_hand_computed_case():
    w = random_heads()
    r = attention_rollout(w)
    assert r.shape == (3, T, T)
    torch.testing.assert_close(r.sum(-1), torch.ones(3, T, dtype=torch.float64))
    assert (r.triu(1).abs() < 1e-12).all()
    eye = torch.eye(T, dtype=torch.float64).expand(2, 2, T, T)
    torch.testing.assert_close(attention_rollout(eye)[-1], torch.eye(T, dtype=torch.float64))
    a, b = w[0].mean(0), w[1].mean(0)
    torch.testing.assert_close(attention_rollout(w[:2], residual=False)[-1], b @ a)
    i = torch.eye(T, dtype=torch.float64)
    torch.testing.assert_close(attention_rollout(w[:2])[-1], (0.5 * b + 0.5 * i) @ (0.5 * a + 0.5 * i))


def test_induction_scores_on_a_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16))
    res = induction_scores(model, length=10, n=3, seed=1)
    assert res.scores.shape == (2, 2)
    assert res.loss.shape == (19,)
    assert ((res.scores >= 0) & (res.scores <= 1)).all()
    assert res.loss_first == pytest.approx(float(res.loss[:9].mean()))
    ids = repeated_random_tokens(50, 10, n=3, seed=1)
    assert torch.equal(ids[:, :10], ids[:, 10:])
    with pytest.raises(ValueError, match="do not fit"):
        induction_scores(model, length=20)
