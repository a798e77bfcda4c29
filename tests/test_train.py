import json
import math

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.data import encode_corpus, iter_eval_windows
from minigpt.tokenizer import CharTokenizer
from minigpt.train import (History, TrainConfig, build_model, configure_optimizer, evaluate, lr_at,
                           train)

TEXT = "to be or not to be, that is the question. " * 40


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest's _quiet restores the count afterwards


@pytest.fixture
def corpus():
    tok = CharTokenizer.from_text(TEXT)
    ids = encode_corpus(TEXT, tok)
    n = int(0.9 * len(ids))
    return tok, ids[:n], ids[n:]


def tiny(vocab_size: int, dropout: float = 0.0, seed: int = 0) -> GPT:
    return build_model(GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16,
                                 dropout=dropout), seed)


def fast_cfg(**kw) -> TrainConfig:
    base = dict(max_iters=30, batch_size=8, learning_rate=1e-2, min_lr=1e-3, warmup_iters=5,
                eval_interval=10, eval_batches=2, train_eval_batches=2, device="cpu")
    return TrainConfig(**{**base, **kw})


# --------------------------------------------------------------------------- config and schedule

@pytest.mark.parametrize("kwargs, name", [
    ({"max_iters": -1}, "max_iters"), ({"batch_size": 0}, "batch_size"), ({"learning_rate": -1.0}, "learning_rate"),
    ({"min_lr": 1.0}, "min_lr"), ({"warmup_iters": -5}, "warmup_iters"), ({"beta2": 1.0}, "beta2"),
    ({"grad_accum": 1.5}, "grad_accum"), ({"dtype": "fp8"}, "dtype"), ({"device": "tpu"}, "device"),
    ({"fused": "yes"}, "fused"), ({"eval_batches": 0}, "eval_batches"), ({"threads": 0}, "threads"),
])
def test_invalid_train_config_names_the_field(kwargs, name):
    with pytest.raises((ValueError, TypeError), match=name):
        TrainConfig(**kwargs)


def test_train_config_round_trip():
    cfg = TrainConfig(max_iters=7, eval_batches=3, fused=False)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_lr_schedule():
    cfg = TrainConfig(max_iters=1000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100)
    assert lr_at(0, cfg) == pytest.approx(1e-3 / 101)  # warmup starts small but not at zero
    warm = [lr_at(s, cfg) for s in range(101)]
    assert all(a < b for a, b in zip(warm, warm[1:]))  # linear rise to the peak
    assert lr_at(100, cfg) == pytest.approx(1e-3)  # the peak
    assert lr_at(550, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # half-way down the cosine
    decay = [lr_at(s, cfg) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # monotone decay
    assert lr_at(1000, cfg) == pytest.approx(1e-4) and lr_at(5000, cfg) == pytest.approx(1e-4)
    short = TrainConfig(max_iters=1000, lr_decay_iters=500, warmup_iters=0, min_lr=1e-4)
    assert lr_at(0, short) == pytest.approx(1e-3) and lr_at(500, short) == pytest.approx(1e-4)


def test_weight_decay_groups():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    opt = configure_optimizer(model, TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert not decayed & plain
    assert decayed | plain == set(names.values())  # every parameter in exactly one group
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)  # tied head counted once
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert not any(n.endswith(".bias") or ".ln_" in n for n in decayed)
    assert "transformer.ln_f.weight" in plain and "transformer.h.1.mlp.c_fc.bias" in plain


# --------------------------------------------------------------------------- training

def test_loss_falls(corpus):
    tok, tr, va = corpus
    model = tiny(tok.vocab_size)
    hist = train(model, tr, va, fast_cfg())
    assert hist.iters == [0, 10, 20, 30]
    assert hist.val_loss[0] == pytest.approx(math.log(tok.vocab_size), abs=0.3)  # near uniform at init
    assert hist.val_loss[-1] < hist.val_loss[1] < hist.val_loss[0]
    assert hist.val_loss[-1] < hist.val_loss[0] - 0.5
    assert hist.train_loss[-1] < hist.train_loss[0] - 0.5
    assert len(hist.steps) == 30 and hist.steps[-1]["iter"] == 30


def test_evaluate_equals_manual_loop(corpus):
    tok, tr, va = corpus
    model = tiny(tok.vocab_size, dropout=0.5).train()
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for x, y in iter_eval_windows(tr, 16, 4):
            logits, _ = model(x)
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                                       reduction="sum").item()
            count += y.numel()
    model.train()
    got = evaluate(model, tr, block_size=16, batch_size=4)
    assert got == pytest.approx(total / count, rel=1e-5)
    assert model.training  # mode restored
    first = evaluate(model, tr, block_size=16, batch_size=4, max_batches=1)
    x, y = next(iter_eval_windows(tr, 16, 4))
    assert first == pytest.approx(model.eval()(x, y)[1].item(), rel=1e-5)


def test_metrics_checkpoint_and_callbacks(corpus, tmp_path):
    from minigpt.checkpoint import load_checkpoint

    tok, tr, va = corpus
    events = []
    hist = train(tiny(tok.vocab_size), tr, va, fast_cfg(max_iters=20, ckpt_interval=10), tokenizer=tok,
                 out_dir=tmp_path, callbacks=[lambda e, info: events.append((e, info["iter"], info["model"]))],
                 meta={"note": "test"})
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines] == [0, 10, 20] == hist.iters
    assert set(lines[0]) == {"iter", "train_loss", "val_loss", "lr", "elapsed_s", "tokens_per_s"}
    assert lines[-1]["tokens_per_s"] > 0 and lines[-1]["val_loss"] == hist.val_loss[-1]
    assert [i for e, i, _ in events if e == "step"] == list(range(1, 21))
    assert [i for e, i, _ in events if e == "eval"] == [0, 10, 20]
    assert all(isinstance(m, GPT) for _, _, m in events)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.meta["step"] == 20 and ckpt.meta["note"] == "test" and ckpt.tokenizer.vocab_size == tok.vocab_size
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["step"] == 20 and state["train_config"]["max_iters"] == 20
    assert (tmp_path / "optimizer.safetensors").is_file()
    assert History.from_jsonl(tmp_path / "metrics.jsonl").val_loss == hist.val_loss


