"""Sampling: each stage against an independent brute-force reference, cached == uncached,
beam search against exhaustive enumeration, reproducibility, stop strings, argument errors."""

import itertools
import math

import numpy as np
import pytest
import torch

from minigpt import GPT, GPTConfig, sequence_logprob
from minigpt.sampling import (STAGES, beam_search, generate, generate_text, next_token_distributions,
                              process_logits)

CHARS = "abcdefghij\n"  # 11 symbols for the vocab-11 test model


class CharStandIn:
    """A tiny tokenizer stand-in: one id per character of CHARS."""

    vocab_size = len(CHARS)

    def encode(self, text):
        return [CHARS.index(c) for c in text]

    def decode(self, ids):
        return "".join(CHARS[i] for i in ids)

    def to_dict(self):
        return {"type": "stand-in", "chars": CHARS}


def sharp_model(vocab_size=11, block_size=16, seed=0, std=0.5):
    """A random GPT with peaked next-token distributions (GPT-2 init is almost uniform)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, std)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return sharp_model()


def random_logits(seed, B=4, V=8, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, V, generator=g) * scale


def kept(x):
    return {i for i, v in enumerate(x.tolist()) if v != float("-inf")}


# --------------------------------------------------------------------------- each stage vs brute force

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 2, 5, 8, 20])
def test_top_k_keeps_exactly_the_k_largest(seed, k):
    logits = random_logits(seed)
    out = process_logits(logits, top_k=k)
    for row_in, row_out in zip(logits, out):
        vals = row_in.tolist()
        expected = set(sorted(range(len(vals)), key=lambda i: -vals[i])[:min(k, len(vals))])
        assert kept(row_out) == expected
        for i in expected:  # survivors keep their logits
            assert row_out[i] == row_in[i]


def brute_force_top_p(probs, p):
    """All subsets: the smallest size whose best subset has mass >= p, and that best subset."""
    n = len(probs)
    for size in range(1, n + 1):
        best = max(itertools.combinations(range(n), size), key=lambda s: sum(probs[i] for i in s))
        if sum(probs[i] for i in best) >= p:
            return set(best)
    return set(range(n))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.75, 0.9, 0.99, 1.0])
def test_top_p_keeps_smallest_set_with_mass_at_least_p(seed, p):
    logits = random_logits(seed, V=7)
    out = process_logits(logits, top_p=p)
    for row_in, row_out in zip(logits, out):
        probs = torch.softmax(row_in.double(), -1).tolist()
        partial_sums = np.cumsum(sorted(probs, reverse=True))
        if np.min(np.abs(partial_sums - p)) < 1e-5 and p < 1.0:
            continue  # too close to a boundary for float32 to decide
        expected = brute_force_top_p(probs, p)
        assert kept(row_out) == expected
        assert sum(probs[i] for i in expected) >= p - 1e-9


@pytest.mark.parametrize("p, n_kept", [(0.25, 1), (0.5, 2), (0.5000001, 3), (0.75, 3), (1.0, 4)])
def test_top_p_exact_boundary(p, n_kept):
    """Four equal tokens (probability exactly 1/4): mass exactly p is enough, no extra token."""
    out = process_logits(torch.zeros(1, 4), top_p=p)
    assert kept(out[0]) == set(range(n_kept))  # ties keep the lower ids


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_min_p_keeps_tokens_above_fraction_of_top_probability(seed, min_p):
    logits = random_logits(seed)
    out = process_logits(logits, min_p=min_p)
    for row_in, row_out in zip(logits, out):
        probs = np.exp(row_in.double().numpy() - row_in.double().numpy().max())
        probs /= probs.sum()
        assert kept(row_out) == {i for i in range(len(probs)) if probs[i] >= min_p * probs.max() - 1e-12}


@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 3.0])
def test_repetition_penalty_ctrl_formula(penalty):
    logits = random_logits(0, B=2, V=8)
    prev = torch.tensor([[1, 3, 3, 6], [0, 0, 0, 0]])  # repeats count once
    out = process_logits(logits, repetition_penalty=penalty, prev_ids=prev)
    for b in range(2):
        seen = set(prev[b].tolist())
        for i in range(8):
            x = logits[b, i].item()
            want = (x / penalty if x > 0 else x * penalty) if i in seen else x
            assert out[b, i].item() == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert out is not logits and torch.equal(logits, random_logits(0, B=2, V=8))  # input untouched


def test_temperature_scales_logits_and_zero_is_argmax():
    logits = random_logits(1)
    torch.testing.assert_close(process_logits(logits, temperature=0.5), logits / 0.5)
    greedy = process_logits(logits, temperature=0)
    assert [kept(r) for r in greedy] == [{int(i)} for i in logits.argmax(-1)]


def reference_pipeline(logits, temperature, top_k, top_p, min_p, penalty, prev):
    """The whole pipeline written independently, one row at a time, in float64 NumPy."""
    x = logits.double().numpy().copy()
    for i in set(prev):
        x[i] = x[i] / penalty if x[i] > 0 else x[i] * penalty
    x = x / temperature
    order = list(np.argsort(-x, kind="stable"))
    alive = set(order[:top_k])
    def probs_of(alive):
        e = np.array([math.exp(x[i]) if i in alive else 0.0 for i in range(len(x))])
        return e / e.sum()
    pr = probs_of(alive)
    nucleus, mass = set(), 0.0
    for i in sorted(alive, key=lambda i: -pr[i]):
        nucleus.add(i)
        mass += pr[i]
        if mass >= top_p:
            break
    pr = probs_of(nucleus)
    final = {i for i in nucleus if pr[i] >= min_p * pr.max()}
    return probs_of(final)


@pytest.mark.parametrize("seed", range(6))
def test_full_pipeline_order_matches_reference(seed):
    logits = random_logits(seed, B=1, V=10, scale=1.5)[0]
    prev = [1, 2, 2, 7]
    kw = dict(temperature=0.8, top_k=6, top_p=0.8, min_p=0.15, repetition_penalty=1.5)
    out = process_logits(logits[None], prev_ids=torch.tensor([prev]), **kw)[0]
    want = reference_pipeline(logits, kw["temperature"], kw["top_k"], kw["top_p"], kw["min_p"],
                              kw["repetition_penalty"], prev)
    np.testing.assert_allclose(torch.softmax(out, -1).double().numpy(), want, atol=1e-6)


def test_next_token_distributions_stage_by_stage(model):
    idx = [1, 2, 3, 4]
    kw = dict(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.2)
    d = next_token_distributions(model, idx, **kw)
    assert tuple(d) == STAGES
    for v in d.values():
        assert v.shape == (11,)
        assert v.sum().item() == pytest.approx(1.0, abs=1e-5)
    raw_logits = model(torch.tensor([idx]))[0][0, -1]
    torch.testing.assert_close(d["raw"], torch.softmax(raw_logits, -1))
    final = process_logits(raw_logits[None], prev_ids=torch.tensor([idx]), **kw)[0]
    torch.testing.assert_close(d["min_p"], torch.softmax(final, -1))
    assert (d["top_k"] > 0).sum() == 5
    assert (d["top_p"] > 0).sum() <= 5
    batch = next_token_distributions(model, torch.tensor([idx, idx]), **kw)
    assert batch["top_p"].shape == (2, 11)


# --------------------------------------------------------------------------- generate

def naive_greedy(model, idx, n):
    """Greedy decoding with no cache and no cleverness: the whole cropped context every step."""
    bs = model.config.block_size
    idx = idx.clone()
    for _ in range(n):
        logits = model(idx[:, -bs:])[0][:, -1]
        idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], 1)
    return idx


def test_greedy_equals_naive_loop_past_block_size(model):
    prompt = torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
    want = naive_greedy(model, prompt, 30)  # 35 tokens > block_size 16
    for use_cache in (True, False):
        assert torch.equal(generate(model, prompt, 30, do_sample=False, use_cache=use_cache), want)
    # the limit T -> 0 of sampling is greedy decoding; T = 0 itself cannot sample and says so
    assert torch.equal(generate(model, prompt, 30, temperature=1e-6, seed=0), want)
    with pytest.raises(ValueError, match="do_sample=False"):
        generate(model, prompt, 30, temperature=0)


@pytest.mark.parametrize("kw", [
    dict(do_sample=False),
    dict(seed=3),
    dict(seed=4, temperature=0.8, top_k=5, top_p=0.9, min_p=0.02, repetition_penalty=1.3),
])
@pytest.mark.parametrize("prompt_len", [3, 16, 20])
def test_cached_equals_uncached_tokens(model, kw, prompt_len):
    prompt = torch.randint(0, 11, (2, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    a = generate(model, prompt, 25, use_cache=True, **kw)
    b = generate(model, prompt, 25, use_cache=False, **kw)
    assert a.shape == (2, prompt_len + 25)
    assert torch.equal(a, b)


def test_tiny_temperature_equals_greedy(model):
    prompt = torch.tensor([[1, 2, 3], [7, 8, 9]])
    greedy = generate(model, prompt, 20, do_sample=False)
    assert torch.equal(generate(model, prompt, 20, temperature=1e-4, seed=0), greedy)
    assert not torch.equal(generate(model, prompt, 20, temperature=3.0, seed=0), greedy)


def test_seeded_sampling_reproducible_and_seeds_differ(model):
    a = generate(model, [1, 2, 3], 30, seed=123)
    b = generate(model, [1, 2, 3], 30, seed=123)
    c = generate(model, [1, 2, 3], 30, seed=124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(7)
    d = generate(model, [1, 2, 3], 30)
    torch.manual_seed(7)
    assert torch.equal(d, generate(model, [1, 2, 3], 30))  # seed=None follows the global RNG


def test_sampling_follows_the_distribution(model):
    """Empirical next-token frequencies match the processed distribution."""
    kw = dict(temperature=1.3, top_k=6)
    out = generate(model, [4, 5], 1, num_samples=4000, seed=0, **kw)
    freq = torch.bincount(out[:, -1], minlength=11).double() / 4000
    want = next_token_distributions(model, [4, 5], **kw)["min_p"].double()
    assert freq[want == 0].sum() == 0
    assert (freq - want).abs().max() < 0.03


def test_num_samples_shape_and_order(model):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    out = generate(model, prompt, 7, num_samples=3, seed=0)
    assert out.shape == (6, 10)
    assert torch.equal(out[:, :3], prompt.repeat_interleave(3, 0))
    assert generate(model, [1, 2], 0).shape == (1, 2)


def test_generate_restores_training_mode_and_uses_eval():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.5))
    m.train()
    a = generate(m, [1, 2, 3], 10, do_sample=False)
    assert m.training
    assert torch.equal(a, generate(m.eval(), [1, 2, 3], 10, do_sample=False))


def test_stop_string_cuts_and_ends_early(model):
    tok = CharStandIn()
    full = generate_text(model, tok, "abc", 30, seed=5)[0]
    stop = full[6:8]
    cut = full[:full.find(stop)]
    assert generate_text(model, tok, "abc", 30, seed=5, stop=stop) == [cut]
    assert generate_text(model, tok, "abc", 30, seed=5, stop=["zz", stop]) == [cut]
    ids = generate(model, tok.encode("abc"), 30, seed=5, stop=stop, tokenizer=tok)
    assert ids.shape[1] < 3 + 30  # every row stopped, so generation ended early
    assert stop in tok.decode(ids[0, 3:].tolist())


def test_generate_text_prompt_errors(model):
    tok = CharStandIn()
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(model, tok, "", 5)
    with pytest.raises(ValueError):  # an unknown character surfaces from the tokenizer
        generate_text(model, tok, "xyz", 5)


@pytest.mark.parametrize("kw, msg", [
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(top_p=0.0), "top_p must be in"),
    (dict(top_p=1.5), "top_p must be in"),
    (dict(top_k=0), "top_k must be an int >= 1"),
    (dict(min_p=1.5), "min_p must be in"),
    (dict(min_p=-0.1), "min_p must be in"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
    (dict(num_samples=0), "num_samples must be"),
    (dict(stop="\n"), "stop strings need tokenizer"),
])
def test_invalid_arguments_raise_clear_errors(model, kw, msg):
    with pytest.raises(ValueError, match=msg):
        generate(model, [1, 2], 5, **kw)


def test_negative_max_new_tokens(model):
    with pytest.raises(ValueError, match="max_new_tokens must be"):
        generate(model, [1, 2], -1)
    with pytest.raises(ValueError, match="max_new_tokens must be"):
        beam_search(model, [1, 2], -1)


# --------------------------------------------------------------------------- beam search

def continuation_logprobs(model, prompt, n):
    """log P(continuation | prompt) of every continuation of length n, by the chain rule."""
    V = model.config.vocab_size
    seqs = torch.tensor(list(itertools.product(range(V), repeat=n)))
    full = torch.cat([torch.tensor(prompt).expand(len(seqs), -1), seqs], 1)
    lp = sequence_logprob(model, full) - sequence_logprob(model, torch.tensor(prompt))
    return full, lp


def test_beam_search_with_enough_beams_is_exact():
    model = sharp_model(vocab_size=5, seed=1, std=0.8)
    prompt = [1, 3]
    full, lp = continuation_logprobs(model, prompt, 3)
    order = lp.argsort(descending=True)
    # 25 = V^2 beams keep every 2-token prefix, so the 3rd step ranks all 125 sequences exactly
    beams = beam_search(model, prompt, 3, num_beams=25, length_penalty=0.0)
    assert len(beams) == 25
    assert [b[0].tolist() for b in beams] == [full[i].tolist() for i in order[:25]]
    np.testing.assert_allclose([s for _, s in beams], lp[order[:25]].numpy(), atol=1e-5)
    # num_beams = V is exact for 2 new tokens: V beams hold every 1-token prefix
    full2, lp2 = continuation_logprobs(model, prompt, 2)
    best = beam_search(model, prompt, 2, num_beams=5, length_penalty=0.0)
    assert [b[0].tolist() for b in best] == [full2[i].tolist() for i in lp2.argsort(descending=True)[:5]]


def test_beam_search_one_beam_is_greedy(model):
    (ids, score), = beam_search(model, [1, 2, 3], 8, num_beams=1, length_penalty=0.0)
    assert torch.equal(ids, generate(model, [1, 2, 3], 8, do_sample=False)[0])


@pytest.mark.parametrize("n", [10, 18])  # 4 + 18 tokens run past block_size 16
@pytest.mark.parametrize("eos_id, lp", [(None, 1.0), (4, 1.0), (4, 0.0), (2, 2.0)])
def test_beam_cached_equals_uncached_and_scores_are_right(model, eos_id, lp, n):
    prompt = [1, 2, 3, 5]
    a = beam_search(model, prompt, n, num_beams=4, length_penalty=lp, eos_id=eos_id, use_cache=True)
    b = beam_search(model, prompt, n, num_beams=4, length_penalty=lp, eos_id=eos_id, use_cache=False)
    assert [x[0].tolist() for x in a] == [x[0].tolist() for x in b]
    np.testing.assert_allclose([x[1] for x in a], [x[1] for x in b], atol=1e-5)
    scores = [s for _, s in a]
    assert scores == sorted(scores, reverse=True)
    base = sequence_logprob(model, torch.tensor(prompt))
    for ids, score in a:
        gen = ids[len(prompt):].tolist()
        if eos_id is not None:
            assert eos_id not in gen[:-1]  # nothing after eos
            assert gen[-1] == eos_id or len(gen) == n
        else:
            assert len(gen) == n
        if len(ids) > model.config.block_size:
            continue  # sequence_logprob needs the whole sequence inside the context
        want = (sequence_logprob(model, ids) - base).item() / len(gen) ** lp
        assert score == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("lp", [0.0, 1.0, -1.0])
def test_beam_search_with_eos_is_exact(lp):
    """With eos, the candidates are all sequences that end at eos or at max length, eos only last.

    27 = 3^3 beams hold every eos-free 3-token prefix, so the search is exhaustive.
    """
    V, eos, n, prompt = 4, 0, 4, [1, 2]
    model = sharp_model(vocab_size=V, seed=0, std=0.8)
    base = sequence_logprob(model, torch.tensor(prompt)).item()
    candidates = []
    for length in range(1, n + 1):
        gens = [g for g in itertools.product(range(V), repeat=length)
                if eos not in g[:-1] and (length == n or g[-1] == eos)]
        lps = sequence_logprob(model, torch.tensor([prompt + list(g) for g in gens])) - base
        candidates += [(prompt + list(g), lp_sum.item() / length ** lp) for g, lp_sum in zip(gens, lps)]
    assert len(candidates) == 1 + 3 + 9 + 27 * 4
    candidates.sort(key=lambda c: c[1], reverse=True)
    beams = beam_search(model, prompt, n, num_beams=27, length_penalty=lp, eos_id=eos)
    assert [b[0].tolist() for b in beams] == [c[0] for c in candidates[:27]]
    np.testing.assert_allclose([b[1] for b in beams], [c[1] for c in candidates[:27]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [1, 5])
@pytest.mark.parametrize("lp", [2.0, 1.0, 0.0, -1.0])
def test_beam_early_stopping_never_changes_the_result(seed, lp):
    model = sharp_model(vocab_size=6, seed=seed, std=0.8)
    for eos in (0, 3):
        a = beam_search(model, [1, 2], 12, num_beams=3, length_penalty=lp, eos_id=eos)
        b = beam_search(model, [1, 2], 12, num_beams=3, length_penalty=lp, eos_id=eos, early_stopping=False)
        assert [x[0].tolist() for x in a] == [x[0].tolist() for x in b]
