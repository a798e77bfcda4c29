"""Hidden cases that are hidden (issue 16): for every exercise check, an answer hard-coded to the
visible inputs (a lookup table of the visible calls and their right answers, garbage elsewhere)
passes the visible check and fails the hidden runs, for every one of several secret offsets; an
honest answer passes them all. The honest answers are written here by hand, from the solution
notebooks, not taken from the package the checks compare with.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from minigpt import Block
from minigpt.checks import CheckFailed, ch00, ch01, ch02, ch03, ch04, ch05, ch06, ch07, ch08, ch09, hidden_inputs
from test_checks_ch09 import _count as _count09, _heads_that_fit as _fit09, _kv as _kv09, _rope as _rope09, \
    _to_gqa as _to_gqa09

OFFSETS = (101, 7919, 123_457, 9_999_991, 31_337)


def _merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _bpe_encode(ids, merges):
    rank = {tuple(pair): 256 + k for k, pair in enumerate(merges)}
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
        if pair not in rank:
            break
        ids = _merge(ids, pair, rank[pair])
    return ids


def _attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v


def _left_padded(q, k, v, lengths):
    T = q.size(-2)
    real = torch.arange(T)[None, :] >= T - lengths[:, None]  # (B, T): the last lengths[b] tokens
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool)) & real[:, None, None, :]
    return _attention(q, k, v, mask | torch.eye(T, dtype=torch.bool))  # every pad sees itself: no NaN


def _split(x, nh):
    B, T, C = x.shape
    return x.view(B, T, nh, C // nh).transpose(1, 2)


def _multi_head(x, attn):
    B, T, C = x.shape
    q, k, v = (_split(t, attn.n_head) for t in attn.c_attn(x).split(C, dim=2))
    y = _attention(q, k, v, torch.tril(torch.ones(T, T, dtype=torch.bool)))
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


def _grouped_query(x, attn):
    B, T, C = x.shape
    H, H_kv, hs = attn.n_head, attn.n_kv_head, attn.head_size
    q, k, v = attn.c_attn(x).split([H * hs, H_kv * hs, H_kv * hs], dim=2)
    k, v = (_split(t, H_kv).repeat_interleave(H // H_kv, dim=1) for t in (k, v))  # query head h reads h // g
    y = _attention(_split(q, H), k, v, torch.tril(torch.ones(T, T, dtype=torch.bool)))
    return attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


def _sinusoids(T, C):
    pe = torch.zeros(T, C)
    angle = torch.arange(T, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(0, C, 2, dtype=torch.float64) / C)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


def _param_count(cfg):
    V, Tm, L, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    b = 1 if cfg.bias else 0
    return V * C + Tm * C + L * (12 * C * C + b * 9 * C + 2 * (C + b * C)) + (C + b * C)


class _MyGPT(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        nn = torch.nn
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd), wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout), h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=nn.LayerNorm(cfg.n_embd)))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, idx):
        tf = self.transformer
        x = tf.drop(tf.wte(idx) + tf.wpe(torch.arange(idx.shape[1])))
        for block in tf.h:
            x = block(x)[0]
        return self.lm_head(tf.ln_f(x))


def _seq_logprob(model, ids):
    with torch.no_grad():
        logits = model(ids[None, :-1])[0][0]
    return torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), ids[1:]].sum()


def _cross_entropy_skipping(logits, targets):
    real = targets != -100
    nll = -torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return nll[real].mean()  # nan when no target is real, as F.cross_entropy


def _bigram(ids, V, alpha):
    N = torch.zeros(V, V, dtype=torch.float64)
    N.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.float64), accumulate=True)
    N += alpha
    return N / N.sum(1, keepdim=True)


def _windows(ids, T, stride):
    starts = range(0, len(ids) - T, stride)  # every start with T + 1 tokens left
    w = torch.stack([ids[s:s + T + 1] for s in starts])
    return w[:, :-1], w[:, 1:]


def _trigram(train, val, V, alpha):
    N = torch.zeros(V, V, V, dtype=torch.float64)
    N.index_put_((train[:-2], train[1:-1], train[2:]), torch.ones(len(train) - 2, dtype=torch.float64),
                 accumulate=True)
    P = (N + alpha) / (N + alpha).sum(-1, keepdim=True)
    return P, -P.log()[val[:-2], val[1:-1], val[2:]].mean()


def _lr(step, max_lr, min_lr, warmup, decay):
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    if step > decay:
        return min_lr
    ratio = (step - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def _train_step(model, opt, x, y, clip):
    opt.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


def _train_loop(model, batches, lrs, clip):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    losses = []
    for (x, y), lr in zip(batches, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        losses.append(_train_step(model, opt, x, y, clip))
    return losses


def _chat(turns):
    x, y = [], []
    for role, ids in turns:
        for t in ids:
            if x:  # every token after the first is the target of the one before it
                y.append(t if role == "assistant" else -100)
            x.append(t)
    return torch.tensor(x[:-1]), torch.tensor(y)


def _top_k(logits, k):
    kth = logits.topk(k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def _top_p(probs, p):
    sp, order = probs.sort(descending=True, stable=True)
    keep = torch.zeros_like(sp, dtype=torch.bool).scatter(0, order, (sp.cumsum(0) - sp) < p)
    kept = probs * keep
    return kept / kept.sum()


def _penalize(logits, prev, penalty):
    out = logits.clone()
    seen = prev.unique()
    z = out[seen]
    out[seen] = torch.where(z > 0, z / penalty, z * penalty)
    return out


def _repetition_rate(ids, n):
    grams = [tuple(ids[i:i + n].tolist()) for i in range(len(ids) - n + 1)]
    return sum(g in grams[:i] for i, g in enumerate(grams)) / len(grams) if grams else 0.0


def _rollout(w):
    T = w.shape[-1]
    eye = torch.eye(T, dtype=w.dtype)
    r = eye
    for layer in w.mean(1):
        r = (0.5 * layer + 0.5 * eye) @ r
    return r


def _layer_output(model, name, x):
    seen = []
    handle = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        model(x)
    finally:
        handle.remove()
    return seen[0]


HONEST = {
    ch00.check_softplus_grad: lambda x: torch.sigmoid(x),
    ch00.check_pairwise_sq_dists: lambda A, B: ((A[:, None, :] - B[None, :, :]) ** 2).sum(-1),
    ch00.check_layer_output: _layer_output,
    ch01.check_vocab: lambda t: ({c: i for i, c in enumerate(sorted(set(t)))}, sorted(set(t))),
    ch01.check_pair_counts: lambda ids: Counter(zip(ids, ids[1:])),
    ch01.check_merge: _merge,
    # detached: E requires grad there, and hard_coded deep-copies answers, which only graph leaves allow
    ch01.check_onehot_embedding: lambda ids, E: (F.one_hot(ids, E.shape[0]).to(E.dtype) @ E).detach(),
    ch01.check_input_embedding: lambda idx, wte, wpe: wte[idx] + wpe[torch.arange(idx.shape[1])],
    ch01.check_sinusoidal: _sinusoids,
    ch01.check_bpe_encode: _bpe_encode,
    ch02.check_attention: _attention,
    ch02.check_causal_mask: lambda t_q, t_k=None: torch.ones(t_q, t_q if t_k is None else t_k, dtype=torch.bool)
    .tril((t_q if t_k is None else t_k) - t_q),
    ch02.check_split_heads: _split,
    ch02.check_multi_head: _multi_head,
    ch02.check_grouped_query: _grouped_query,
    ch02.check_padded_causal_attention: _left_padded,
    ch03.check_ffn: lambda x, W1, b1, W2, b2: torch.clamp(x @ W1 + b1, min=0) @ W2 + b2,
    ch03.check_gelu_grad: lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x**2 / 2) / math.sqrt(2 * math.pi),
    ch03.check_rmsnorm: lambda x, g, eps: g * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps),
    ch03.check_block: lambda x, blk: (lambda h: h + blk.mlp(blk.ln_2(h)))(x + blk.attn(blk.ln_1(x))[0]),
    ch03.check_param_count: _param_count,
    ch03.check_gpt_module: ch03.build_and_run(_MyGPT),  # how the grader reaches a class in the student's kernel
    ch03.check_post_ln_block: lambda x, blk: (lambda h: blk.ln_2(h + blk.mlp(h)))(blk.ln_1(x + blk.attn(x)[0])),
    ch04.check_sequence_logprob: _seq_logprob,
    ch04.check_shift: lambda ids: (ids[:, :-1], ids[:, 1:]),
    ch04.check_cross_entropy: _cross_entropy_skipping,
    ch04.check_uniform_loss: lambda V: math.log(V),
    ch04.check_perplexity: math.exp,
    ch04.check_bits_per_char: lambda loss: loss / math.log(2),
    ch04.check_bigram_probs: _bigram,
    ch04.check_windows: _windows,
    ch04.check_trigram: _trigram,
    ch05.check_training_flops: lambda n, it, b, t: 6 * n * it * b * t,
    ch05.check_lr_schedule: _lr,
    ch05.check_train_step: _train_step,
    ch05.check_train_loop: _train_loop,
    ch06.check_chat_targets: _chat,
    ch06.check_lora_forward: lambda x, W, b, A, B, alpha, r: x @ W.T + b + (alpha / r) * (x @ A.T @ B.T),
    ch06.check_lora_init: lambda i, o, r: (torch.randn(r, i) / i ** 0.5, torch.zeros(o, r)),
    ch06.check_lora_count: lambda C, L, r: L * r * (4 * C + 2 * C + 5 * C + 5 * C),
    ch07.check_temperature: lambda z, T: torch.softmax(z / T, -1),
    ch07.check_top_k: _top_k,
    ch07.check_top_p: _top_p,
    ch07.check_repetition_penalty: _penalize,
    ch07.check_repetition_rate: _repetition_rate,
    ch08.check_previous_token_score: lambda w: torch.diagonal(w, offset=-1, dim1=-2, dim2=-1).mean(-1),
    ch08.check_rollout: _rollout,
    ch09.check_rope: _rope09,
    ch09.check_param_count: _count09,
    ch09.check_kv_cache_bytes: _kv09,
    ch09.check_mha_to_gqa: _to_gqa09,
    ch09.check_kv_heads_that_fit: _fit09,
}


def _same_arg(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, torch.nn.Module) and isinstance(b, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(_same_arg(sa[k], sb[k]) for k in sa)
    if isinstance(a, torch.optim.Optimizer) or isinstance(b, torch.optim.Optimizer):
        return type(a) is type(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_arg(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def hard_coded(check, honest):
    """An answer that knows the right output for exactly the calls the visible check makes."""
    import copy

    table = []

    # record and answer have no Python loop of their own: ch00.check_pairwise_sq_dists fails loops
    def record(*args):
        before = copy.deepcopy(list(filter(lambda a: not isinstance(a, torch.optim.Optimizer), args)))
        out = honest(*args)
        table.append((before, copy.deepcopy(out) if not isinstance(out, float) else out))
        return out

    check(record)

    def answer(*args):
        plain = list(filter(lambda a: not isinstance(a, torch.optim.Optimizer), args))
        hits = list(filter(lambda row: _same_arg(row[0], plain), table))
        if hits:
            if check in (ch05.check_train_step, ch05.check_train_loop):
                return honest(*args)  # the steps' effect is the answer; only on the visible batches
            return copy.deepcopy(hits[0][1])
        if check is ch05.check_train_step:
            return 0.0  # no step at all
        return copy.deepcopy(table[0][1])  # the answer to the first visible call

    return answer


@pytest.mark.parametrize("check", list(HONEST), ids=lambda c: f"{c.__module__[-4:]}.{c.__name__}")
def test_honest_answer_passes_and_hard_coded_answer_fails_hidden(check, capsys):
    honest = HONEST[check]
    check(honest)
    fake = hard_coded(check, honest)
    check(fake)  # the visible check cannot tell
    assert capsys.readouterr().out.count("✅") == 3  # honest, recording, hard-coded
    for offset in OFFSETS:
        with hidden_inputs(offset):
            check(honest)
            with pytest.raises(CheckFailed):
                check(fake)
    assert capsys.readouterr().out == ""  # hidden runs are silent


@pytest.mark.parametrize("check", list(HONEST), ids=lambda c: f"{c.__module__[-4:]}.{c.__name__}")
def test_honest_answer_passes_every_secret(check):
    """The grader's secret is any number: an honest answer must pass whatever the draw (a rare
    draw once asked ch08 for 3 distinct heads out of 2 and failed an honest answer)."""
    import random

    offsets = random.Random(16).sample(range(1, 10**9), 40)
    for offset in offsets:
        with hidden_inputs(offset):
            try:
                check(HONEST[check])
            except CheckFailed as e:
                raise AssertionError(f"offset {offset}: {e}") from None


def _fails(check, fn, fragment):
    with pytest.raises(CheckFailed) as info:
        check(fn)
    assert fragment in str(info.value), str(info.value)
    for offset in OFFSETS[:2]:  # the same message on hidden inputs
        with hidden_inputs(offset), pytest.raises(CheckFailed) as info:
            check(fn)
        assert fragment in str(info.value), str(info.value)


def test_specific_messages_for_the_mistakes_the_issue_lists():
    def no_transpose(x, attn):
        B, T, C = x.shape
        q, k, v = (_split(t, attn.n_head) for t in attn.c_attn(x).split(C, dim=2))
        y = _attention(q, k, v, torch.tril(torch.ones(T, T, dtype=torch.bool)))
        return attn.c_proj(y.reshape(B, T, C))

    def sqrt_dv(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1) / math.sqrt(v.size(-1))
        return torch.softmax(s if mask is None else s.masked_fill(~mask, float("-inf")), -1) @ v

    def no_ln_bias(cfg):
        return _param_count(cfg) - (2 * cfg.n_layer + 1) * cfg.n_embd * cfg.bias

    def zero_grad_late(model, opt, x, y, clip):
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.zero_grad()
        opt.step()
        return loss.item()

    _fails(ch02.check_multi_head, no_transpose, "without transposing back")
    _fails(ch02.check_attention, sqrt_dv, "√d_v")
    with pytest.raises(CheckFailed, match="LayerNorm biases"):
        ch03.check_param_count(no_ln_bias)
    _fails(ch04.check_cross_entropy, lambda lg, t: F.cross_entropy(lg, t), "check the shapes")
    _fails(ch05.check_train_step, zero_grad_late, "between loss.backward() and opt.step()")
    _fails(ch07.check_temperature, lambda z, T: torch.softmax(z, -1) ** (1 / T), "did not renormalise")
    _fails(ch07.check_top_k, lambda z, k: z.topk(k).values, "whole logits vector")
    _fails(ch07.check_repetition_penalty, lambda z, prev, pen: torch.where(z > 0, z / pen, z * pen),
           "penalised every token")


def test_lora_scale_mistakes_fail_every_hidden_run():
    for wrong in (lambda x, W, b, A, B, alpha, r: x @ W.T + b + alpha * (x @ A.T @ B.T),
                  lambda x, W, b, A, B, alpha, r: x @ W.T + b + (r / alpha) * (x @ A.T @ B.T)):
        for offset in OFFSETS:
            with hidden_inputs(offset), pytest.raises(CheckFailed, match="scaling"):
                ch06.check_lora_forward(wrong)


@pytest.mark.parametrize("module", ["test_checks_ch00", "test_checks_ch01_04", "test_checks_ch05_07",
                                    "test_checks_ch07_transfer"])
def test_every_listed_mistake_is_named_on_hidden_inputs_too(module):
    """The mistake tests of ``tests/test_checks_*.py`` (each mistake, its specific message), replayed
    with hidden sizes and values (printing left on, so their ✅ assertions still hold)."""
    import contextlib
    import importlib
    import inspect
    import io

    import minigpt.checks as mc

    mod = importlib.import_module(module)

    class Out:  # what the tests read from capsys
        def __init__(self):
            self.buf = io.StringIO()

        def readouterr(self):
            text = self.buf.getvalue()
            self.buf.seek(0)
            self.buf.truncate()
            return type("R", (), {"out": text, "err": ""})

    tests = [f for n, f in inspect.getmembers(mod, inspect.isfunction)
             if n.startswith("test_") and f.__module__ == mod.__name__
             and set(inspect.signature(f).parameters) <= {"capsys"}]
    assert len(tests) >= 7
    for offset in OFFSETS[:3]:
        for test in tests:
            mc._hidden.update(offset=offset, quiet=False)
            out = Out()
            try:
                with contextlib.redirect_stdout(out.buf):
                    test(out) if inspect.signature(test).parameters else test()
            finally:
                mc._hidden.update(offset=0, quiet=False)


def test_previous_token_head_as_a_function_is_checked_on_other_weights():
    def honest(w):
        scores = torch.stack([torch.diagonal(x, offset=-1, dim1=-2, dim2=-1).mean(-1) for x in w]).mean(0)
        return divmod(int(scores.argmax()), scores.shape[1])

    visible = ch08._causal_random((3, 4, 9, 9), seed=8)
    visible[2, 1] = torch.eye(9, dtype=torch.float64).roll(-1, 1).tril()  # not causal at 0 -> mostly prev
    fixed = honest(visible[None])
    ch08.check_previous_token_head(honest, visible)
    ch08.check_previous_token_head(lambda w: fixed, visible)  # the visible check cannot tell
    for offset in (*OFFSETS, *range(1, 60)):  # every secret, including the small draws (L = 2)
        with hidden_inputs(offset):
            ch08.check_previous_token_head(honest, visible)
            with pytest.raises(CheckFailed):
                ch08.check_previous_token_head(lambda w: fixed, visible)
            with pytest.raises(CheckFailed):
                ch08.check_previous_token_head(lambda w: honest(w)[::-1], visible)
