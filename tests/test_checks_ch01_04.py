"""The exercise checks of chapters 01-04: each reference solution passes, and each common mistake,
planted in a small wrong implementation, fails with the message that names it."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from minigpt import causal_mask
from minigpt.checks import CheckFailed, ch01, ch02, ch03, ch04
from check_helpers import fails_with, passes


def test_checks_do_not_touch_the_global_rng(capsys):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ch02.check_multi_head(make_mha())
    ch03.check_block(good_block)
    ch04.check_sequence_logprob(lambda m, ids: _seq_logprob(m, ids))
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- chapter 01

def good_vocab(text):
    itos = sorted(set(text))
    return {c: i for i, c in enumerate(itos)}, itos


def test_vocab(capsys):
    passes(ch01.check_vocab, good_vocab, capsys)
    fails_with(ch01.check_vocab, lambda t: ({c: i for i, c in enumerate(dict.fromkeys(t))}, list(dict.fromkeys(t))),
               "order of first appearance", "sort")
    fails_with(ch01.check_vocab, lambda t: ({c: i for i, c in enumerate(t)}, list(t)), "distinct")
    fails_with(ch01.check_vocab, lambda t: ({c: i + 1 for i, c in enumerate(sorted(set(t)))}, sorted(set(t))),
               "inverse")
    fails_with(ch01.check_vocab, lambda t: sorted(set(t)), "pair")


def good_pairs(ids):
    return Counter(zip(ids, ids[1:]))


def test_pair_counts(capsys):
    passes(ch01.check_pair_counts, good_pairs, capsys)
    fails_with(ch01.check_pair_counts, lambda ids: Counter((ids[i], ids[i + 1]) for i in range(len(ids) - 2)),
               "last pair")
    fails_with(ch01.check_pair_counts, lambda ids: {p: 1 for p in zip(ids, ids[1:])}, "recorded each pair once")
    fails_with(ch01.check_pair_counts, lambda ids: Counter(zip(ids[1:], ids)), "reversed")
    fails_with(ch01.check_pair_counts, lambda ids: Counter(zip(ids, ids[1:] + ids[:1])), "wraps around")

    def no_overlap(ids):  # counts (5, 5) in [5, 5, 5, 5] as 2 instead of 3
        c, i = Counter(), 0
        while i < len(ids) - 1:
            c[(ids[i], ids[i + 1])] += 1
            i += 2 if ids[i] == ids[i + 1] else 1
        return c

    fails_with(ch01.check_pair_counts, no_overlap, "overlapping pairs count separately")


def good_merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def test_merge(capsys):
    passes(ch01.check_merge, good_merge, capsys)

    def first_only(ids, pair, new_id):
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == tuple(pair):
                return ids[:i] + [new_id] + ids[i + 2:]
        return ids

    def no_skip(ids, pair, new_id):
        return [new_id if i < len(ids) - 1 and (ids[i], ids[i + 1]) == tuple(pair) else t for i, t in enumerate(ids)]

    def overlapping(ids, pair, new_id):  # every position where the pair starts, even overlapping ones
        starts = {i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == tuple(pair)}
        return [new_id if i in starts else t for i, t in enumerate(ids) if i - 1 not in starts]

    fails_with(ch01.check_merge, first_only, "only the first occurrence")
    fails_with(ch01.check_merge, no_skip, "skip both")
    fails_with(ch01.check_merge, overlapping, "must not overlap")
    fails_with(ch01.check_merge, lambda ids, pair, new_id: good_merge(ids, pair[::-1], new_id), "reversed")
    fails_with(ch01.check_merge, lambda ids, pair, new_id: ids, "changed nothing")


def test_onehot_embedding(capsys):
    passes(ch01.check_onehot_embedding, lambda ids, E: F.one_hot(ids, E.shape[0]).float() @ E, capsys)
    fails_with(ch01.check_onehot_embedding, lambda ids, E: F.one_hot(ids).float(), "num_classes")
    fails_with(ch01.check_onehot_embedding, lambda ids, E: F.one_hot(ids, E.shape[0]).float(), "one-hot matrix")
    fails_with(ch01.check_onehot_embedding, lambda ids, E: (F.one_hot(ids, E.shape[0]).float() @ E).T, "shape")
    fails_with(ch01.check_onehot_embedding, lambda ids, E: 1 / 0, "ZeroDivisionError")
    fails_with(ch01.check_onehot_embedding, lambda ids, E: F.one_hot(ids, E.shape[0]) @ E, ".to(E.dtype)")
    for lookup in (lambda ids, E: E[ids], lambda ids, E: F.embedding(ids, E),
                   lambda ids, E: E.index_select(0, ids.flatten()).view(*ids.shape, -1)):
        fails_with(ch01.check_onehot_embedding, lookup, "indexing E")


def test_input_embedding(capsys):
    pos = lambda idx: torch.arange(idx.shape[1])  # noqa: E731
    passes(ch01.check_input_embedding, lambda idx, wte, wpe: wte[idx] + wpe[pos(idx)], capsys)
    fails_with(ch01.check_input_embedding, lambda idx, wte, wpe: wte[idx], "forgot to add position embeddings")
    fails_with(ch01.check_input_embedding,
               lambda idx, wte, wpe: torch.cat([wte[idx], wpe[pos(idx)].expand(idx.shape[0], -1, -1)], -1),
               "concatenated instead of added")
    fails_with(ch01.check_input_embedding, lambda idx, wte, wpe: wte[idx] + wpe[idx], "positions 0..T-1")
    fails_with(ch01.check_input_embedding, lambda idx, wte, wpe: wte[idx] + wpe[pos(idx) + 1], "start at 0")
    fails_with(ch01.check_input_embedding, lambda idx, wte, wpe: wte[idx] * wpe[pos(idx)], "multiplied")
    fails_with(ch01.check_input_embedding, lambda idx, wte, wpe: wte[idx] + wpe, "whole position table")


# ---------------------------------------------------------------- chapter 02

def good_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return w @ v, w


def make_attention(scale="sqrt", dim=-1, fill=float("-inf"), use_mask=True, after=False, values="v",
                   invert=False, return_weights=False):
    def fn(q, k, v, mask=None):
        d = q.size(-1)
        s = q @ k.transpose(-2, -1)
        s = {"sqrt": s / math.sqrt(d), "none": s, "d": s / d}[scale]
        m = None if (mask is None or not use_mask) else (mask if not invert else ~mask)
        if m is not None and not after:
            s = s.masked_fill(~m, fill)
        w = torch.softmax(s, dim=dim)
        if m is not None and after:
            w = w * m
        if return_weights:
            return w
        return w @ (v if values == "v" else k)
    return fn


def test_attention(capsys):
    passes(ch02.check_attention, good_attention, capsys)
    passes(ch02.check_attention, lambda q, k, v, mask=None: good_attention(q, k, v, mask)[0], capsys)
    fails_with(ch02.check_attention, lambda q, k, v, mask=None: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
               "write it by hand", "scaled_dot_product_attention")  # the check refuses it, like the grader
    fails_with(ch02.check_attention, make_attention(scale="none"), "no √d_k scaling")
    fails_with(ch02.check_attention, make_attention(scale="d"), "divided the scores by d_k")
    fails_with(ch02.check_attention, make_attention(dim=-2), "wrong axis")
    fails_with(ch02.check_attention, make_attention(use_mask=False), "missing causal mask")
    fails_with(ch02.check_attention, make_attention(after=True), "after the softmax")
    fails_with(ch02.check_attention, make_attention(fill=0.0), "-inf")
    fails_with(ch02.check_attention, make_attention(values="k"), "by k")
    fails_with(ch02.check_attention, make_attention(invert=True), "NaN", "the right way round")
    fails_with(ch02.check_attention, make_attention(return_weights=True), "returned the attention weights")
    fails_with(ch02.check_attention, lambda q, k, v, mask=None: (good_attention(q, k, v, mask)[0] * 1.1,
                                                                 good_attention(q, k, v, mask)[1] * 1.1),
               "rows do not sum to 1")


def kv_mask(t_q, t_k=None, offset=True):
    t_k = t_q if t_k is None else t_k
    return torch.tril(torch.ones(t_q, t_k, dtype=torch.bool), diagonal=t_k - t_q if offset else 0)


def test_causal_mask(capsys):  # (t_q, t_k): more planted mistakes in test_checks_ch02_transfer.py
    passes(ch02.check_causal_mask, kv_mask, capsys)
    fails_with(ch02.check_causal_mask, lambda t_q, t_k=None: kv_mask(t_q, t_k).float(), "boolean")
    fails_with(ch02.check_causal_mask, lambda t_q, t_k=None: ~kv_mask(t_q, t_k), "inverted")
    fails_with(ch02.check_causal_mask, lambda t_q, t_k=None: kv_mask(t_q, t_k, offset=False), "top-left")
    fails_with(ch02.check_causal_mask, lambda T, t_k=None: torch.triu(torch.ones(T, T, dtype=torch.bool)), "upper")
    fails_with(ch02.check_causal_mask, lambda T, t_k=None: torch.tril(torch.ones(T, T, dtype=torch.bool), -1), "diagonal")
    fails_with(ch02.check_causal_mask, lambda T, t_k=None: torch.ones(T, T, dtype=torch.bool), "allows everything")
    fails_with(ch02.check_causal_mask,
               lambda T, t_k=None: torch.zeros(T, T).masked_fill(~kv_mask(T), float("-inf")), "additive")


def test_split_heads(capsys):
    passes(ch02.check_split_heads, lambda x, nh: x.view(x.shape[0], x.shape[1], nh, -1).transpose(1, 2), capsys)
    fails_with(ch02.check_split_heads, lambda x, nh: x.reshape(x.shape[0], nh, x.shape[1], -1), "mixes positions")
    fails_with(ch02.check_split_heads, lambda x, nh: x.view(x.shape[0], x.shape[1], -1, nh).permute(0, 3, 1, 2),
               "(head_size, n_head)")
    fails_with(ch02.check_split_heads, lambda x, nh: x.view(x.shape[0], x.shape[1], nh, -1), "shape")


def make_mha(proj=True, mask=True, heads="split", scale="head"):
    def fn(x, attn):
        B, T, C = x.shape
        nh = attn.n_head if heads != "one" else 1
        hs = C // nh
        q, k, v = attn.c_attn(x).split(C, dim=2)
        if heads == "reshape":
            q, k, v = (t.reshape(B, nh, T, hs) for t in (q, k, v))
        else:
            q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        s = q @ k.transpose(-2, -1) / math.sqrt({"head": hs, "embd": C, "none": 1}[scale])
        if mask:
            s = s.masked_fill(~causal_mask(T), float("-inf"))
        y = torch.softmax(s, -1) @ v
        y = y.transpose(1, 2).reshape(B, T, C)
        return attn.c_proj(y) if proj else y
    return fn


def test_multi_head(capsys):
    passes(ch02.check_multi_head, make_mha(), capsys)
    fails_with(ch02.check_multi_head, make_mha(proj=False), "output projection")
    fails_with(ch02.check_multi_head, make_mha(mask=False), "missing causal mask")
    fails_with(ch02.check_multi_head, make_mha(heads="one"), "one big head")
    fails_with(ch02.check_multi_head, make_mha(scale="none"), "no √d_k scaling")
    fails_with(ch02.check_multi_head, make_mha(scale="embd"), "√n_embd")
    fails_with(ch02.check_multi_head, make_mha(heads="reshape"), "mixing positions and heads")
    fails_with(ch02.check_multi_head, lambda x, attn: (make_mha()(x, attn),), "should be a torch.Tensor")
    fails_with(ch02.check_multi_head, lambda x, attn: attn(x)[0], "write it by hand", "CausalSelfAttention.forward")


# ---------------------------------------------------------------- chapter 03

def good_ffn(x, W1, b1, W2, b2):
    return torch.relu(x @ W1 + b1) @ W2 + b2


def test_ffn(capsys):
    passes(ch03.check_ffn, good_ffn, capsys)
    fails_with(ch03.check_ffn, lambda x, W1, b1, W2, b2: (x @ W1 + b1) @ W2 + b2, "no non-linearity")
    fails_with(ch03.check_ffn, lambda x, W1, b1, W2, b2: torch.relu(good_ffn(x, W1, b1, W2, b2)), "after the second")
    fails_with(ch03.check_ffn, lambda x, W1, b1, W2, b2: F.gelu(x @ W1 + b1) @ W2 + b2, "gelu")
    fails_with(ch03.check_ffn, lambda x, W1, b1, W2, b2: torch.relu(x @ W1 + b1) @ W2, "b2")
    fails_with(ch03.check_ffn, lambda x, W1, b1, W2, b2: torch.relu(x @ W1) @ W2 + b2, "b1")
    fails_with(ch03.check_ffn, lambda x, W1, b1, W2, b2: torch.relu(x @ W1 + b1), "shape")


def good_block(x, block):
    x = x + block.attn(block.ln_1(x))[0]
    return x + block.mlp(block.ln_2(x))


def test_block(capsys):
    passes(ch03.check_block, good_block, capsys)
    a = lambda b, h: b.attn(h)[0]  # noqa: E731
    fails_with(ch03.check_block, lambda x, b: torch.cat([x, a(b, b.ln_1(x))], -1), "concatenated instead of added")

    def post_ln(x, b):
        x = b.ln_1(x + a(b, x))
        return b.ln_2(x + b.mlp(x))

    def parallel(x, b):
        return x + a(b, b.ln_1(x)) + b.mlp(b.ln_2(x))

    def ln1_twice(x, b):
        x = x + a(b, b.ln_1(x))
        return x + b.mlp(b.ln_1(x))

    fails_with(ch03.check_block, post_ln, "post-LN")
    fails_with(ch03.check_block, lambda x, b: b.mlp(b.ln_2(a(b, b.ln_1(x)))), "no residual")
    fails_with(ch03.check_block, parallel, "after attention was added")
    fails_with(ch03.check_block, ln1_twice, "ln_1 twice")
    fails_with(ch03.check_block, lambda x, b: x + a(b, b.ln_1(x)), "forgot the FFN")
    fails_with(ch03.check_block, lambda x, b: x + b.attn(b.ln_1(x)), "take its first element")


def good_count(cfg):
    V, T, L, C, b = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd, int(cfg.bias)
    per_block = 2 * (C + b * C) + (3 * C * C + b * 3 * C) + (C * C + b * C) + (4 * C * C + b * 4 * C) + (4 * C * C + b * C)
    return V * C + T * C + L * per_block + C + b * C


def test_param_count(capsys):
    passes(ch03.check_param_count, good_count, capsys)
    fails_with(ch03.check_param_count, lambda c: good_count(c) + c.vocab_size * c.n_embd, "tied")
    fails_with(ch03.check_param_count, lambda c: good_count(c) - c.block_size * c.n_embd, "position embeddings")
    fails_with(ch03.check_param_count, lambda c: good_count(c) - 2 * c.n_embd, "final LayerNorm")
    fails_with(ch03.check_param_count, lambda c: good_count(c) - c.n_layer * 9 * c.n_embd, "biases of the Linear")
    fails_with(ch03.check_param_count, lambda c: good_count(c) - c.n_layer * 6 * c.n_embd ** 2 - c.n_layer * 3 * c.n_embd,
               "4 × n_embd")
    always_bias = lambda c: good_count(type(c)(**{**c.to_dict(), "bias": True}))  # noqa: E731
    fails_with(ch03.check_param_count, always_bias, "bias=False")
    fails_with(ch03.check_param_count, lambda c: "lots", "should be an int")
    fails_with(ch03.check_param_count, lambda c: good_count(c) + 1, "off by +1")


# ---------------------------------------------------------------- chapter 04

def _seq_logprob(model, ids):
    logits = model(ids[None])[0][0]
    logp = torch.log_softmax(logits, -1)
    return logp[torch.arange(len(ids) - 1), ids[1:]].sum()


def test_sequence_logprob(capsys):
    passes(ch04.check_sequence_logprob, _seq_logprob, capsys)

    def by_loop(model, ids):  # the chain rule literally: one forward pass per prefix
        total = 0.0
        for i in range(1, len(ids)):
            logits = model(ids[None, :i])[0][0, -1]
            total += torch.log_softmax(logits, -1)[ids[i]].item()
        return total

    passes(ch04.check_sequence_logprob, by_loop, capsys)

    def same_position(model, ids):
        logp = torch.log_softmax(model(ids[None])[0][0], -1)
        return logp[torch.arange(len(ids)), ids].sum()

    def probability(model, ids):
        return _seq_logprob(model, ids).exp()

    def raw_logits(model, ids):
        logits = model(ids[None])[0][0]
        return logits[torch.arange(len(ids) - 1), ids[1:]].sum()

    fails_with(ch04.check_sequence_logprob, same_position, "off-by-one")
    fails_with(ch04.check_sequence_logprob, probability, "the probability")
    fails_with(ch04.check_sequence_logprob, lambda m, ids: -_seq_logprob(m, ids), "sign")
    fails_with(ch04.check_sequence_logprob, lambda m, ids: _seq_logprob(m, ids) / (len(ids) - 1), "averaged")
    fails_with(ch04.check_sequence_logprob, raw_logits, "raw logits")


def test_shift(capsys):
    passes(ch04.check_shift, lambda ids: (ids[:, :-1], ids[:, 1:]), capsys)
    fails_with(ch04.check_shift, lambda ids: (ids, ids), "no shift")
    fails_with(ch04.check_shift, lambda ids: (ids[:, 1:], ids[:, :-1]), "off-by-one", "swapped")
    fails_with(ch04.check_shift, lambda ids: (ids[:, :-1], ids[:, :-1]), "off-by-one")
    fails_with(ch04.check_shift, lambda ids: (ids[:-1], ids[1:]), "time dimension")
    fails_with(ch04.check_shift, lambda ids: ids, "pair")


def test_uniform_loss(capsys):
    ch04.check_uniform_loss(math.log(65), 65)
    assert capsys.readouterr().out.startswith("✅")
    for wrong, frag in [(math.log2(65), "base 2"), (1 / 65, "probability"), (65, "perplexity"),
                        (-math.log(65), "sign"), (3.0, "-log(1/V)")]:
        with pytest.raises(CheckFailed, match=frag.replace("(", r"\(").replace(")", r"\)")):
            ch04.check_uniform_loss(wrong, 65)


def test_perplexity_and_bits(capsys):
    passes(ch04.check_perplexity, math.exp, capsys)
    passes(ch04.check_bits_per_char, lambda loss: loss / math.log(2), capsys)
    fails_with(ch04.check_perplexity, lambda loss: 2 ** loss, "not 2^loss")
    fails_with(ch04.check_perplexity, lambda loss: math.exp(-loss), "sign")
    fails_with(ch04.check_bits_per_char, lambda loss: loss * math.log(2), "multiplied")
    fails_with(ch04.check_bits_per_char, lambda loss: loss, "nats")
    fails_with(ch04.check_bits_per_char, lambda loss: loss / math.log(10), "not ln 10")


def good_bigram(ids, V, alpha):
    N = torch.zeros(V, V)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist()):
        N[a, b] += 1
    N += alpha
    return N / N.sum(1, keepdim=True)


def test_bigram_probs(capsys):
    passes(ch04.check_bigram_probs, good_bigram, capsys)
    fails_with(ch04.check_bigram_probs, lambda ids, V, a: good_bigram(ids, V, a).T, "transposed")
    fails_with(ch04.check_bigram_probs, lambda ids, V, a: good_bigram(ids, V, 0.0), "no smoothing")
    fails_with(ch04.check_bigram_probs, lambda ids, V, a: good_bigram(ids, V, 1.0), "added 1")

    def counts(ids, V, a):
        return good_bigram(ids, V, a) * 0 + torch.bincount(ids[:-1] * V + ids[1:], minlength=V * V).view(V, V).float() + a

    def columns(ids, V, a):
        N = counts(ids, V, a)
        return N / N.sum(0, keepdim=True)

    def joint(ids, V, a):
        N = counts(ids, V, a)
        return N / N.sum()

    def skip_one(ids, V, a):
        N = torch.bincount(ids[:-2] * V + ids[2:], minlength=V * V).view(V, V).float() + a
        return N / N.sum(1, keepdim=True)

    fails_with(ch04.check_bigram_probs, counts, "returned counts")
    fails_with(ch04.check_bigram_probs, columns, "normalized the columns")
    fails_with(ch04.check_bigram_probs, joint, "whole matrix")
    fails_with(ch04.check_bigram_probs, skip_one, "neighbours")
    fails_with(ch04.check_bigram_probs, lambda ids, V, a: torch.ones(V, V), "do not sum to 1")
    fails_with(ch04.check_bigram_probs, lambda ids, V, a: torch.full((V, V), 1.0 / V), "differ")


# ---------------------------------------------------------------- every check refuses what the grader refuses

def test_every_forbidding_check_refuses_the_package_in_the_notebook():
    """An answer that calls the forbidden function, directly or through other package code, or that
    *is* the package's function, fails with the grader's message; the checks' own reference
    computations (which call the same functions) do not count."""
    from minigpt.checks import ch00
    from minigpt.model import Block

    fails_with(ch03.check_block, lambda x, b: b(x)[0], "write it by hand", "minigpt.model.Block.forward")
    fails_with(ch03.check_block, lambda x, b: torch.nn.Sequential(b)(x)[0], "minigpt.model.Block.forward")
    fails_with(ch03.check_block, Block.forward, "minigpt.model.Block.forward")
    fails_with(ch00.check_pairwise_sq_dists, lambda a, b: torch.cdist(a, b) ** 2, "torch.cdist")
    fails_with(ch04.check_perplexity, __import__("minigpt").objective.perplexity, "minigpt.objective.perplexity")


def test_the_refusal_restores_an_outer_profile_hook(capsys):
    import sys

    seen = []

    def outer(frame, event, arg):
        seen.append(event)

    sys.setprofile(outer)
    try:
        ch03.check_block(good_block)
        assert sys.getprofile() is outer
    finally:
        sys.setprofile(None)
    assert seen
