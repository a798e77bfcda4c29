"""Muon (float32 Newton–Schulz), the Muon + AdamW pairing, and the WSD learning-rate schedule.

References are independent of the code under test: the SVD (torch.linalg.svd in float64) for
what orthogonalisation must produce, a hand-written update for one Muon step, hand-computed
schedule values.
"""

import pytest
import torch

from minigpt import GPTConfig
from minigpt.optim import Muon, MuonAdamW, muon_param_names, orthogonalize, qkv_splits
from minigpt.train import TrainConfig, build_model, configure_optimizer, lr_at, train

TEXT = "to be or not to be, that is the question. " * 40


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest's _quiet restores the count afterwards


def _svd_check(g: torch.Tensor, o: torch.Tensor, spread: float = 5.0) -> None:
    """o must be U f(S) Vᵀ for g = U S Vᵀ with every f(s) close to 1: same singular vectors, flat spectrum."""
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    d = u.T @ o.double() @ vh.T  # diagonal iff o shares g's singular vectors
    off = d - torch.diag(torch.diagonal(d))
    assert off.abs().max() < 2e-3
    assert torch.diagonal(d).min() > 0.6 and torch.diagonal(d).max() < 1.25  # Jordan's quintic: about [0.7, 1.2]
    assert s.max() / s.min() > spread  # the input was far from orthogonal, so the test means something


@pytest.mark.parametrize("shape", [(32, 8), (8, 32), (24, 24)])
def test_orthogonalize_flattens_the_spectrum(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    u, _ = torch.linalg.qr(torch.randn(shape[0], min(shape), generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], min(shape), generator=gen))
    s = torch.logspace(0, -1.5, min(shape))  # singular values from 1 down to 0.03
    g = (u * s) @ v.T
    _svd_check(g, orthogonalize(g))


def test_one_muon_step_by_hand():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(12, 4, generator=gen)
    grads = [torch.randn(12, 4, generator=gen) for _ in range(2)]
    p = torch.nn.Parameter(w0.clone())
    opt = Muon([p], lr=0.1, momentum=0.9, weight_decay=0.5, splits={p: [4, 8]})
    for g in grads:
        p.grad = g.clone()
        opt.step()
    want, m = w0.clone(), torch.zeros(12, 4)
    for g in grads:
        m = 0.9 * m + g
        nesterov = g + 0.9 * m
        want = want * (1 - 0.1 * 0.5)
        top, bottom = nesterov[:4], nesterov[4:]
        want[:4] -= 0.1 * 1.0 * orthogonalize(top)  # 4 x 4: scale sqrt(max(1, 4/4)) = 1
        want[4:] -= 0.1 * 2 ** 0.5 * orthogonalize(bottom)  # 8 x 4: sqrt(2)
    torch.testing.assert_close(p.detach(), want, atol=1e-6, rtol=0)
    _svd_check(nesterov[4:], orthogonalize(nesterov[4:]), spread=1.5)  # the blocks are each orthogonalised


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="2-D weight matrices only.*AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def _model(**kw):
    return build_model(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, **kw), seed=0)


def test_muon_gets_exactly_the_blocks_matrices():
    model = _model()
    opt = configure_optimizer(model, TrainConfig(optimizer="muon", muon_lr=0.03, learning_rate=1e-3))
    assert isinstance(opt, MuonAdamW)
    muon, adamw = opt.optimizers
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = sorted(names[id(p)] for g in muon.param_groups for p in g["params"])
    assert in_muon == sorted(f"transformer.h.{i}.{m}.weight" for i in range(2)
                             for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    assert in_muon == sorted(muon_param_names(model))
    in_adamw = sorted(names[id(p)] for g in adamw.param_groups for p in g["params"])
    assert "transformer.wte.weight" in in_adamw and "transformer.wpe.weight" in in_adamw
    assert sorted(in_muon + in_adamw) == sorted(names.values())  # every parameter once (the tied head too)
    assert all(g["weight_decay"] == 0 for g in muon.param_groups)
    assert [g["lr_scale"] for g in opt.param_groups] == [30.0, 1.0, 1.0]
    assert list(qkv_splits(model).values()) == [[16, 16, 16]] * 2


def test_wsd_schedule():
    cfg = TrainConfig(max_iters=100, warmup_iters=10, learning_rate=1.0, min_lr=0.0, lr_schedule="wsd",
                      cooldown_frac=0.4)
    assert lr_at(0, cfg) == pytest.approx(1 / 11)
    assert [lr_at(s, cfg) for s in (10, 30, 60)] == [1.0, 1.0, 1.0]  # stable until 40 steps are left
    assert lr_at(80, cfg) == pytest.approx(0.5) and lr_at(99, cfg) == pytest.approx(0.025)
    assert lr_at(100, cfg) == 0.0 and lr_at(150, cfg) == 0.0
    floor = TrainConfig(**{**cfg.to_dict(), "min_lr": 0.2})
    assert lr_at(80, floor) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="cooldown_frac must be in"):
        TrainConfig(cooldown_frac=1.5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="sgd")


@pytest.fixture(scope="module")
def corpus():
    from minigpt.data import encode_corpus
    from minigpt.tokenizer import CharTokenizer

    tok = CharTokenizer.from_text(TEXT)
    return tok, encode_corpus(TEXT, tok)


def _cfg(**kw):
    base = dict(max_iters=12, batch_size=4, warmup_iters=2, eval_interval=0, train_eval_batches=1, device="cpu",
                optimizer="muon", muon_lr=0.02, learning_rate=3e-3, lr_schedule="wsd", seed=3)
    return TrainConfig(**{**base, **kw})


def test_muon_training_resumes_bit_for_bit(corpus, tmp_path):
    """6 steps, saved; resumed to 12: the same weights as 12 steps at once (Muon's momentum is restored)."""
    tok, data = corpus
    gcfg = GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=2, n_head=2, n_embd=16)
    whole = build_model(gcfg, seed=3)
    train(whole, data, None, _cfg(), tokenizer=tok)
    first_half = build_model(gcfg, seed=3)
    train(first_half, data, None, _cfg(max_iters=6, lr_decay_iters=12), tokenizer=tok, out_dir=tmp_path)
    resumed = build_model(gcfg, seed=3)
    train(resumed, data, None, _cfg(lr_decay_iters=12), tokenizer=tok, out_dir=tmp_path, resume=True)
    changed = [not torch.equal(a, b) for a, b in zip(whole.state_dict().values(), first_half.state_dict().values())]
    assert all(changed)  # the second half moved every tensor
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_grouped_query_splits_and_muon_set():
    """With 4 query heads sharing 1 key/value head, c_attn holds 32 query rows and 8 + 8 key/value rows."""
    model = build_model(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=4, n_kv_head=1,
                                               n_embd=32, activation="swiglu", tie_weights=False), seed=0)
    assert list(qkv_splits(model).values()) == [[32, 8, 8]]
    assert sorted(muon_param_names(model)) == sorted(
        f"transformer.h.0.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_gate", "mlp.c_proj"))
    opt = configure_optimizer(model, TrainConfig(optimizer="muon"))
    names = {id(p): n for n, p in model.named_parameters()}
    assert "lm_head.weight" in {names[id(p)] for p in opt.optimizers[1].param_groups[0]["params"]}  # AdamW, decayed