class _Crash(Exception):
    pass


def test_resume_gives_the_same_weights(corpus, tmp_path):
    """20 steps in one go == 20 steps that crash at 13 and resume from the checkpoint at 10."""
    tok, tr, va = corpus
    cfg = fast_cfg(max_iters=20, ckpt_interval=10, eval_interval=5)
    whole = tiny(tok.vocab_size, dropout=0.1)
    h_whole = train(whole, tr, va, cfg, tokenizer=tok, out_dir=tmp_path / "whole")

    def crash_at_13(event, info):
        if event == "step" and info["iter"] == 13:
            raise _Crash

    with pytest.raises(_Crash):
        train(tiny(tok.vocab_size, dropout=0.1), tr, va, cfg, tokenizer=tok, out_dir=tmp_path / "split",
              callbacks=[crash_at_13])
    resumed = tiny(tok.vocab_size, dropout=0.1, seed=99)  # different init: the checkpoint must win
    h_res = train(resumed, tr, va, cfg, tokenizer=tok, out_dir=tmp_path / "split", resume=True)
    assert h_res.steps[0]["iter"] == 11 and len(h_res.steps) == 10
    assert h_res.iters == h_whole.iters == [0, 5, 10, 15, 20]
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert not torch.allclose(whole.transformer.wte.weight, tiny(tok.vocab_size).transformer.wte.weight)
    assert h_res.val_loss[-1] == pytest.approx(h_whole.val_loss[-1], rel=1e-5)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == [0, 5, 10, 15, 20]  # no duplicate 15 after the crash


def test_resume_needs_a_saved_run(corpus, tmp_path):
    tok, tr, va = corpus
    with pytest.raises(FileNotFoundError, match="train_state.json"):
        train(tiny(tok.vocab_size), tr, va, fast_cfg(), out_dir=tmp_path, resume=True)


@pytest.mark.parametrize("setting, silent", [("0", True), ("1", False)])
def test_progress_bar(corpus, capfd, monkeypatch, setting, silent):
    monkeypatch.setenv("MINIGPT_PROGRESS", setting)
    tok, tr, _ = corpus
    train(tiny(tok.vocab_size), tr, None, fast_cfg(max_iters=3, eval_interval=0))
    err = capfd.readouterr().err
    assert (err == "") == silent
    if not silent:
        assert "loss=" in err
