"""The objective against F.cross_entropy and the chain rule computed one prefix at a time."""

import math

import torch
import torch.nn.functional as F

from minigpt import bits_per_char, lm_loss, perplexity, sequence_logprob, shift_for_lm


def test_lm_loss_equals_cross_entropy_and_ignores_masked_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    targets = torch.randint(0, 11, (3, 7), generator=g)
    torch.testing.assert_close(lm_loss(logits, targets), F.cross_entropy(logits.view(-1, 11), targets.view(-1)))
    masked = targets.clone()
    masked[:, :4] = -100
    manual = -torch.log_softmax(logits[:, 4:], -1).gather(-1, targets[:, 4:, None]).mean()
    torch.testing.assert_close(lm_loss(logits, masked), manual)


def test_shift_for_lm():
    x, y = shift_for_lm(torch.tensor([[1, 2, 3, 4]]))
    assert x.tolist() == [[1, 2, 3]] and y.tolist() == [[2, 3, 4]]


def test_sequence_logprob_is_the_sum_of_conditionals(tiny_model, tiny_config):
    ids = torch.randint(0, tiny_config.vocab_size, (9,))
    total = 0.0
    with torch.no_grad():
        for i in range(1, len(ids)):  # P(w_i | w_<i) from a separate forward pass on each prefix
            logits = tiny_model(ids[None, :i])[0][0, -1]
            total += torch.log_softmax(logits, -1)[ids[i]].item()
    assert math.isclose(sequence_logprob(tiny_model, ids).item(), total, rel_tol=1e-5)
    batch = torch.stack([ids, ids.flip(0)])
    assert sequence_logprob(tiny_model, batch).shape == (2,)


def test_perplexity_and_bits():
    assert math.isclose(perplexity(math.log(65)), 65.0)
    assert math.isclose(bits_per_char(math.log(2), 10, 10), 1.0)
    assert math.isclose(bits_per_char(2 * math.log(2), 5, 10), 1.0)  # 2 bits/token, 2 chars/token
